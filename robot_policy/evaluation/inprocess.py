"""The in-process session runner: episodes in this process's simulation, no ROS graph.

``InProcessRunner`` runs each policy in its own simulated env through
``evaluation.rollout.run_episode`` (the policy node's chunk scheduler on a simulated clock).
Policies are checkpoint folders or the task's scripted expert (``expert`` /
``expert:noise=N,action_noise=S``), a baseline or a deliberately degraded "policy". Through the
ROS graph, sessions use ``robot_policy.ros.evaluate_graph.GraphRunner`` instead.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_policy.evaluation.labels import SessionError


@dataclass
class ExpertPredictor:
    """The task's scripted expert behind the ``Predictor`` interface (a baseline "policy").

    ``noise`` scales the expert's own randomness (grasp offset, speed); ``action_noise`` adds
    Gaussian noise (rad) to every joint target: a worse policy for comparisons.
    """

    env: Any
    task: str
    noise: float = 1.0
    action_noise: float = 0.0
    seed: int = 0
    _expert: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        from robot_policy.sim import make_expert

        self._expert = make_expert(self.task, self.env, noise=self.noise)
        self.obs_keys = list(self.env.observation_space.spaces)
        self._rng = np.random.default_rng(self.seed)

    def reset(self, seed: int | None = None) -> None:
        self._expert.reset(seed)
        self._rng = np.random.default_rng(None if seed is None else seed + 7919)

    def predict(self, obs, prior=None, start_time: float = 0.0, num_steps=None):
        from robot_policy.types import ActionChunk

        a = self._expert.act({k: np.asarray(v)[-1] for k, v in obs.items()})
        if self.action_noise:
            a = a.copy()
            a[:-1] += self._rng.normal(0.0, self.action_noise, a.size - 1).astype(a.dtype)
        return ActionChunk(actions=a[None], start_time=start_time, dt=1.0 / self.env.unwrapped.control_hz)


def parse_expert(source: str) -> dict | None:
    """``expert`` / ``expert:noise=2,action_noise=0.02`` -> kwargs; None for anything else."""
    if source != "expert" and not source.startswith("expert:"):
        return None
    kwargs: dict[str, float] = {}
    for part in filter(None, source.partition(":")[2].split(",")):
        key, _, value = part.partition("=")
        if key not in ("noise", "action_noise"):
            raise SessionError(f"policy {source!r}: unknown expert option {key!r} (noise, action_noise)")
        try:
            kwargs[key] = float(value)
        except ValueError as e:
            raise SessionError(f"policy {source!r}: {key}={value!r} is not a number") from e
    return kwargs


class InProcessRunner:
    """Runs episodes in this process with ``evaluation.rollout.run_episode`` (one env per policy).

    ``media_dir``: keep a thumbnail strip and a short video of each episode there (rendered
    every ``media_every`` steps at ``media_size``); ``finish`` writes them once the episode is
    labelled, named by trial and hidden label.
    """

    def __init__(
        self,
        cfg,
        device: str = "cpu",
        media_dir: str | Path | None = None,
        media_every: int = 4,
        media_size: tuple[int, int] = (120, 160),
    ):
        self.cfg = cfg
        self.device = device
        self.media_dir = Path(media_dir) if media_dir else None
        self.media_every = media_every
        self.media_size = media_size
        self._loaded: dict[str, tuple] = {}
        self._frames: list | None = None
        self._fps = 20.0

    def _load(self, name: str):
        if name in self._loaded:
            return self._loaded[name]
        from robot_policy.sim import make_env

        source = self.cfg.policies[self.cfg.names.index(name)]
        expert = parse_expert(source)
        if expert is not None:
            env = make_env(self.cfg.task, randomization=self.cfg.randomization)
            pred = ExpertPredictor(env, self.cfg.task, **expert)
            entry = (env, pred, pred.obs_keys, 1, 1, True)
        else:
            from robot_policy.evaluation.rollout import policy_cameras
            from robot_policy.policies import load

            if not Path(source).is_dir():
                raise SessionError(
                    f"policy {source!r}: not a checkpoint folder nor 'expert[:...]' (a ws:// policy "
                    "server runs through the ROS graph: add --ros)"
                )
            policy = load(source, device=self.device)
            policy.eval()
            pc = policy.config
            env = make_env(
                self.cfg.task, cameras=policy_cameras(policy) or None, randomization=self.cfg.randomization
            )
            entry = (env, policy, [*pc.obs_keys, *pc.image_keys], pc.n_obs_steps, pc.n_action_steps, False)
        self._loaded[name] = entry
        return entry

    def run(self, policy: str, seed: int) -> dict:
        from robot_policy.evaluation.rollout import run_episode

        env, pred, keys, n_obs, n_act, is_expert = self._load(policy)
        self._fps = float(env.unwrapped.control_hz) / self.media_every
        if is_expert:
            pred.reset(seed)
        else:
            pred.reset()
        ctx = contextlib.nullcontext()
        if not is_expert:
            import torch

            ctx = torch.no_grad()
        self._frames = [] if self.media_dir is not None else None
        with ctx:
            r = run_episode(
                pred.predict,
                env,
                seed,
                keys,
                n_obs,
                n_act,
                video=self._frames,
                video_every=self.media_every,
                video_size=self.media_size,
            )
        r["latency_kind"] = "inference call (ms)"
        return r

    def finish(self, record: dict, aborted: bool) -> dict:
        """After the label: write the episode's media (aborted attempts get none)."""
        frames, self._frames = self._frames, None
        if aborted or not frames or self.media_dir is None:
            return {}
        from robot_policy.evaluation.media import write_episode_media

        stem = f"t{record['trial']:03d}_{record['label']}"
        return {
            "media": write_episode_media(
                {"render": frames}, self.media_dir, stem, self._fps, root=self.media_dir.parent
            )
        }

    def close(self) -> None:
        for env, *_ in self._loaded.values():
            env.close()
        self._loaded.clear()
