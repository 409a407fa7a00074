"""The sim task's scripted expert as a teleop device: demonstrations without a person, and the
"human" of human-in-the-loop runs in simulation (HG-DAgger's corrector).

``intervene: always`` drives the arm the whole episode (demonstration recording, as the
scripted teleop always did). ``intervene: disagree`` watches the policy: the expert runs its own
plan in the background ("what I would command now") and takes control when the policy's
proposal (``obs["policy_action"]``, the arbiter's shadow of the policy's plan) is further than
``threshold`` from it for ``patience`` steps; it hands back after at least ``min_steps``, once
the policy agrees again for ``agree_steps`` steps, or after ``max_steps``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robot_policy.teleop.base import TeleopCommand, TeleopConfig, TeleopDevice, TeleopError, register_teleop

POLICY_ACTION = "policy_action"
"""Observation key a corrector reads the policy's proposal from (command order)."""


class ScriptedSource:
    """The sim task's scripted expert, fed observations assembled from the graph.

    Builds a private copy of the task (no cameras) only for the expert's kinematic model; the
    robot it drives is whatever publishes the observations.
    """

    def __init__(self, task: str, noise: float = 1.0):
        from robot_policy.sim import make_env, make_expert

        self.env = make_env(task, cameras=None)
        self.expert = make_expert(task, self.env, noise=noise)
        self.max_steps = int(self.env.unwrapped.max_episode_steps)

    def reset(self, seed: int | None) -> None:
        self.expert.reset(seed)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.expert.act(obs), dtype=np.float64)

    def close(self) -> None:
        self.env.close()


@dataclass
class ScriptedConfig(TeleopConfig):
    """The scripted expert as an operator."""

    task: str = ""
    """Sim task whose expert to run (empty: the hardware config's task)."""
    noise: float = 1.0
    """Expert noise scale (grasp offset, speed, joint jitter); 0: deterministic."""
    intervene: Literal["always", "disagree"] = "always"
    """``always``: the expert drives; ``disagree``: it corrects a policy (see the module docstring)."""
    threshold: float = 0.12
    """``disagree``: largest joint difference (rad) between policy and expert still tolerated."""
    patience: int = 2
    """``disagree``: steps of disagreement before taking control."""
    min_steps: int = 10
    """``disagree``: steps the expert keeps control at least once it took it."""
    max_steps: int = 60
    """``disagree``: steps after which the expert hands back whatever the policy proposes."""
    agree_steps: int = 3
    """``disagree``: steps of agreement (within half the threshold) before handing back."""
    gripper: bool = False
    """``disagree``: also count a gripper command of the other sign (the policy closing where the
    expert keeps the fingers open, or opening where it holds) as disagreement, as a person
    watching the fingers would; off: joints only."""

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise TeleopError(f"scripted threshold must be > 0 rad, got {self.threshold}")
        for name in ("patience", "min_steps", "max_steps", "agree_steps"):
            if getattr(self, name) < 1:
                raise TeleopError(f"scripted {name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < self.min_steps:
            raise TeleopError(f"scripted max_steps ({self.max_steps}) < min_steps ({self.min_steps})")


class Corrector:
    """When to take and hand back control, from policy-vs-expert disagreement (ROS-free)."""

    def __init__(self, cfg: ScriptedConfig, n_arm: int):
        self.cfg = cfg
        self.n = n_arm
        self.reset()

    def reset(self) -> None:
        self.intervening = False
        self.streak = 0  # consecutive disagreeing (not intervening) / agreeing (intervening) steps
        self.steps = 0
        self.last_gap = float("nan")

    def update(self, expert: np.ndarray, proposal: np.ndarray | None) -> bool:
        gap, grip_differs = np.nan, False
        c = self.cfg
        if proposal is not None and np.all(np.isfinite(proposal[: self.n])):
            gap = float(np.max(np.abs(np.asarray(proposal[: self.n]) - expert[: self.n])))
            if c.gripper and len(proposal) > self.n and len(expert) > self.n:
                grip_differs = bool(np.sign(proposal[self.n]) * np.sign(expert[self.n]) < 0)
        self.last_gap = gap
        if not self.intervening:
            # NaN (no proposal): no evidence either way
            self.streak = self.streak + 1 if gap > c.threshold or grip_differs else 0
            if self.streak >= c.patience:
                self.intervening, self.streak, self.steps = True, 0, 0
            return self.intervening
        self.steps += 1
        self.streak = self.streak + 1 if gap < 0.5 * c.threshold and not grip_differs else 0
        if self.steps >= c.max_steps or (self.steps >= c.min_steps and self.streak >= c.agree_steps):
            self.intervening, self.streak = False, 0
        return self.intervening


@register_teleop("scripted")
class ScriptedDevice(TeleopDevice):
    """The sim task's scripted expert: drives demonstrations, or corrects a policy (HG-DAgger)."""

    config_class = ScriptedConfig
    needs_observation = True
    needs_sim = True

    def __init__(self, config: ScriptedConfig, hw):
        super().__init__(config, hw)
        self.source: ScriptedSource | None = None
        self.corrector = Corrector(config, self.n_joints)

    @property
    def needs_policy(self) -> bool:
        """The device reads the policy's proposal (``obs["policy_action"]``)."""
        return self.config.intervene == "disagree"

    @property
    def max_steps(self) -> int:
        return self.source.max_steps if self.source is not None else 0

    def connect(self) -> None:
        self.source = ScriptedSource(self.config.task or self.hw.task, noise=self.config.noise)
        self.connected = True

    def disconnect(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
        self.connected = False

    def reset(self, seed: int | None = None) -> None:
        if self.source is None:
            raise TeleopError("scripted teleop is not connected; call connect() first")
        self.source.reset(seed)
        self.corrector.reset()

    def read(self, obs: dict[str, np.ndarray] | None = None) -> TeleopCommand:
        if self.source is None:
            raise TeleopError("scripted teleop is not connected; call connect() first")
        if obs is None or "joint_pos" not in obs:
            raise TeleopError("the scripted expert needs the robot's observation (joint_pos, task state)")
        action = self.source.act(obs)
        if self.config.intervene == "always":
            intervening = True
        else:
            intervening = self.corrector.update(action, obs.get(POLICY_ACTION))
        self.stats.reads += 1
        self.stats.extra["disagreement"] = round(self.corrector.last_gap, 4)
        n = self.n_joints
        return TeleopCommand(
            stamp=time.monotonic(),
            joints=action[:n],
            gripper=float(action[n]) if len(action) > n else None,
            intervening=intervening,
        )
