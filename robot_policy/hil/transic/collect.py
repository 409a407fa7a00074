"""Corrections for TRANSIC: the base policy runs in the (target) world, the simulated human
corrects it.

Each episode is :func:`robot_policy.hil.dagger.corrected_rollout`: the scripted expert, seeing
the true state of the world, takes over through the arbiter's rules when the policy's proposal
strays (``Corrector``, the ``teleop_node mode:=scripted options:=intervene=disagree`` logic),
the policy's plan is dropped on takeover and handback, and every executed command passes the
robot's safety layer. Each step records the observation, the executed ``action`` (post), the
base's ``policy_action`` (pre) and the ``intervention`` flag: what TRANSIC trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TARGET_WORLD = "target_world"
"""The project's standard transfer benchmark: ``sim/randomization/target_world.yaml``."""


@dataclass
class CollectConfig:
    """``robot-policy transic collect`` settings."""

    episodes: int = 20
    """Corrected episodes to record."""
    task: str = "tabletop"
    """Simulation task."""
    world: str = TARGET_WORLD
    """Randomization config of the world the corrections happen in (name in sim/randomization/ or a path)."""
    hardware: str = "sim_tabletop"
    """Robot setup whose safety layer the executed commands pass."""
    seed: int = 20_000
    """Seed of the first episode (disjoint from demonstrations 0.. and evaluations 100000..)."""
    threshold: float = 0.25
    """Corrector: joint disagreement (rad) between policy and expert that calls for a takeover.
    Larger than HG-DAgger's 0.1: in the target world the expert's commands lead the lagging arm
    by ~0.6 s, so at 0.1 rad the "human" drove 80% of all steps, policy doing well or not (and
    the gate learned little); at 0.25 it takes over where the policy really goes wrong (37%)."""
    patience: int = 3
    """Corrector: steps of disagreement before taking over."""
    min_steps: int = 10
    """Corrector: steps kept once it took over."""
    max_steps: int = 40
    """Corrector: steps after which it hands back regardless."""
    gripper: bool = True
    """Corrector: also take over when the policy's gripper command has the other sign than the
    expert's (closing beside the cube), as a person watching the fingers would; off: joint
    disagreement only (the benchmark before 2026-12-03 16:30). Chosen on validation seeds
    (docs/results.md): 68% mean gated success vs 58-72% with joints only."""


def collect_corrections(base, cfg: CollectConfig, out: str | Path, progress: bool = False) -> dict:
    """Record ``cfg.episodes`` corrected rollouts of ``base`` (a policy) into the store ``out``."""
    from robot_policy.data import EpisodeStore, KeySpec
    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.hil.dagger import corrected_rollout
    from robot_policy.pipelines.collect import dataset_schema
    from robot_policy.runtime.recorder import InterventionTally
    from robot_policy.sim import make_env, make_expert
    from robot_policy.teleop.scripted.device import Corrector, ScriptedConfig

    hw = load_hardware_config(cfg.hardware)
    env = make_env(cfg.task, randomization=cfg.world)
    expert = make_expert(cfg.task, env)
    corrector = Corrector(
        ScriptedConfig(
            intervene="disagree",
            threshold=cfg.threshold,
            patience=cfg.patience,
            min_steps=cfg.min_steps,
            max_steps=cfg.max_steps,
            gripper=cfg.gripper,
        ),
        len(hw.joint_names),
    )
    schema = dataset_schema(env)
    schema["intervention"] = KeySpec(dtype="bool", shape=(1,))
    schema["policy_action"] = KeySpec(
        dtype="float32", shape=schema["action"].shape, names=schema["action"].names
    )
    store = EpisodeStore.create(
        out,
        schema,
        fps=env.unwrapped.control_hz,
        robot=hw.name,
        overwrite=True,
        attrs={"world": str(cfg.world), "purpose": "transic corrections"},
    )
    stats = {"episodes": 0, "successes": 0, "interventions": 0, "frames": 0, "intervention_frames": 0}
    it = range(cfg.episodes)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"corrections in {Path(str(cfg.world)).stem}", unit="ep", dynamic_ncols=True)
    try:
        for k in it:
            seed = cfg.seed + k
            ep = corrected_rollout(base, env, expert, corrector, hw, seed)
            success = bool(ep.pop("success"))
            tally = InterventionTally(env.unwrapped.control_hz)
            for f in ep["intervention"]:
                tally.add({"intervention": f})
            meta = {
                "seed": seed,
                "success": success,
                "operator": "scripted-corrector",
                "world": str(cfg.world),
                "randomization": dict(env.unwrapped.draw),
                **tally.meta(),
            }
            store.add_episode(ep, meta=meta)
            stats["episodes"] += 1
            stats["successes"] += success
            stats["interventions"] += meta["interventions"]
            stats["frames"] += len(ep["action"])
            stats["intervention_frames"] += meta["intervention_frames"]
    finally:
        store.close()
        env.close()
    return stats
