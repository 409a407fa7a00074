"""Closed-loop evaluation in simulation: the one episode loop and success statistics.

``run_episode`` runs one episode on a simulated clock (``step / control_hz``) and executes
chunks with the ``ChunkScheduler`` that the policy node runs on the wall clock, so what is
evaluated is what runs on the robot. Its default, sync mode, is receding horizon: infer,
execute ``n_action_steps`` actions, infer again. ``predict`` is any ``Predictor``'s
``predict`` (a policy or an inference engine); the loop hands it the scheduled plan as
``prior`` (warm start, real-time chunking) and a plain policy ignores it.

* ``sync`` and ``ensemble`` pause the simulation during inference (the robot waits), so they
  reproduce the classic receding-horizon / ACT evaluations.
* ``async`` lets simulated time run during inference: ``ServingConfig.simulated_latency`` is
  the real compute time of each call (``measured``) or fixed seconds (e.g. emulating a GPU on a
  CPU-only machine).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from robot_policy.conventions import camera_of
from robot_policy.evaluation.stats import wilson_interval
from robot_policy.inference.scheduler import ChunkScheduler, SchedulerConfig
from robot_policy.inference.serving import ServingConfig
from robot_policy.types import ActionChunk
from robot_policy.video import write_video_or_gif

if TYPE_CHECKING:
    from robot_policy.policies.base import Predictor

log = logging.getLogger(__name__)

RECEDING_HORIZON = ServingConfig(scheduler=SchedulerConfig(mode="sync"))
"""Classic evaluation: infer, execute ``n_action_steps`` actions, infer again; the simulation waits."""


def policy_cameras(policy) -> dict[str, tuple[int, int]]:
    """Cameras the env must render for the policy's image keys (``<cam>_rgb`` -> (H, W))."""
    cams = {}
    for k in policy.config.image_keys:
        cam = camera_of(k)  # ValueError for a key not named <camera>_rgb
        h, w = policy.config.obs_shapes[k][:2]
        cams[cam] = (int(h), int(w))
    return cams


def run_episode(
    predict: Callable[..., ActionChunk],
    env,
    seed: int,
    obs_keys: list[str],
    n_obs_steps: int,
    n_action_steps: int,
    serving: ServingConfig = RECEDING_HORIZON,
    max_steps: int | None = None,
    video: list | None = None,
    video_every: int = 1,
    video_size: tuple[int, int] = (240, 320),
) -> dict:
    """One episode, chunks from ``predict(obs_history, prior=, start_time=)`` run by a scheduler.

    Stops at the first success or when the env terminates/truncates. ``video`` collects a frame
    (``video_size`` = (H, W)) every ``video_every`` steps, and the last one.
    """
    dt = 1.0 / float(env.unwrapped.control_hz)
    sched = ChunkScheduler(serving.scheduler_for(n_action_steps), dt=dt)
    obs, _ = env.reset(seed=seed)
    history: deque = deque([obs] * n_obs_steps, maxlen=n_obs_steps)
    max_steps = max_steps or env.unwrapped.max_episode_steps
    latencies, steps, success, last = [], 0, False, None
    while steps < max_steps:
        now = steps * dt
        if sched.should_infer(now):
            req = sched.begin_inference(now)
            hist = {k: np.stack([o[k] for o in history]) for k in obs_keys}
            t0 = time.perf_counter()
            chunk = predict(hist, prior=req.prior if serving.use_prior else None, start_time=now)
            measured = time.perf_counter() - t0
            latencies.append(measured * 1000.0)
            # The simulation steps at control_hz: a chunk runs one action per step from now on,
            # whatever rate the policy was trained at (evaluate warns when they differ).
            chunk = ActionChunk(chunk.actions, start_time=now, dt=dt)
            # The first chunk is awaited (a robot starts once its policy answers); later ones
            # land after their latency in async mode; sync/ensemble pause the simulation.
            paused = sched.cfg.mode != "async" or last is None
            sched.submit(chunk, ready_at=now if paused else now + serving.latency_seconds(measured))
        action = sched.action_at(now)
        if action is None:
            if last is None:
                raise RuntimeError("scheduler produced no action after the first chunk; this is a bug")
            action = last  # late chunk: hold the last command
        last = action
        obs, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
        history.append(obs)
        steps += 1
        if info.get("success"):
            success = True
        done = success or terminated or truncated or steps >= max_steps
        if video is not None and (steps % video_every == 0 or done):
            video.append(env.unwrapped.render_frame(height=video_size[0], width=video_size[1]))
        if done:
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


