"""One teleop device driven at the control rate: the ROS-free core of ``teleop_node`` and of
``robot-policy teleop`` (and of the in-process DAgger loop).

Per tick, ``step(obs)`` reads the device and returns what to publish: the command-order target
(arm joints, then the gripper) while the human intervenes, the flag, and the episode events.
Cartesian commands become joint targets here (:mod:`robot_policy.teleop.cartesian`); a
Cartesian target restarts from the measured pose each time the human takes control.

A device that disappears raises :class:`~robot_policy.teleop.base.DeviceDisconnected` out of
``step``; ``hold(obs)`` is then the one last command a host sends (the measured position, so
the arm stops where it is) before it stops commanding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from robot_policy.conventions import GRIPPER, JOINT_POS
from robot_policy.hardware.config import HardwareConfig
from robot_policy.teleop.base import TeleopDevice, TeleopEvent
from robot_policy.teleop.cartesian import CartesianConfig, CartesianMapper


@dataclass
class TeleopOutput:
    """What a host publishes after one tick."""

    target: np.ndarray | None
    """Command-order target (arm joints + gripper) while intervening, else None."""
    intervening: bool
    events: tuple[TeleopEvent, ...]


class TeleopSession:
    """A connected device plus the Cartesian mapping and gripper state of one operator."""

    def __init__(
        self,
        device: TeleopDevice,
        hw: HardwareConfig,
        cartesian: CartesianConfig | None = None,
        solver=None,
        clock=time.monotonic,
    ):
        self.device = device
        self.hw = hw
        self.n = len(hw.joint_names)
        self.has_gripper = bool(hw.gripper_joint)
        self.mapper = CartesianMapper(hw, cartesian, solver=solver)
        self.clock = clock
        self.gripper = float(device.config.gripper_start)
        self._last = None
        self.intervening = False

    def reset(self, seed: int | None = None) -> None:
        """New episode: the device replans / forgets, the Cartesian target restarts."""
        self.device.reset(seed)
        self.mapper.reset()
        self.intervening = False

    def step(self, obs: dict[str, np.ndarray] | None) -> TeleopOutput:
        now = self.clock()
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        cmd = self.device.read(obs)
        if cmd.gripper is not None:
            self.gripper = float(np.clip(cmd.gripper, -1.0, 1.0))
        q_meas = None if obs is None or JOINT_POS not in obs else np.asarray(obs[JOINT_POS], dtype=np.float64)
        if not cmd.intervening:
            self.mapper.reset()  # the policy moves the arm meanwhile: restart from where it is
            self.intervening = False
            return TeleopOutput(None, False, cmd.events)
        if cmd.kind == "joints":
            joints = cmd.joints
        elif cmd.kind in ("twist", "pose"):
            joints = self.mapper.joints(cmd, q_meas, dt)
        else:  # intervening with no motion command: hold where the arm is
            joints = None if q_meas is None else q_meas[: self.n]
        self.intervening = True
        if joints is None:
            return TeleopOutput(None, True, cmd.events)
        if len(joints) != self.n:
            from robot_policy.teleop.base import TeleopError

            raise TeleopError(
                f"teleop device '{self.device.name}' commands {len(joints)} joints, robot '{self.hw.name}' has {self.n}"
            )
        return TeleopOutput(self._with_gripper(joints), True, cmd.events)

    def _with_gripper(self, joints: np.ndarray) -> np.ndarray:
        tail = [self.gripper] if self.has_gripper else []
        return np.concatenate([np.asarray(joints, dtype=np.float64), tail])

    def hold(self, obs: dict[str, np.ndarray] | None) -> np.ndarray | None:
        """The command that stops the arm where it is (measured joints, gripper as it is)."""
        if obs is None or JOINT_POS not in obs:
            return None
        q = np.asarray(obs[JOINT_POS], dtype=np.float64)[: self.n]
        if self.has_gripper and GRIPPER in obs:
            # Keep the commanded gripper state: a lost device must not drop what the gripper holds.
            return np.concatenate([q, [self.gripper]])
        return self._with_gripper(q)

    def status(self) -> dict[str, object]:
        return {**self.device.status(), **self.mapper.status(), "intervening": self.intervening}
