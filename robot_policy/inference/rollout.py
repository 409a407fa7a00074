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
