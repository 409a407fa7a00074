"""Closed-loop evaluation in simulation: receding-horizon rollouts and success statistics.

One function runs one episode (``run_episode``); the policy is called through a single
``predict(obs_history) -> ActionChunk`` callable so an inference engine can replace
``policy.predict`` without touching the loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from robot_policy.evaluation.stats import wilson_interval
from robot_policy.video import write_video_or_gif


def policy_cameras(policy) -> dict[str, tuple[int, int]]:
    """Cameras the env must render for the policy's image keys (``<cam>_rgb`` -> (H, W))."""
    cams = {}
    for k in policy.config.image_keys:
        if not k.endswith("_rgb"):
            raise ValueError(f"image key '{k}' does not follow the '<camera>_rgb' naming of the sim envs")
        h, w = policy.config.obs_shapes[k][:2]
        cams[k[: -len("_rgb")]] = (int(h), int(w))
    return cams


def run_episode(
    predict: Callable[[dict], object],
    env,
    seed: int,
    obs_keys: list[str],
    n_obs_steps: int,
    n_action_steps: int,
    max_steps: int | None = None,
    video: list | None = None,
) -> dict:
    """One receding-horizon episode: predict a chunk, execute ``n_action_steps`` of it, repeat.

    Stops at the first success or when the env terminates/truncates. ``video`` collects frames.
    """
    obs, _ = env.reset(seed=seed)
    history: deque = deque([obs] * n_obs_steps, maxlen=n_obs_steps)
    max_steps = max_steps or env.unwrapped.max_episode_steps
    latencies, steps, success = [], 0, False
    done = False
    while not done and steps < max_steps:
        hist = {k: np.stack([o[k] for o in history]) for k in obs_keys}
        t0 = time.perf_counter()
        chunk = predict(hist)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        for action in chunk.actions[:n_action_steps]:
            obs, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
            history.append(obs)
            steps += 1
            if video is not None:
                video.append(env.unwrapped.render_frame())
            if info.get("success"):
                success = True
            if success or terminated or truncated or steps >= max_steps:
                done = True
                break
    return {"seed": int(seed), "success": bool(success), "steps": steps, "latency_ms": latencies}


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
    predict: Callable[[dict], object] | None = None,
    episode_fn: Callable[..., dict] | None = None,
) -> dict:
    """Run ``episodes`` seeded episodes (seeds ``seed, seed+1, ...``) and summarize them."""
    from robot_policy.sim import make_env

    cfg = policy.config
    policy.reset()
    env = make_env(task, cameras=policy_cameras(policy) or None, randomization=randomization)
    predict = predict or (lambda hist: policy.predict(hist, num_steps=num_steps, sampler=sampler))
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
        policy.reset()
        # [inference engine, issue 6] episode_fn: a scheduler-driven episode with run_episode's
        # signature (robot_policy.inference.rollout.scheduled_episode_fn); default unchanged.
        r = (episode_fn or run_episode)(
            predict, env, seed + i, keys, cfg.n_obs_steps, cfg.n_action_steps, video=frames
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
