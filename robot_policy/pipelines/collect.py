"""Demonstration collection with the scripted experts, and replay of recorded episodes.

``collect`` writes every episode through the episode store the moment it ends, so an
interrupted run keeps every finished episode. ``replay`` re-runs an episode's recorded actions
from its recorded seed and randomization draw and checks that the outcome reproduces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_policy.evaluation.stats import wilson_interval
from robot_policy.video import write_video

# Default of ``stop_after_success``: steps recorded after the first success so policies also
# learn to hold the goal state instead of ending on the frame the task first counts as solved.
SETTLE_STEPS = 10
LOWDIM_UNITS = {"joint_pos": "rad", "joint_vel": "rad/s", "gripper": "m", "ee_pos": "m"}


def parse_cameras(spec: str | None, task: str | None = None) -> dict[str, tuple[int, int]]:
    """``"agentview:84x84,wrist:64x64"`` -> ``{"agentview": (84, 84), "wrist": (64, 64)}`` (H x W).

    ``"default"`` means the default cameras of ``task``.
    """
    out: dict[str, tuple[int, int]] = {}
    if not spec:
        return out
    if spec.strip() == "default":
        if task is None:
            raise ValueError("--cameras default needs a task")
        from robot_policy.sim import task_class

        return dict(task_class(task).default_cameras)
    for item in spec.split(","):
        try:
            name, size = item.strip().split(":")
            h, w = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ValueError(f"bad camera spec {item!r}: write NAME:HxW, e.g. agentview:84x84") from None
        if h <= 0 or w <= 0:
            raise ValueError(f"bad camera spec {item!r}: height and width must be positive")
        out[name] = (h, w)
    return out


def dataset_schema(env) -> dict:
    from robot_policy.data import KeySpec

    u = env.unwrapped
    schema = {}
    for key, space in u.observation_space.spaces.items():
        names = list(u.joint_names) if key in ("joint_pos", "joint_vel") else None
        schema[key] = KeySpec(
            dtype=space.dtype.name, shape=space.shape, names=names, units=LOWDIM_UNITS.get(key)
        )
    schema["action"] = KeySpec(dtype="float32", shape=u.action_space.shape, names=[*u.joint_names, "gripper"])
    return schema


def run_episode(env, expert, seed: int, stop_after_success: int | None = SETTLE_STEPS):
    """Roll the expert out from ``seed``. Returns (frames dict of stacked arrays, success, info).

    The episode ends ``stop_after_success`` control steps after the step at which the task first
    reports success (0: on that step), so a successful episode has ``info["success_step"] +
    stop_after_success`` frames, ``success_step`` being the 1-based count of steps executed when
    success was first reported. ``None`` runs every episode to the task's step limit. The step
    limit always applies.
    """
    if stop_after_success is not None and stop_after_success < 0:
        raise ValueError(
            f"stop_after_success must be >= 0 (or None to run to the step limit), got {stop_after_success}"
        )
    obs, info = env.reset(seed=seed)
    expert.reset(seed)
    u = env.unwrapped
    frames: dict[str, list] = {k: [] for k in obs}
    frames["action"] = []
    success_step = None
    for t in range(1, u.max_episode_steps + 1):
        action = expert.act(obs)
        for k, v in obs.items():
            frames[k].append(v)
        frames["action"].append(action)
        obs, _, terminated, truncated, step_info = env.step(action)
        if success_step is None and step_info["success"]:
            success_step = t
        cut = success_step is not None and stop_after_success is not None
        if (cut and t - success_step >= stop_after_success) or terminated or truncated:
            break
    info = dict(info, success_step=success_step)
    return {k: np.stack(v) for k, v in frames.items()}, success_step is not None, info


@dataclass
class CollectSummary:
    task: str
    out: str
    attempts: int = 0
    kept: int = 0
    successes: int = 0
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    failed_seeds: list = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    def lines(self) -> list[str]:
        lo, hi = wilson_interval(self.successes, self.attempts)
        return [
            f"task {self.task}: {self.attempts} episodes run, expert success {self.successes}/{self.attempts} "
            f"= {100 * self.success_rate:.1f}% (95% Wilson CI {100 * lo:.1f}-{100 * hi:.1f}%)",
            f"kept {self.kept} episodes, {self.frames} frames in {self.out}"
            + (" (interrupted: finished episodes are kept)" if self.interrupted else ""),
            f"{self.seconds:.1f} s, {self.frames / max(self.seconds, 1e-9):.0f} frames/s"
            + (f"; failed seeds: {self.failed_seeds[:20]}" if self.failed_seeds else ""),
        ]


def collect(
    task: str,
    episodes: int,
    out: str | Path,
    randomization="default",
    seed: int = 0,
    cameras: dict[str, tuple[int, int]] | None = None,
    keep_failures: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_attempts: int | None = None,
    stop_after_success: int | None = SETTLE_STEPS,
) -> CollectSummary:
    """Collect ``episodes`` expert episodes (successful ones only unless ``keep_failures``).

    Episode k of the run uses seed ``seed + k``. Without ``keep_failures`` the run keeps trying
    new seeds until ``episodes`` successes are stored or ``max_attempts`` (default 2N+10) is hit.
    Each episode ends ``stop_after_success`` steps after its first success (see ``run_episode``).
    """
    from tqdm import tqdm

    from robot_policy.data import EpisodeStore
    from robot_policy.sim import make_env, make_expert

    if episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {episodes}")
    if stop_after_success is not None and stop_after_success < 0:
        raise ValueError(
            f"--stop-after-success must be >= 0 (or 'never' to run to the step limit), got {stop_after_success}"
        )
    if randomization in ("none", "off"):
        randomization = None
    env = make_env(task, cameras=cameras, randomization=randomization)
    expert = make_expert(task, env)
    u = env.unwrapped
    store = EpisodeStore.create(
        out,
        dataset_schema(env),
        fps=u.control_hz,
        robot=u.robot_name,
        overwrite=overwrite,
        attrs={
            "sim": {
                "task": task,
                "cameras": {k: list(v) for k, v in (cameras or {}).items()},
                "randomization": str(randomization) if randomization else None,
                "expert": type(expert).__name__,
                "stop_after_success": stop_after_success,
            }
        },
    )
    summary = CollectSummary(task=task, out=str(out))
    max_attempts = max_attempts or (episodes if keep_failures else 2 * episodes + 10)
    t0 = time.perf_counter()
    bar = tqdm(total=episodes, desc=f"collect {task}", unit="ep", disable=not progress)
    try:
        while summary.kept < episodes and summary.attempts < max_attempts:
            ep_seed = seed + summary.attempts
            frames, success, info = run_episode(env, expert, ep_seed, stop_after_success=stop_after_success)
            summary.attempts += 1
            summary.successes += success
            if not success:
                summary.failed_seeds.append(ep_seed)
            if success or keep_failures:
                meta = {
                    "success": bool(success),
                    "seed": int(ep_seed),
                    "task": task,
                    "randomization": info["randomization"],
                    "expert": type(expert).__name__,
                    "cameras": {k: list(v) for k, v in (cameras or {}).items()},
                    # How the episode was cut: None = ran to the step limit; success_step is the
                    # 1-based step at which success was first reported (None if never).
                    "stop_after_success": stop_after_success,
                    "success_step": info["success_step"],
                }
                store.add_episode(frames, meta=meta)  # committed now: survives a later crash
                summary.kept += 1
                summary.frames += len(frames["action"])
                bar.update(1)
            bar.set_postfix(success=f"{summary.successes}/{summary.attempts}")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
        env.close()
    return summary


@dataclass
class ReplayResult:
    episode: int
    seed: int
    recorded_success: bool
    replayed_success: bool
    max_joint_error: float
    steps: int
    video: str | None = None

    @property
    def reproduced(self) -> bool:
        return self.recorded_success == self.replayed_success

    def lines(self) -> list[str]:
        verdict = "REPRODUCED" if self.reproduced else "NOT REPRODUCED"
        return [
            f"episode {self.episode} (seed {self.seed}, {self.steps} steps): recorded success "
            f"{self.recorded_success}, replayed success {self.replayed_success} -> {verdict}",
            f"max |joint_pos replayed - recorded| = {self.max_joint_error:.2e} rad"
            + (f"; video: {self.video}" if self.video else ""),
        ]


def replay(
    path: str | Path, episode: int, video: str | Path | None = None, fps: float | None = None
) -> ReplayResult:
    """Re-run the recorded actions of ``episode`` from its seed and randomization draw."""
    from robot_policy.data import EpisodeStore
    from robot_policy.sim import make_env

    store = EpisodeStore.open(path, "r")
    if not 0 <= episode < store.num_episodes:
        raise IndexError(
            f"{path} has {store.num_episodes} episodes; --episode must be in [0, {store.num_episodes - 1}]"
        )
    meta = store.episode_meta(episode)
    for key in ("task", "seed"):
        if key not in meta:
            raise KeyError(
                f"episode {episode} of {path} has no '{key}' in its metadata: it was not recorded by sim collect"
            )
    data = store.get_episode(episode, keys=["action", "joint_pos"])
    env = make_env(meta["task"])
    u = env.unwrapped
    obs, _ = env.reset(seed=int(meta["seed"]), options={"randomization": meta.get("randomization") or {}})
    frames = [u.render_frame()] if video else []
    err, success = 0.0, False
    for t, action in enumerate(data["action"]):
        err = max(err, float(np.abs(obs["joint_pos"] - data["joint_pos"][t]).max()))
        obs, _, _, _, info = env.step(action)
        success = success or info["success"]
        if video:
            frames.append(u.render_frame())
    if video:
        write_video(video, frames, fps or u.control_hz)
    env.close()
    return ReplayResult(
        episode=episode,
        seed=int(meta["seed"]),
        recorded_success=bool(meta.get("success")),
        replayed_success=bool(success),
        max_joint_error=err,
        steps=len(data["action"]),
        video=str(video) if video else None,
    )