def evaluate(
    policy,
    task: str,
    episodes: int,
    randomization=None,
    num_steps: int | None = None,
    sampler: str | None = None,
    seed: int = 100_000,
    video_dir: str | Path | None = None,
    max_video_episodes: int = 5,
    progress: bool = True,
    predictor: Predictor | None = None,
    serving: ServingConfig = RECEDING_HORIZON,
) -> dict:
    """Run ``episodes`` seeded episodes (seeds ``seed, seed+1, ...``) and summarize them.

    ``predictor`` serves the actions (default: ``policy`` itself, with ``num_steps`` and
    ``sampler``; e.g. an ``InferenceEngine`` wrapping it); ``serving`` says how chunks execute.
    """
    import torch

    from robot_policy.sim import make_env

    cfg = policy.config
    env = make_env(task, cameras=policy_cameras(policy) or None, randomization=randomization)
    if abs(cfg.fps - env.unwrapped.control_hz) > 1e-6 * cfg.fps:
        log.warning(
            "PolicyConfig.fps=%g but task %r steps at control_hz=%g: each action runs for one step",
            cfg.fps,
            task,
            env.unwrapped.control_hz,
        )
    if predictor is None:
        predictor = policy
        predict = functools.partial(policy.predict, num_steps=num_steps or None, sampler=sampler or None)
    else:
        predict = predictor.predict
    keys = [*cfg.obs_keys, *cfg.image_keys]
    results, lat = [], []
    it = range(episodes)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(it, desc=f"eval {task}", unit="ep", dynamic_ncols=True)
        it = bar
    if video_dir:
        Path(video_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in it:
        frames = [] if video_dir and i < max_video_episodes else None
        predictor.reset()
        # Common random numbers: the sampler's noise restarts from the episode's seed, so two
        # policies (or two runs of one) evaluated on the same seeds differ only by the policies.
        torch.manual_seed(seed + i)
        reseed = getattr(predictor, "reseed", None)
        if reseed is not None:
            reseed(seed + i)
        r = run_episode(
            predict, env, seed + i, keys, cfg.n_obs_steps, cfg.n_action_steps, serving, video=frames
        )
        if frames:
            r["video"] = str(
                write_video_or_gif(
                    frames, Path(video_dir) / f"episode_{i:03d}_{'ok' if r['success'] else 'fail'}", cfg.fps
                )
            )
        lat.extend(r.pop("latency_ms"))
        results.append(r)
        if bar is not None:
            bar.set_postfix(success=f"{np.mean([x['success'] for x in results]):.2f}")
    env.close()
    k = sum(r["success"] for r in results)
    lat_arr = np.asarray(lat) if lat else np.zeros(1)
    return {
        "task": task,
        "family": cfg.family,
        "num_steps": int(num_steps or policy.default_steps()),
        "sampler": sampler or _default_sampler(policy),
        "episodes": len(results),
        "successes": int(k),
        "success_rate": k / max(1, len(results)),
        "ci95": list(wilson_interval(k, len(results))),
        "latency_ms": {
            q: float(np.percentile(lat_arr, p)) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))
        },
        "mean_episode_steps": float(np.mean([r["steps"] for r in results])) if results else 0.0,
        "wall_time_s": time.perf_counter() - t0,
        "per_episode": results,
    }


def _default_sampler(policy) -> str:
    cfg = policy.config
    return {"diffusion": cfg.diffusion.sampler, "flow": cfg.flow.integrator}.get(cfg.family, "consistency")
