"""The policy server's logic without ROS: observations by capture stamp, asynchronous inference,
latency-compensated chunks. ``policy_node`` feeds it messages and publishes what it returns.

Per control tick (``tick(now)``):
1. a chunk finished by the inference thread is handed to the chunk scheduler
   (``robot_policy.inference.ChunkScheduler``), which drops actions whose time already passed;
   the remaining plan is returned for publishing as a JointTrajectory;
2. the scheduler advances to ``now`` (mirrors what the robot executes);
3. if the scheduler asks for a new chunk, the observation history is assembled from the latest
   samples *by capture stamp*; inputs older than ``max_obs_age`` are refused and reported, and
   otherwise inference starts in a worker thread, so execution never waits on it. The plan
   already scheduled goes with it as the prior (``predictor.predict(obs, prior=...)``), which
   the engine uses for warm start (RTI-DP) and real-time chunking, as ``robot-policy eval`` does.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from robot_policy.inference.trace import ChunkTrace, StageBudget, TraceLog
from robot_policy.types import ActionChunk

if TYPE_CHECKING:
    from robot_policy.inference.scheduler import SchedulerConfig
    from robot_policy.policies.base import Predictor


class StaleObservation(RuntimeError):
    """An input stream's newest sample is older than the allowed age (or never arrived)."""


