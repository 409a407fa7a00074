"""The ``ros2_control`` arm backend: an arm that already runs a ros2_control stack.

It reads the stack's ``sensor_msgs/JointState`` topic and streams safety-checked targets to its
``joint_trajectory_controller`` (one point per tick, ``time_from_start`` one period ahead, which the
controller interpolates to) or its ``forward_position_controller`` (``Float64MultiArray``); the
topic names and the controller's joint order come from the hardware YAML's ``arm_config``.
Everything else (safety layer, trajectory interpolation, watchdog, e-stop, fault recovery) is the
shared controller's, as for every backend.

This module is ROS-free: it talks to the stack through a :class:`JointTransport`. The rclpy one
(``robot_policy.ros.ros2_control_transport``) is built by ``robot_node``, the only place allowed to
import rclpy, and passed in as ``transport=``; tests may pass any other.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig
from robot_policy.robots.base import Arm, ArmConfig, ArmError, Gripper, GripperState, register_arm
from robot_policy.types import JointState

INTERFACES = {
    "joint_trajectory": "/joint_trajectory_controller/joint_trajectory",
    "forward_position": "/forward_position_controller/commands",
}
"""Command interfaces and their default topics (ros2_controllers' names)."""


@dataclass
class Ros2ControlConfig(ArmConfig):
    """``arm_config:`` of a ``ros2_control`` hardware config."""

    joint_states_topic: str = "/joint_states"
    """The stack's JointState topic (joint_state_broadcaster). Must not be the topic robot_node
    itself publishes: remap one of them (e.g. run the stack in a namespace)."""
    interface: str = "joint_trajectory"
    """``joint_trajectory`` (JointTrajectory to a joint_trajectory_controller) or
    ``forward_position`` (Float64MultiArray to a forward_command_controller)."""
    command_topic: str = ""
    """The controller's command topic; empty: ros2_controllers' default for ``interface``."""
    command_joints: list[str] = field(default_factory=list)
    """Joints the controller is configured with, in its order: the arm joints of the hardware
    config, plus ``gripper_joint`` when the gripper command rides along (sent as the project's
    gripper command, -1 open .. 1 closed). Empty: the hardware config's command names."""
    state_timeout_s: float = 0.5
    """No joint state newer than this (s): the stack is gone; a fault, recovered by reconnecting."""
    connect_timeout_s: float = 10.0
    """How long ``connect()`` waits for the first joint state (s)."""

    def __post_init__(self):
        super().__post_init__()
        if self.interface not in INTERFACES:
            raise ConfigError(
                f"arm_config.interface must be one of {sorted(INTERFACES)}, got {self.interface!r}"
            )
        if self.state_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("arm_config.state_timeout_s and connect_timeout_s must be > 0 seconds")
        self.command_topic = self.command_topic or INTERFACES[self.interface]


class JointTransport(abc.ABC):
    """How the backend reaches the stack: joint states in, position commands out."""

    @abc.abstractmethod
    def open(self, config: Ros2ControlConfig, state_names: list[str], command_names: list[str]) -> None:
        """Subscribe to ``config.joint_states_topic``, advertise ``config.command_topic``."""

    @abc.abstractmethod
    def latest(self) -> JointState | None:
        """Newest joint state in ``state_names`` order, stamped on ``time.monotonic()``; None
        before the first one."""

    def problem(self) -> str:
        """Why no usable state arrived (e.g. messages lack a joint); empty when none."""
        return ""

    @abc.abstractmethod
    def send(self, positions: np.ndarray, horizon: float) -> None:
        """One target in ``command_names`` order, to be reached ``horizon`` seconds from now."""

    @abc.abstractmethod
    def close(self) -> None:
        """Drop the subscription and the publisher."""


class Ros2ControlGripper(Gripper):
    """A gripper joint of the stack: its command rides in the arm's message, its opening is read
    from the stack's joint states."""

    def __init__(self, arm: Ros2ControlArm):
        self.arm = arm
        self.value = -1.0

    def command(self, value: float) -> None:
        self.value = float(np.clip(value, -1.0, 1.0))

    def read(self) -> GripperState:
        js = self.arm.transport.latest()
        if js is None:
            raise ArmError("ros2_control: no joint state yet")
        return GripperState(width=float(js.position[-1]), stamp=js.stamp)


@register_arm("ros2_control")
class Ros2ControlArm(Arm):
    """An arm behind a running ros2_control stack, reached through ``transport``."""

    config_class = Ros2ControlConfig
    extra = "ros"
    native_hz = 50.0
    uses_ros = True

    def __init__(
        self, config: Ros2ControlConfig, hw: HardwareConfig, transport: JointTransport | None = None
    ):
        super().__init__(config, hw)
        self.config: Ros2ControlConfig = config
        self.transport = transport
        with_gripper = bool(hw.gripper_joint) and config.gripper
        self.state_names = list(hw.joint_names) + ([hw.gripper_joint] if with_gripper else [])
        self.command_names = list(config.command_joints) or list(self.state_names)
        extra = sorted(set(self.command_names) - set(self.state_names))
        missing = sorted(set(hw.joint_names) - set(self.command_names))
        if extra or missing or len(set(self.command_names)) != len(self.command_names):
            raise ConfigError(
                f"hardware config '{hw.name}': arm_config.command_joints must list each of the joints "
                f"{self.state_names} once (the gripper optional); missing {missing}, unknown {extra}"
            )
        self._order = [self.state_names.index(n) for n in self.command_names]
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open and self._fresh() is None

    def _fresh(self) -> str | None:
        """None when the newest state is recent enough, else why not."""
        js = self.transport.latest() if self.transport is not None else None
        if js is None:
            problem = self.transport.problem() if self.transport is not None else ""
            return f"no joint state on {self.config.joint_states_topic} yet" + (
                f" ({problem})" if problem else ""
            )
        age = time.monotonic() - js.stamp
        if age > self.config.state_timeout_s:
            return (
                f"joint states on {self.config.joint_states_topic} stopped {age:.1f} s ago "
                f"(state_timeout_s {self.config.state_timeout_s:g}); is the ros2_control stack running?"
            )
        return None

    def connect(self) -> None:
        if self.transport is None:
            raise ArmError(
                "ros2_control: this backend reaches its arm over ROS 2 topics; run it in robot_node "
                "(which passes its rclpy transport), or pass transport="
            )
        if not self._open:
            self.transport.open(self.config, self.state_names, self.command_names)
            self._open = True
        deadline = time.monotonic() + self.config.connect_timeout_s
        while (why := self._fresh()) is not None:
            if time.monotonic() > deadline:
                raise ArmError(
                    f"ros2_control: {why} within connect_timeout_s {self.config.connect_timeout_s:g}"
                )
            time.sleep(0.02)
        self.gripper = Ros2ControlGripper(self) if len(self.state_names) > len(self.hw.joint_names) else None

    def disconnect(self) -> None:
        if self._open and self.transport is not None:
            self.transport.close()
        self._open = False

    def read(self) -> JointState:
        why = self._fresh()
        if why is not None:
            raise ArmError(f"ros2_control: {why}")
        js = self.transport.latest()
        n = self.n_joints
        vel = None if js.velocity is None else js.velocity[:n]
        return JointState(js.position[:n], js.stamp, vel, tuple(self.hw.joint_names))

    def _command(self, q: np.ndarray) -> np.ndarray:
        full = np.concatenate([q, [self.gripper.value]]) if self.gripper is not None else q
        return full[self._order]

    def _send(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        self.transport.send(self._command(q), 1.0 / self.control_hz)
        return q

    def stop(self) -> None:
        """Hold where the arm is now (the stack's controller keeps it there)."""
        if self._open and self.transport is not None and self.transport.latest() is not None:
            q = self.transport.latest().position[: self.n_joints]
            self.transport.send(self._command(q), 1.0 / self.control_hz)

    def status(self) -> dict[str, Any]:
        why = self._fresh() if self._open else "not connected"
        js = self.transport.latest() if self.transport is not None else None
        return {
            "connected": self._open and why is None,
            "mode": f"{self.config.interface} -> {self.config.command_topic}",
            "faults": [why] if why else [],
            "protective_stop": False,
            "state_topic": self.config.joint_states_topic,
            "state_age_ms": round((time.monotonic() - js.stamp) * 1e3, 1) if js is not None else None,
        }
