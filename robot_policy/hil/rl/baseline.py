"""The behaviour-cloning baseline of the HIL experiment: the project's flow policy trained on the
same demonstrations plus the same intervention data the HIL-SERL run collected.

The RL agent acts in end-effector deltas; the flow policy imitates absolute joint targets (the
project's dataset convention). :class:`InterventionRecorder` therefore records, next to the RL
transitions, the simulator's joint-space frames and the executed joint command of every step
(what :func:`robot_policy.pipelines.collect.collect` stores for a demonstration). Demo episodes
are kept whole; of the training episodes only the intervention segments (HG-DAgger's
aggregation, :func:`robot_policy.hil.dagger.segments`) join the data.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from robot_policy.evaluation.stats import wilson_interval
from robot_policy.hil.dagger import STATE_KEYS, segments

MIN_SEGMENT = 4
"""Intervention segments shorter than this many steps are not added (as in ``dagger``)."""


class InterventionRecorder:
    """Joint-space frames of demos (whole) and of intervention segments (training episodes)."""

    def __init__(self):
        self.episodes: list[tuple[dict[str, np.ndarray], dict]] = []
        self.schema = None
        self._frames: dict[str, list] = {}
        self._flags: list[bool] = []
        self._seed = 0

    def begin(self, env) -> None:
        from robot_policy.pipelines.collect import dataset_schema

        if self.schema is None:
            self.schema = dataset_schema(env.env)
            self.fps = float(env.control_hz)
            self.robot = env.hw.name
        self._frames = {k: [] for k in self.schema}
        self._flags = []
        self._seed = env.seed

    def add(self, env, intervened: bool) -> None:
        for k in self.schema:
            self._frames[k].append(env.last_executed if k == "action" else env.prev_raw[k])
        self._flags.append(bool(intervened))

    def end(self, demo: bool) -> None:
        if not self._flags:
            return
        ep = {k: np.stack(v) for k, v in self._frames.items()}
        if demo:
            self.episodes.append((ep, {"source": "demo", "seed": self._seed}))
            return
        for a, b in segments(np.asarray(self._flags), MIN_SEGMENT):
            self.episodes.append(
                (
                    {k: v[a:b] for k, v in ep.items()},
                    {"source": "intervention", "seed": self._seed, "start": a},
                )
            )

    def write(self, path: Path) -> tuple[int, int]:
        from robot_policy.data import EpisodeStore

        store = EpisodeStore.create(path, self.schema, fps=self.fps, robot=self.robot, overwrite=True)
        try:
            for ep, meta in self.episodes:
                store.add_episode(ep, meta=meta)
            return store.num_episodes, store.num_frames
        finally:
            store.close()


def run_bc(cfg, recorder: InterventionRecorder, log=print) -> dict:
    """Train the flow policy on the recorded data and evaluate it on the held-out seeds."""
    import torch

    from robot_policy.evaluation.rollout import evaluate
    from robot_policy.policies import load
    from robot_policy.policies.config import PolicyConfig
    from robot_policy.train.config import RunConfig, TrainConfig
    from robot_policy.train.trainer import train

    out = Path(cfg.out) / "bc"
    out.mkdir(parents=True, exist_ok=True)
    n_eps, n_frames = recorder.write(out / "data.zarr")
    n_int = sum(1 for _, m in recorder.episodes if m["source"] == "intervention")
    log(
        f"[bc] flow policy on {n_eps} episodes ({n_int} intervention segments), {n_frames} frames, {cfg.bc_steps} steps"
    )
    torch.set_num_threads(cfg.threads)
    pcfg = PolicyConfig(
        family="flow",
        obs_keys=list(STATE_KEYS),
        down_dims=[32, 64, 128],
        obs_mlp_dims=[128],
        horizon=16,
        n_obs_steps=2,
        n_action_steps=8,
    )
    tcfg = TrainConfig(
        steps=cfg.bc_steps,
        batch_size=64,
        checkpoint_every=cfg.bc_steps,
        warmup_steps=min(200, cfg.bc_steps // 10),
    )
    t = time.perf_counter()
    train(RunConfig(policy=pcfg, train=tcfg), out / "data.zarr", out / "policy", "cpu", progress=cfg.progress)
    train_s = time.perf_counter() - t
    ev = evaluate(
        load(out / "policy"), "tabletop", cfg.final_episodes, seed=cfg.eval_seed, progress=cfg.progress
    )
    k, n = int(ev["successes"]), int(ev["episodes"])
    lo, hi = wilson_interval(k, n)
    return {
        "mode": "bc",
        "final": {"successes": k, "episodes": n, "success_rate": k / max(1, n), "ci95": [lo, hi]},
        "episodes_in_data": n_eps,
        "intervention_segments": n_int,
        "frames_in_data": n_frames,
        "train_s": train_s,
        "note": "evaluated by robot_policy.evaluation.rollout.evaluate on the same seeds (its 200-step limit)",
    }