class ObservationBuffer:
    """Recent timestamped samples per observation key."""

    def __init__(self, keys: list[str], depth: int = 64, clock=time.monotonic):
        self.keys = list(keys)
        self.clock = clock
        """Stamps each sample's arrival (the policy node's graph clock: the chunk trace's ``arrival``)."""
        self._buf: dict[str, deque] = {k: deque(maxlen=depth) for k in keys}
        self._arrivals: dict[str, deque] = {k: deque(maxlen=depth) for k in keys}
        self._lock = threading.Lock()
        self.last_arrival = float("nan")
        """When the newest sample used by the last :meth:`history` arrived (all keys)."""

    def add(self, key: str, stamp: float, value: np.ndarray, arrival: float | None = None) -> None:
        if key not in self._buf:
            return
        arrival = self.clock() if arrival is None else arrival
        with self._lock:
            buf = self._buf[key]
            if buf and stamp < buf[-1][0]:
                # Out-of-order arrival: insert by capture stamp, not arrival order.
                items = sorted([*buf, (stamp, value, arrival)], key=lambda x: x[0])
                buf.clear()
                buf.extend(items)
            else:
                buf.append((stamp, value, arrival))
            self._arrivals[key].append(arrival)

    def clear(self) -> None:
        with self._lock:
            for d in (*self._buf.values(), *self._arrivals.values()):
                d.clear()

    def latest_stamp(self, key: str) -> float | None:
        buf = self._buf[key]
        return buf[-1][0] if buf else None

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since the capture of each key's newest sample (inf when none arrived)."""
        return {k: (now - b[-1][0]) if b else float("inf") for k, b in self._buf.items()}

    def rates(self) -> dict[str, float]:
        """Arrival rate (Hz) per key over the buffered window."""
        out = {}
        for k, a in self._arrivals.items():
            out[k] = (len(a) - 1) / (a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else 0.0
        return out

    def settled(self, now: float, dt: float) -> bool:
        """Whether to infer now: the newest capture is recent and has arrived on every stream
        (sensors of one instant arrive one after another). Waiting for the next capture when the
        current one is old trades up to half a period of schedule delay for a fresher input."""
        latest = [b[-1][0] for b in self._buf.values() if b]
        if len(latest) < len(self._buf):
            return True  # a stream never delivered: history() reports it
        age = now - max(latest)
        if 0.5 * dt < age < 1.5 * dt:
            return False  # the next capture is due within half a period: infer from it instead
        return max(latest) - min(latest) < 0.5 * dt or age > 0.5 * dt

    def history(self, n: int, dt: float, now: float, max_age: float) -> tuple[dict[str, np.ndarray], float]:
        """Observation history ``{key: (n, *shape)}`` on a grid ``ref - (n-1-i)*dt`` and ``ref``.

        ``ref`` is the newest instant at which every key has a sample; each step takes the latest
        sample captured at or before its grid time (the first sample when the history is shorter,
        as training pads episode starts). Raises :class:`StaleObservation` naming the stale keys.
        """
        ages = self.ages(now)
        stale = {k: a for k, a in ages.items() if a > max_age}
        if stale:
            desc = ", ".join(
                f"{k} ({'never received' if a == float('inf') else f'{a * 1e3:.0f} ms old'})"
                for k, a in stale.items()
            )
            raise StaleObservation(f"stale inputs (max age {max_age * 1e3:.0f} ms): {desc}")
        with self._lock:
            ref = min(b[-1][0] for b in self._buf.values())
            out = {}
            arrived = []
            for k, b in self._buf.items():
                stamps = np.array([s[0] for s in b])
                grid = ref - dt * np.arange(n - 1, -1, -1) + 1e-6
                idx = np.clip(np.searchsorted(stamps, grid, side="right") - 1, 0, len(b) - 1)
                out[k] = np.stack([np.asarray(b[i][1]) for i in idx])
                arrived.append(b[idx[-1]][2])
            self.last_arrival = float(max(arrived))
        return out, float(ref)


@dataclass
class RunnerStats:
    """What the policy node reports on /diagnostics."""

    inferences: int = 0
    stale_skips: int = 0
    last_stale: str = ""
    errors: int = 0
    last_error: str = ""
    chunks_published: int = 0
    dropped_late_actions: int = 0
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    obs_age_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    obs_to_cmd_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    """Capture of the newest input -> chunk ready to publish (camera/joint stamp to command)."""
    stage_ms: dict = field(default_factory=dict)
    """Parts of ``inference_ms`` a predictor reports (``last_stages``), e.g. a remote policy's
    ``network``, ``server_queue``, ``server_infer``: name -> recent milliseconds."""


class PolicyRunner:
    """Async chunked inference over an :class:`ObservationBuffer`. Thread-safe ``tick``."""

    def __init__(
        self,
        policy: Predictor,
        num_steps: int | None = None,
        max_obs_age: float = 0.5,
        sched_cfg: SchedulerConfig | None = None,
        clock=None,
        on_ready=None,
        use_prior: bool = True,
        budget: StageBudget | None = None,
        trace_file: str | None = None,
    ):
        from robot_policy.inference import ChunkScheduler, SchedulerConfig

        self.policy = policy
        cfg = policy.config
        self.keys = [*cfg.obs_keys, *cfg.image_keys]
        self.n_obs = int(cfg.n_obs_steps)
        self.dt = 1.0 / float(cfg.fps)
        self.num_steps = num_steps or None
        self.chunk_len = int(cfg.horizon) - self.n_obs + 1
        """Actions per chunk (the policy's horizon from the current step on): the prior's length."""
        self.use_prior = bool(use_prior)
        """Hand the scheduled plan to ``predict(prior=...)`` (the engine's warm start and RTC use it,
        a plain policy ignores it)."""
        self.max_obs_age = float(max_obs_age)
        self.clock = clock or time.time
        self.buffer = ObservationBuffer(self.keys, clock=self.clock)
        sched_cfg = sched_cfg or SchedulerConfig(mode="async", n_action_steps=int(cfg.n_action_steps))
        self.sched = ChunkScheduler(sched_cfg, dt=self.dt)
        self.traces = TraceLog(self.dt, budget or StageBudget(), path=trace_file)
        """Stage timestamps of the published chunks (the caller adds ``publish`` and the robot's points)."""
        self.last_trace: ChunkTrace | None = None
        """The trace of the plan the last :meth:`tick` returned."""
        self.on_ready = on_ready
        """Called from the inference thread when a chunk is ready: wake the loop to publish it now
        instead of at the next control tick (up to one period of added latency)."""
        self.stats = RunnerStats()
        self._lock = threading.Lock()
        self._result: tuple[ActionChunk, float, float, ChunkTrace] | None = None
        self._worker: threading.Thread | None = None
        self._epoch = 0  # bumped by reset(): results of older inferences are ignored
        self._reset_at: float | None = None

    def reset(self) -> None:
        """New episode: forget observations, plans and any inference in flight."""
        with self._lock:
            self._epoch += 1
            self._reset_at = self.clock()
            self.buffer.clear()
            self.sched.reset()
            self._result = None
            self.policy.reset()

    def drop_plan(self) -> None:
        """The plan was dropped downstream (a human took over, or handed back): forget it and any
        inference in flight, keep the observations, so the next chunk is planned from the
        current state at once instead of warm-started from a plan the arm no longer follows."""
        with self._lock:
            self._epoch += 1
            self.sched.reset()
            self._result = None

    def _prior(self, now: float, t_obs: float):
        """The scheduled plan on the new chunk's grid (``None``: no plan yet, or priors unused).

        Unlike eval, the chunk starts one period after the capture, not at ``now``, so the
        scheduler's prior is taken at that start, and the RTC prefix counts the actions that
        run before the chunk can land (``now`` + latency estimate) from that start on, with
        the scheduler's tolerance: pinning one action too many keeps continuity, one too few
        makes the arm jump.
        """
        if not self.use_prior:
            return None
        start = t_obs + self.dt
        prior = self.sched.prior(start, self.chunk_len)
        if prior is None or not self.sched.cfg.rtc:
            return prior
        from robot_policy.inference.scheduler import rtc_weights

        lands = now + self.sched.latency.estimate()
        d = max(0, math.ceil((lands - start) / self.dt + self.sched.cfg.tolerance - 1e-9))
        return replace(prior, weights=rtc_weights(self.chunk_len, d, prior.n_known), delay_steps=d)

    def _infer(self, obs: dict, t_obs: float, trace: ChunkTrace, epoch: int, prior=None) -> None:
        try:
            trace.infer_start = self.clock()
            t0 = time.perf_counter()
            # The first action answers the newest observation: it executes one control period
            # after its capture, as in the recorded demonstrations.
            chunk = self.policy.predict(
                obs, prior=prior, start_time=t_obs + self.dt, num_steps=self.num_steps
            )
            elapsed = time.perf_counter() - t0
            trace.infer_end = self.clock()
            stages = getattr(self.policy, "last_stages", None) or {}
            with self._lock:
                if epoch == self._epoch:
                    self._result = (chunk, t_obs, elapsed, trace)
                    for name, ms in stages.items():
                        self.stats.stage_ms.setdefault(name, deque(maxlen=2000)).append(float(ms))
                else:
                    self.sched.cancel_inference()
            if self.on_ready is not None:
                self.on_ready()
        except Exception as e:  # report on /diagnostics, keep serving
            with self._lock:
                self.stats.errors += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"
                self.sched.cancel_inference()

    def tick(self, now: float | None = None) -> ActionChunk | None:
        """One control tick. Returns the plan to publish when a new chunk landed: what remains to
        execute from ``now`` on, ``obs_stamp`` = capture time of the observation it answers."""
        now = self.clock() if now is None else now
        plan = None
        self.last_trace = None
        with self._lock:
            if self._result is not None:
                chunk, t_obs, elapsed, trace = self._result
                self._result = None
                self.stats.inference_ms.append(elapsed * 1e3)
                self.stats.obs_to_cmd_ms.append((now - t_obs) * 1e3)
                before = self.sched.stats["dropped"]
                self.sched.add_chunk(chunk, now=now)
                times, actions = self.sched.queued(now)
                self.stats.dropped_late_actions += int(np.sum(chunk.times() < now - self.sched.tol))
                self.stats.dropped_late_actions += self.sched.stats["dropped"] - before
                if len(times):
                    # The queue is on the control grid (chunks start one period after a capture,
                    # captures come at the control rate), so its first time and dt describe it.
                    plan = ActionChunk(actions, start_time=float(times[0]), dt=self.dt, obs_stamp=t_obs)
                    self.stats.chunks_published += 1
                    trace.ready = self.clock()  # not `now`: the chunk may have landed after it was read
                    self.last_trace = trace
            self.sched.action_at(now)  # advance with the robot: drops what has been executed
            busy = self._worker is not None and self._worker.is_alive()
            if busy or not self.sched.should_infer(now) or not self.buffer.settled(now, self.dt):
                return plan
            try:
                obs, t_obs = self.buffer.history(self.n_obs, self.dt, now, self.max_obs_age)
            except StaleObservation as e:
                # Right after a reset the history is still filling: waiting, not stale.
                if self._reset_at is None or now - self._reset_at > self.max_obs_age:
                    self.stats.stale_skips += 1
                    self.stats.last_stale = str(e)
                return plan
            self.stats.obs_age_ms.append((now - t_obs) * 1e3)
            self.sched.begin_inference(now, horizon=self.chunk_len)
            prior = self._prior(now, t_obs)
            self.stats.inferences += 1
            # The clock, not `now`: a sample may have arrived between reading `now` and here.
            trace = ChunkTrace(capture=t_obs, arrival=self.buffer.last_arrival, chosen=self.clock())
            self._worker = threading.Thread(
                target=self._infer, args=(obs, t_obs, trace, self._epoch, prior), daemon=True
            )
            self._worker.start()
        return plan

    def diagnostics(self, now: float | None = None) -> dict[str, str]:
        """Key/values for /diagnostics: inference latency, observation age, input rates."""
        now = self.clock() if now is None else now
        s = self.stats

        def pct(d, q):
            return f"{np.percentile(list(d), q):.1f}" if d else "nan"

        out = {
            "inference_ms_p50": pct(s.inference_ms, 50),
            "inference_ms_p90": pct(s.inference_ms, 90),
            "latency_estimate_ms": f"{self.sched.latency.estimate() * 1e3:.1f}",
            "inference_ms_p99": pct(s.inference_ms, 99),
            "obs_age_ms_p50": pct(s.obs_age_ms, 50),
            "obs_to_cmd_ms_p50": pct(s.obs_to_cmd_ms, 50),
            "obs_to_cmd_ms_p90": pct(s.obs_to_cmd_ms, 90),
            "obs_to_cmd_ms_p99": pct(s.obs_to_cmd_ms, 99),
            "inferences": str(s.inferences),
            "chunks_published": str(s.chunks_published),
            "dropped_late_actions": str(s.dropped_late_actions),
            "stale_skips": str(s.stale_skips),
            "last_stale": s.last_stale,
            "errors": str(s.errors),
            "last_error": s.last_error,
        }
        for name, d in list(s.stage_ms.items()):  # e.g. network_ms_p50 of a remote policy
            for q in (50, 90, 99):
                out[f"{name}_ms_p{q}"] = pct(d, q)
        extra = getattr(self.policy, "diagnostics", None)  # e.g. a remote policy's connection state
        if callable(extra):
            out.update(extra())
        out.update(self.traces.diagnostics())
        for k, a in self.buffer.ages(now).items():
            out[f"age_ms/{k}"] = "inf" if a == float("inf") else f"{a * 1e3:.0f}"
        for k, r in self.buffer.rates().items():
            out[f"rate_hz/{k}"] = f"{r:.1f}"
        return out
