"""Chunk scheduling: which action to execute now, and when to run the next inference.

One scheduler serves the ROS policy node (wall clock) and ``robot-policy eval`` (simulated
clock); both call the same four methods on every control tick::

    sched = ChunkScheduler(SchedulerConfig(mode="async", n_action_steps=8), dt=0.05)
    if sched.should_infer(now):
        req = sched.begin_inference(now)         # prior plan for warm start / RTC guidance
        chunk = engine.predict(obs, prior=req.prior)   # chunk.start_time = now (the obs time)
        sched.add_chunk(chunk, now=clock())      # measures latency, drops what is already past
    action = sched.action_at(now)               # None: nothing valid yet -> hold position

Modes (see docs/inference.md):

* ``sync``: receding horizon. Infer, execute the first ``n_action_steps`` actions, infer
  again. Actions whose time passed during inference are dropped (UMI-style latency matching).
* ``async``: inference runs while the current chunk executes. It starts ``d`` ticks before the
  receding horizon is used up, ``d`` being the latency estimate over a recent window, so the
  new chunk lands on time; the old chunk keeps running if it is late. On arrival the new
  chunk replaces the old one from the current time on; its past actions are dropped.
* ``ensemble``: ACT temporal ensembling, for synchronous use: infer every tick and execute the
  exponentially weighted mean of every stored prediction for the current time.

``rtc``: real-time chunking (Black et al., 2025). ``begin_inference`` returns the plan that
will already be executing while the new chunk is inferred, resampled on the new chunk's time
grid, with soft weights: 1 for the ``d`` actions that will have run before the chunk lands,
decaying to 0 over the rest of the overlap. The engine inpaints the new chunk toward it, so
consecutive chunks join without a jump. The same prior (weights ignored) initialises warm
start (RTI-DP).

Invariant: ``action_at(now)`` never returns an action scheduled before ``now - tolerance*dt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from robot_policy.inference.latency import LatencyConfig, LatencyEstimator
from robot_policy.types import ActionChunk

Mode = Literal["sync", "async", "ensemble"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True)
class SchedulerConfig:
    """Chunk execution policy shared by the policy node and evaluation."""

    mode: Mode = "async"
    """'sync' (receding horizon, wait for inference), 'async' (infer while executing) or 'ensemble' (ACT)."""
    n_action_steps: int = 8
    """Receding horizon: actions executed from each chunk before the next one takes over."""
    tolerance: float = 0.5
    """An action is 'now' if its time is within tolerance*dt of the tick; earlier ones are stale."""
    margin_steps: int = 0
    """Async: start inference this many extra ticks early, on top of the latency estimate."""
    ensemble_decay: float = 0.01
    """Ensemble: weight exp(-decay*k) for the k-th newest prediction (ACT's m; 0 = plain mean)."""
    rtc: bool = False
    """Real-time chunking: return soft-weighted prior plans for inpainting the next chunk."""
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    """How the inference latency is estimated (window percentile, not a lifetime maximum)."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"SchedulerConfig.mode: {self.mode!r} is not one of {list(MODES)}")
        if self.n_action_steps < 1:
            raise ValueError(f"SchedulerConfig.n_action_steps must be >= 1, got {self.n_action_steps}")
        if not 0.0 < self.tolerance <= 0.5:
            raise ValueError(f"SchedulerConfig.tolerance must be in (0, 0.5] ticks, got {self.tolerance}")
        if self.margin_steps < 0:
            raise ValueError(f"SchedulerConfig.margin_steps must be >= 0, got {self.margin_steps}")
        if self.ensemble_decay < 0:
            raise ValueError(f"SchedulerConfig.ensemble_decay must be >= 0, got {self.ensemble_decay}")


@dataclass
class Prior:
    """The plan already scheduled, resampled on the next chunk's time grid."""

    actions: np.ndarray
    """(H, A) raw-unit actions at ``start_time + i*dt``; beyond the plan the last action is repeated."""
    weights: np.ndarray
    """(H,) guidance weights in [0, 1]: 1 = will already have executed, 0 = free."""
    n_known: int
    """How many leading entries come from the plan (the rest is padding)."""
    delay_steps: int
    """Ticks that elapse during inference (latency estimate), i.e. leading actions that are frozen."""
    start_time: float
    dt: float


@dataclass
class InferenceRequest:
    """What ``begin_inference`` hands to the engine."""

    time: float
    """Observation / request time; the new chunk's ``start_time``."""
    prior: Prior | None
    """Previous plan for warm start and RTC; None before the first chunk."""


def rtc_weights(horizon: int, delay_steps: int, n_known: int) -> np.ndarray:
    """Soft inpainting mask of real-time chunking (Black et al., 2025, eq. 5).

    1 for the first ``delay_steps`` entries (they execute before the chunk arrives),
    exponentially decaying over the rest of the overlap ``[delay_steps, n_known)``, 0 after.
    """
    w = np.zeros(horizon, dtype=np.float32)
    d = min(max(delay_steps, 0), n_known)
    w[:d] = 1.0
    i = np.arange(d, n_known)
    if i.size:
        c = (n_known - i) / (n_known - d + 1)
        w[d:n_known] = c * np.expm1(c) / np.expm1(1.0)
    return w


class ChunkScheduler:
    """Turns timed action chunks into one action per control tick. See the module docstring."""

    def __init__(
        self, cfg: SchedulerConfig | None = None, dt: float = 0.1, estimator: LatencyEstimator | None = None
    ):
        cfg = cfg or SchedulerConfig()  # validated when it was built
        if not dt > 0:
            raise ValueError(f"ChunkScheduler: dt (control period, seconds) must be > 0, got {dt}")
        self.cfg = cfg
        self.dt = float(dt)
        # Not `estimator or ...`: an estimator with no measurements yet has len() 0, so is falsy.
        self.latency = estimator if estimator is not None else LatencyEstimator.from_config(cfg.latency)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every chunk (new episode). The latency window is kept: the machine did not change."""
        self._times = np.zeros(0)
        self._actions: np.ndarray | None = None
        self._plan: ActionChunk | None = None  # last full chunk, for priors
        self._ensemble: list[ActionChunk] = []
        self._pending: list[tuple[float, ActionChunk]] = []
        self._in_flight: float | None = None
        self.stats = {"emitted": 0, "dropped": 0, "holds": 0, "chunks": 0}

    @property
    def tol(self) -> float:
        return self.cfg.tolerance * self.dt

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    def remaining(self, now: float) -> int:
        """Queued actions not yet stale at ``now``."""
        return int(np.count_nonzero(self._times >= now - self.tol))

    def queued(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, actions) still to execute from ``now`` on, e.g. to publish as one trajectory.

        Empty in ``ensemble`` mode (each tick's action is a fresh weighted mean).
        """
        if self._actions is None or self.cfg.mode == "ensemble":
            return np.zeros(0), np.zeros((0, 0), np.float32)
        keep = self._times >= now - self.tol
        return self._times[keep].copy(), self._actions[keep].copy()

    # ------------------------------------------------------------ inference
    def should_infer(self, now: float) -> bool:
        """Whether the caller should start an inference at this tick."""
        self._apply_pending(now)
        if self._in_flight is not None or self._pending:
            return False
        if self.cfg.mode == "ensemble":
            return True
        if self.remaining(now) == 0:
            return True
        if self.cfg.mode == "sync":
            return False
        # async: fire so that the chunk lands when the receding horizon is used up.
        lead = self.latency.steps(self.dt) + self.cfg.margin_steps
        fire_at = self._plan.start_time + (self.cfg.n_action_steps - lead) * self.dt
        return now >= fire_at - self.tol

    def begin_inference(self, now: float, horizon: int | None = None) -> InferenceRequest:
        """Mark an inference in flight and return the prior plan on the new chunk's grid."""
        self._in_flight = float(now)
        prior = None
        if self._plan is not None:
            prior = self.prior(now, horizon or len(self._plan))
        return InferenceRequest(time=float(now), prior=prior)

    def cancel_inference(self) -> None:
        """The inference failed or was abandoned; allow a new one."""
        self._in_flight = None

    def prior(self, start_time: float, horizon: int) -> Prior | None:
        """The current plan resampled at ``start_time + i*dt``, i < horizon (None without a plan)."""
        plan = self._plan
        if plan is None:
            return None
        # Fractional index into the plan; linear interpolation handles grids that are not
        # aligned (wall-clock ticks), np.interp clamps past the end = repeat the last action.
        f = (start_time + self.dt * np.arange(horizon) - plan.start_time) / plan.dt
        idx = np.arange(len(plan))
        acts = np.stack([np.interp(f, idx, plan.actions[:, j]) for j in range(plan.actions.shape[1])], axis=1)
        n_known = int(np.count_nonzero((f >= -1e-6) & (f <= len(plan) - 1 + 1e-6)))
        d = self.latency.steps(self.dt)
        w = rtc_weights(horizon, d, n_known) if self.cfg.rtc else np.zeros(horizon, np.float32)
        return Prior(acts.astype(np.float32), w, n_known, d, float(start_time), self.dt)

    def add_chunk(self, chunk: ActionChunk, now: float) -> None:
        """Accept a chunk that is available at ``now``; records latency since ``begin_inference``."""
        self.submit(chunk, ready_at=now)
        self._apply_pending(now)

    def submit(self, chunk: ActionChunk, ready_at: float) -> None:
        """Accept a chunk that becomes usable at ``ready_at`` (simulated clocks emulate latency)."""
        actions = np.asarray(chunk.actions, dtype=np.float32)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"ChunkScheduler: chunk.actions must be (T, A) with T >= 1, got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("ChunkScheduler: chunk contains NaN/inf actions; refusing to schedule it")
        if abs(chunk.dt - self.dt) > 1e-6 * self.dt:
            raise ValueError(
                f"ChunkScheduler: chunk.dt={chunk.dt} differs from the control period dt={self.dt}; "
                "build the scheduler with the policy's control period"
            )
        if self._in_flight is not None:
            self.latency.add(max(0.0, ready_at - self._in_flight))
            self._in_flight = None
        self._pending.append(
            (float(ready_at), ActionChunk(actions, float(chunk.start_time), float(chunk.dt)))
        )

    def _apply_pending(self, now: float) -> None:
        keep = []
        for ready_at, chunk in self._pending:
            if ready_at <= now + 1e-9:
                self._merge(chunk, now)
            else:
                keep.append((ready_at, chunk))
        self._pending = keep

    def _merge(self, chunk: ActionChunk, now: float) -> None:
        self.stats["chunks"] += 1
        self._plan = chunk
        times = chunk.times()
        if self.cfg.mode == "ensemble":
            self._ensemble.append(chunk)
            return
        if self.cfg.mode == "sync":
            n = self.cfg.n_action_steps
            fresh = times >= now - self.tol
            head = np.flatnonzero(fresh[:n])
            if head.size == 0:
                # Latency ate the whole receding horizon: execute the first action still in the
                # future instead of re-planning forever without ever moving.
                head = np.flatnonzero(fresh)[:1]
            self.stats["dropped"] += int(min(n, len(times)) - head.size) if head.size else 0
            self._times, self._actions = times[head], chunk.actions[head]
            return
        # async: the new chunk supersedes the old one from its first action on.
        keep = self._times < times[0] - self.tol
        old = self._actions[keep] if self._actions is not None else chunk.actions[:0]
        self._times = np.concatenate([self._times[keep], times])
        self._actions = np.concatenate([old, chunk.actions])

    # ------------------------------------------------------------ execution
    def action_at(self, now: float) -> np.ndarray | None:
        """The action for the tick at ``now``; drops stale ones; None = nothing due (hold)."""
        self._apply_pending(now)
        if self.cfg.mode == "ensemble":
            return self._ensemble_action(now)
        stale = self._times < now - self.tol
        n_stale = int(np.count_nonzero(stale))
        if n_stale:
            self.stats["dropped"] += n_stale
            self._times, self._actions = self._times[~stale], self._actions[~stale]
        if self._times.size == 0 or self._times[0] > now + self.tol:
            self.stats["holds"] += 1
            return None
        action = self._actions[0].copy()
        self._times, self._actions = self._times[1:], self._actions[1:]
        self.stats["emitted"] += 1
        return action

    def _ensemble_action(self, now: float) -> np.ndarray | None:
        preds = []
        live = []
        for chunk in self._ensemble:
            f = (now - chunk.start_time) / chunk.dt
            i = int(round(f))
            if i >= len(chunk):
                continue  # fully in the past: forget it
            live.append(chunk)
            if i >= 0 and abs(f - i) * chunk.dt <= self.tol:
                preds.append(chunk.actions[i])
        self._ensemble = live
        if not preds:
            self.stats["holds"] += 1
            return None
        # ACT: oldest prediction gets weight 1, the k-th newer exp(-m k).
        w = np.exp(-self.cfg.ensemble_decay * np.arange(len(preds)))
        self.stats["emitted"] += 1
        return (np.sum(w[:, None] * np.stack(preds), axis=0) / w.sum()).astype(np.float32)

    def delay_steps(self) -> int:
        """Current latency estimate in control ticks."""
        return self.latency.steps(self.dt)
