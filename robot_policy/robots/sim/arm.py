"""The ``sim`` arm backend: the simulated world's arm behind the same contract as a real arm.

Everything that makes it safe to command (safety layer, trajectory executor, watchdog, e-stop,
gripper command) is the shared :class:`~robot_policy.robots.controller.ArmController`; this file
only connects the contract to a :class:`~robot_policy.robots.sim.world.SimWorld`: ``write``
sets the joint target, the gripper sets the finger command, and ``step`` advances the physics
once per tick, after both. Unlike real arms the loop runs on a fixed grid (``make_pacer``): every
tick exists and carries its due time, so recordings have no holes after a hiccup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig
from robot_policy.hardware.pacing import Stall, TickPacer
from robot_policy.robots.base import Arm, ArmConfig, Gripper, GripperState, register_arm
from robot_policy.robots.sim.world import SimWorld
from robot_policy.types import JointState


@dataclass
class SimArmConfig(ArmConfig):
    """``arm_config:`` of a ``sim`` hardware config (all optional; ``robot_node`` parameters of
    the same names override them)."""

    task: str = ""
    """Sim task (``robot_policy.sim.list_tasks()``); empty: the hardware config's ``task``."""
    seed: int = 0
    """Seed of the first scene reset; each reset uses the next."""
    randomization: str = ""
    """Domain-randomization YAML (``sim/randomization/NAME.yaml`` or a path); empty: off."""
    realtime: bool = True
    """Step at the control rate on the wall clock; false: as fast as the CPU allows."""
    max_catch_up_s: float = 0.5
    """A late loop runs the missed ticks at once up to this far behind; beyond it they are
    skipped and reported as a stall."""

    def __post_init__(self):
        super().__post_init__()
        if self.max_catch_up_s <= 0:
            raise ConfigError(f"arm_config.max_catch_up_s must be > 0 seconds, got {self.max_catch_up_s}")


class SimGripper(Gripper):
    """The simulated parallel gripper: the command goes into the next physics step."""

    def __init__(self, world: SimWorld):
        self.world = world

    def command(self, value: float) -> None:
        self.world.gripper_command = float(np.clip(value, -1.0, 1.0))

    def read(self) -> GripperState:
        return GripperState(width=self.world.gripper_width(), stamp=self.world.stamp)


@register_arm("sim")
class SimArm(Arm):
    """The arm of a :class:`SimWorld` (built at ``connect()``, in the controller's loop thread)."""

    config_class = SimArmConfig
    extra = "sim"
    connect_in_loop = True  # MuJoCo rendering is bound to the thread that created the GL context

    def __init__(self, config: SimArmConfig, hw: HardwareConfig, randomization: Any = None):
        super().__init__(config, hw)
        if config.control_hz and config.control_hz != hw.control_hz:
            raise ConfigError(
                f"hardware config '{hw.name}': arm_config.control_hz {config.control_hz:g} differs from "
                f"control_hz {hw.control_hz:g}; the sim backend steps its physics once per control tick, "
                "so leave arm_config.control_hz out"
            )
        self.config: SimArmConfig = config
        self._randomization = randomization if randomization is not None else (config.randomization or None)
        self.world: SimWorld | None = None

    @property
    def control_hz(self) -> float:
        return float(self.hw.control_hz)

    @property
    def connected(self) -> bool:
        return self.world is not None

    def connect(self) -> None:
        if self.world is None:
            self.world = SimWorld(self.hw, self.config.task, self.config.seed, self._randomization)
        self.gripper = SimGripper(self.world) if self.hw.gripper_joint and self.config.gripper else None

    def disconnect(self) -> None:
        if self.world is not None:
            self.world.close()
            self.world = None

    def read(self) -> JointState:
        return self.world.joint_state()

    def _send(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        self.world.arm_target = q.copy()
        return q

    def stop(self) -> None:
        if self.world is not None:
            self.world.hold()

    def step(self, t: float) -> bool:
        if self.world is None:
            return False
        self.world.step(t)
        return True

    def make_pacer(self, stop: threading.Event, on_stall: Callable[[Stall], None] | None) -> TickPacer | None:
        if not self.config.realtime:
            return None
        return TickPacer(1.0 / self.control_hz, self.config.max_catch_up_s, stop=stop, on_stall=on_stall)

    def period_wait(self, token: Any, wake: threading.Event) -> None:
        return None  # realtime false: no sleep between ticks

    def status(self) -> dict[str, Any]:
        w = self.world
        return {
            "connected": w is not None,
            "mode": f"simulation: task {w.task if w else self.config.task or self.hw.task}",
            "faults": [],
            "protective_stop": False,
        }
