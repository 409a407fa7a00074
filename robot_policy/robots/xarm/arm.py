"""UFACTORY xArm 5/6/7 and Lite 6 through xarm-python-sdk (``pip install 'robot_policy[xarm]'``).

The SDK's servo mode: ``motion_enable(True)``, ``set_mode(1)`` (servo), ``set_state(0)``
(motion), then ``set_servo_angle_j(angles, is_radian=True)`` once per tick; the controller
executes only the latest target. Every SDK call returns a code (0: ok) and the controller
reports ``error_code`` (a fault: the arm stops) and ``warn_code``; both are checked on every
call. Angles are always passed and read with ``is_radian=True``: the SDK's default unit is degrees.

Recovery: ``clean_error()`` / ``clean_warn()``, then enable, servo mode and motion state again
(the SDK requires all three after clearing an error); a lost connection is rebuilt first.
The xArm Gripper (G2/G1, pulses 0 closed .. 850 open) is driven when the hardware config has a
``gripper_joint``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig
from robot_policy.robots.base import Arm, ArmConfig, ArmError, Gripper, GripperState, import_sdk, register_arm
from robot_policy.types import JointState

log = logging.getLogger("robot_policy.robots.xarm")

API_CODES = {
    -1: "not connected",
    -2: "not ready (motion not enabled or state not set)",
    -8: "target out of the joint range",
    -9: "emergency stop",
    1: "controller has an uncleared error",
    2: "controller has an uncleared warning",
    3: "response timeout",
    9: "state not ready for motion",
    51: "wrong mode",
}
"""xArm SDK return codes the messages spell out (the rest: see the SDK's xarm_api_code.md)."""
MODES = {0: "position", 1: "servo", 2: "joint teaching", 4: "joint velocity", 5: "cartesian velocity"}
STATES = {1: "moving", 2: "ready", 3: "paused", 4: "stopped", 5: "stopped (error)"}
SERVO_MODE = 1


@dataclass
class XArmConfig(ArmConfig):
    """``arm_config:`` of an ``xarm`` hardware config."""

    hostname: str = ""
    """Control box IP address."""
    mode_timeout_s: float = 2.0
    """How long to wait for the controller to report servo mode after set_mode(1) + set_state(0) (s)."""
    gripper_speed: float = 5000.0
    """xArm Gripper speed (r/min, 1000..5000)."""
    gripper_open_pulse: float = 850.0
    """Gripper position (pulses) when fully open."""
    gripper_closed_pulse: float = 0.0
    """Gripper position (pulses) when closed."""
    gripper_max_width: float = 0.085
    """Finger opening (m) at ``gripper_open_pulse``."""
    gripper_deadband_pulse: float = 10.0
    """Gripper commands closer than this to the last one are not resent (pulses)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.hostname:
            raise ConfigError("arm_config.hostname is empty: give the xArm control box's IP address")
        if not 1000 <= self.gripper_speed <= 5000:
            raise ConfigError(
                f"arm_config.gripper_speed must be in [1000, 5000] r/min, got {self.gripper_speed}"
            )
        if self.gripper_open_pulse == self.gripper_closed_pulse:
            raise ConfigError("arm_config.gripper_open_pulse and gripper_closed_pulse must differ")


def _check(api, what: str, code) -> None:
    """Raise ArmError for a non-zero SDK return code, naming the call and the controller codes."""
    if code != 0:
        raise ArmError(
            f"xArm {what} returned code {code} ({API_CODES.get(code, 'see xarm_api_code.md')}); "
            f"error_code={getattr(api, 'error_code', '?')} warn_code={getattr(api, 'warn_code', '?')}"
        )


class XArmGripper(Gripper):
    """xArm Gripper: continuous position in pulses mapped from the [-1 open, 1 closed] command."""

    def __init__(self, api, config: XArmConfig):
        self._api, self._cfg = api, config
        self.max_width = config.gripper_max_width
        self._last_pulse: float | None = None
        _check(api, "set_gripper_mode(0)", api.set_gripper_mode(0))
        _check(api, "set_gripper_enable(True)", api.set_gripper_enable(True))
        _check(api, "set_gripper_speed", api.set_gripper_speed(config.gripper_speed))

    def command(self, value: float) -> None:
        c = self._cfg
        frac = (float(np.clip(value, -1.0, 1.0)) + 1.0) / 2.0  # 0 open .. 1 closed
        pulse = c.gripper_open_pulse + (c.gripper_closed_pulse - c.gripper_open_pulse) * frac
        at_end = pulse in (c.gripper_open_pulse, c.gripper_closed_pulse)  # never stop short of open/closed
        if self._last_pulse is not None and (
            pulse == self._last_pulse
            or (abs(pulse - self._last_pulse) < c.gripper_deadband_pulse and not at_end)
        ):
            return
        _check(self._api, "set_gripper_position", self._api.set_gripper_position(pulse, wait=False))
        self._last_pulse = pulse

    def read(self) -> GripperState:
        code, pulse = self._api.get_gripper_position()
        _check(self._api, "get_gripper_position", code)
        c = self._cfg
        frac_open = (float(pulse) - c.gripper_closed_pulse) / (c.gripper_open_pulse - c.gripper_closed_pulse)
        width = float(np.clip(frac_open, 0.0, 1.0)) * self.max_width
        return GripperState(width=width, stamp=time.monotonic())

    def status(self) -> dict[str, Any]:
        return {"last_pulse": self._last_pulse}


@register_arm("xarm")
class XArmArm(Arm):
    """xArm in servo mode (mode 1): one set_servo_angle_j per tick, in radians."""

    config_class = XArmConfig
    extra = "xarm"
    native_hz = 100.0

    def __init__(self, config: XArmConfig, hw: HardwareConfig, sdk=None):
        """``sdk``: object with an ``XArmAPI`` class (``xarm.wrapper`` by default; tests inject a fake)."""
        super().__init__(config, hw)
        self.config: XArmConfig = config
        self._sdk = sdk
        self._api = None
        self._need_enable = True
        self._warned = 0

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._api is not None and bool(self._api.connected)

    def connect(self) -> None:
        sdk = self._sdk or import_sdk("xarm.wrapper", backend="xarm", package="xarm-python-sdk", extra="xarm")
        host = self.config.hostname
        try:
            api = sdk.XArmAPI(host, is_radian=True)
        except Exception as e:  # noqa: BLE001 - the SDK raises on some network errors, logs on others
            raise ArmError(f"cannot connect to the xArm at {host}: {e}") from e
        if not api.connected:
            raise ArmError(f"cannot connect to the xArm at {host} (SDK reports not connected)")
        if api.error_code:
            api.disconnect()
            raise ArmError(
                f"xArm at {host} has controller error {api.error_code}: see xarm_api_code.md, clear it "
                "(xArm Studio or clean_error) and connect again"
            )
        self._api = api
        self._enable()
        self.gripper = (
            XArmGripper(api, self.config) if self.config.gripper and self.hw.gripper_joint else None
        )

    def _enable(self) -> None:
        """The SDK's documented order for servo control: enable, servo mode, motion state."""
        api = self._api
        _check(api, "motion_enable(True)", api.motion_enable(enable=True))
        _check(api, "set_mode(1)", api.set_mode(SERVO_MODE))
        _check(api, "set_state(0)", api.set_state(state=0))
        deadline = time.monotonic() + self.config.mode_timeout_s
        while api.mode != SERVO_MODE or api.state not in (1, 2):
            if time.monotonic() > deadline:
                raise ArmError(
                    f"xArm did not enter servo mode within {self.config.mode_timeout_s} s "
                    f"(mode {api.mode}, state {api.state}, error_code {api.error_code})"
                )
            time.sleep(0.01)
        self._need_enable = False

    def disconnect(self) -> None:
        api, self._api, self.gripper = self._api, None, None
        if api is None:
            return
        try:
            if api.connected:
                api.set_state(state=4)  # stop: leave no servo target running
            api.disconnect()
        except Exception as e:  # noqa: BLE001 - best effort
            log.debug("xArm disconnect: %s", e)

    def recover(self) -> None:
        if not self.connected:
            self._api = None
            self.connect()
            return
        api = self._api
        if api.error_code:
            _check(api, "clean_error()", api.clean_error())
        if api.warn_code:
            _check(api, "clean_warn()", api.clean_warn())
        self._enable()

    # -- the fast loop ---------------------------------------------------------------------
    def read(self) -> JointState:
        api = self._require()
        code, states = api.get_joint_states(is_radian=True)
        _check(api, "get_joint_states", code)
        n = self.n_joints
        stamp = time.monotonic()
        return JointState(
            position=np.asarray(states[0][:n], dtype=np.float64),
            stamp=stamp,
            velocity=np.asarray(states[1][:n], dtype=np.float64),
            names=tuple(self.hw.joint_names),
        )

    def _send(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        api = self._require()
        if api.error_code:
            raise ArmError(
                f"xArm controller error {api.error_code} ({STATES.get(api.state, api.state)}): target not sent"
            )
        if api.warn_code and api.warn_code != self._warned:
            self._warned = api.warn_code
            log.warning("xArm controller warning %s", api.warn_code)
        if self._need_enable:
            self._enable()
        _check(api, "set_servo_angle_j", api.set_servo_angle_j(q.tolist(), is_radian=True))
        return q.copy()

    def stop(self) -> None:
        if not self.connected:
            return
        _check(self._api, "set_state(4)", self._api.set_state(state=4))
        self._need_enable = True  # servo mode and motion state must be set again before the next target

    def _require(self):
        if self._api is None or not self._api.connected:
            raise ArmError(f"xArm at {self.config.hostname}: not connected")
        return self._api

    def status(self) -> dict[str, Any]:
        api = self._api
        if api is None or not api.connected:
            return {
                "connected": False,
                "mode": "disconnected",
                "faults": [],
                "protective_stop": False,
                "hostname": self.config.hostname,
            }
        err, warn = int(api.error_code or 0), int(api.warn_code or 0)
        return {
            "connected": True,
            "mode": f"{MODES.get(api.mode, api.mode)}, {STATES.get(api.state, api.state)}",
            "faults": [f"controller error {err}"] if err else [],
            "warnings": [f"controller warning {warn}"] if warn else [],
            "protective_stop": bool(err) or api.state == 4,
            "hostname": self.config.hostname,
        }
