"""Scheduler-driven episodes on a simulated clock: how ``robot-policy eval`` runs the engine.

The simulated clock is ``step / control_hz``. An inference that takes ``L`` seconds of
(measured or configured) compute time delivers its chunk ``L`` later on that clock while the
simulated robot keeps executing the previous chunk, exactly what the policy node does on the
wall clock: asynchronous execution, latency compensation and warm start are evaluated in
simulation with the same ``ChunkScheduler`` code that runs on the robot.

* ``sync`` and ``ensemble`` modes pause the simulation during inference (the robot waits),
  so they reproduce the classic receding-horizon / ACT evaluations.
* ``async`` mode lets simulated time run during inference. ``latency="measured"`` uses the
  real compute time of each call (honest on this machine), a number fixes it (emulating a
  GPU on a CPU-only machine, or a slower robot computer).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robot_policy.inference.scheduler import ChunkScheduler, SchedulerConfig


@dataclass
class RolloutConfig:
    """How evaluation drives the engine."""

    scheduler: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(mode="sync"))
    """Chunk execution mode (sync = receding horizon, async, ensemble), RTC."""
    latency: str = "measured"
    """Async only: 'measured' (real compute time of each call) or a fixed number of seconds, e.g. '0.08'."""
    use_prior: bool = True
    """Hand the scheduled plan to the engine (used by warm start and RTC; ignored otherwise)."""


def _latency_seconds(spec: str, measured: float) -> float:
    if spec == "measured":
        return measured
    try:
        value = float(spec)
    except ValueError:
        raise ValueError(
            f"RolloutConfig.latency: expected 'measured' or seconds (e.g. '0.08'), got {spec!r}"
        ) from None
    if value < 0:
        raise ValueError(f"RolloutConfig.latency must be >= 0 seconds, got {value}")
    return value


def scheduled_episode_fn(engine, cfg: RolloutConfig) -> Callable:
    """An episode function with the signature of ``evaluation.rollout.run_episode``.

    It ignores the ``predict`` argument and calls ``engine.predict(obs, prior=...)`` itself,
    because warm start and real-time chunking need the scheduler's prior plan.
    """
    _latency_seconds(cfg.latency, 0.0)  # validate before the first episode

    def run(predict, env, seed, obs_keys, n_obs_steps, n_action_steps, max_steps=None, video=None) -> dict:
        del predict  # the engine is called directly with the scheduler's prior
        scfg = SchedulerConfig(**{**cfg.scheduler.__dict__, "n_action_steps": n_action_steps})
        dt = 1.0 / float(env.unwrapped.control_hz)
        sched = ChunkScheduler(scfg, dt=dt)
        engine.reset()
        obs, _ = env.reset(seed=seed)
        history: deque = deque([obs] * n_obs_steps, maxlen=n_obs_steps)
        max_steps = max_steps or env.unwrapped.max_episode_steps
        chunk_len = engine.horizon - n_obs_steps + 1
        latencies, steps, success, last = [], 0, False, None
        while steps < max_steps:
            now = steps * dt
            if sched.should_infer(now):
                req = sched.begin_inference(now, horizon=chunk_len)
                hist = {k: np.stack([o[k] for o in history]) for k in obs_keys}
                t0 = time.perf_counter()
                chunk = engine.predict(hist, prior=req.prior if cfg.use_prior else None, start_time=now)
                measured = time.perf_counter() - t0
                latencies.append(measured * 1000.0)
                # The first chunk is awaited (a robot starts once its policy answers); later ones
                # land after their latency in async mode; sync/ensemble pause the simulation.
                paused = scfg.mode != "async" or last is None
                sched.submit(chunk, ready_at=now if paused else now + _latency_seconds(cfg.latency, measured))
            action = sched.action_at(now)
            if action is None:
                if last is None:
                    raise RuntimeError("scheduler produced no action after the first chunk; this is a bug")
                action = last  # late chunk: hold the last command
            last = action
            obs, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
            history.append(obs)
            steps += 1
            if video is not None:
                video.append(env.unwrapped.render_frame())
            if info.get("success"):
                success = True
            if success or terminated or truncated:
                break
        return {
            "seed": int(seed),
            "success": bool(success),
            "steps": steps,
            "latency_ms": latencies,
            "dropped_actions": sched.stats["dropped"],
            "held_ticks": sched.stats["holds"],
            "inferences": len(latencies),
            "chunks_applied": sched.stats["chunks"],
        }

    return run


# ------------------------------------------------------------------ CLI glue for robot-policy eval
def add_engine_args(p) -> None:
    """Options of ``robot-policy eval`` that choose how the engine and scheduler run."""
    g = p.add_argument_group("inference engine (docs/inference.md)")
    g.add_argument(
        "--no-engine", action="store_true", help="call policy.predict directly (plain receding horizon)"
    )
    g.add_argument(
        "--mode",
        choices=["sync", "async", "ensemble"],
        default="sync",
        help="chunk execution: sync = receding horizon (default), async = infer while executing, "
        "ensemble = ACT temporal ensembling",
    )
    g.add_argument(
        "--latency",
        default="measured",
        help="async: simulated inference latency, 'measured' (real compute time) or seconds",
    )
    g.add_argument("--warm-start", type=int, default=0, metavar="K", help="RTI-DP: run only the last K steps")
    g.add_argument(
        "--warm-schedule", type=int, default=0, metavar="N", help="warm start: N-step schedule (0: --steps)"
    )
    g.add_argument(
        "--rtc", action="store_true", help="real-time chunking: pin the prefix to the running plan"
    )
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="engine precision")


def engine_rollout(policy, args) -> tuple:
    """(predict, episode_fn, info) for ``evaluation.rollout.evaluate`` from eval's CLI args."""
    if args.no_engine:
        return None, None, {"engine": False}
    from robot_policy.inference.engine import EngineConfig, InferenceEngine
    from robot_policy.inference.warmstart import WarmStartConfig

    ws = WarmStartConfig(
        enabled=args.warm_start > 0, schedule_steps=args.warm_schedule, run_steps=max(1, args.warm_start)
    )
    cfg = EngineConfig(
        device=args.device,
        num_steps=args.steps or 0,
        sampler=args.sampler or "",
        precision=args.precision,
        warm_start=ws,
    )
    engine = InferenceEngine(policy, cfg)
    rollout = RolloutConfig(scheduler=SchedulerConfig(mode=args.mode, rtc=args.rtc), latency=args.latency)
    info = {
        "engine": True,
        "mode": args.mode,
        "latency": args.latency,
        "warm_start": {"run_steps": args.warm_start, "schedule_steps": args.warm_schedule}
        if ws.enabled
        else None,
        "rtc": args.rtc,
        "engine_report": engine.report,
    }
    return (lambda hist: engine.predict(hist)), scheduled_episode_fn(engine, rollout), info
