"""Universal Robots (CB3 / e-series) through ur_rtde (``pip install 'robot_policy[ur]'``).

Streaming follows ur_rtde's documented servo loop: every period ``t = initPeriod()``,
``servoJ(q, speed, acceleration, dt, lookahead_time, gain)``, ``waitPeriod(t)``, at the RTDE
frequency (125 Hz CB3, 500 Hz e-series). ``speed``/``acceleration`` are unused by servoJ but
required; ``dt`` is the period; ``lookahead_time`` in [0.03, 0.2] s smooths the target and
``gain`` in [100, 2000] stiffens tracking. ``servoStop`` decelerates and leaves servo mode;
``stopScript`` ends the control script, after which the control interface takes no commands.

Faults: a protective or emergency stop makes servoJ refuse targets (write raises with the
safety mode); recovery waits until the operator cleared it on the pendant, then re-uploads the
control script. A lost connection is rebuilt with new interfaces. No gripper: UR grippers
(Robotiq URCap and others) are separate devices.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig
from robot_policy.robots.base import Arm, ArmConfig, ArmError, import_sdk, register_arm
from robot_policy.types import JointState

log = logging.getLogger("robot_policy.robots.ur_rtde")

SAFETY_MODES = {
    1: "normal",
    2: "reduced",
    3: "protective stop",
    4: "recovery",
    5: "safeguard stop",
    6: "system emergency stop",
    7: "robot emergency stop",
    8: "violation",
    9: "fault",
    10: "validate joint id",
    11: "undefined",
    12: "automatic mode safeguard stop",
    13: "system three-position enabling stop",
}
"""UR safety modes (RTDE ``safety_mode``)."""
SERVO_SPEED = 0.5
SERVO_ACCEL = 0.5
"""servoJ's speed/acceleration arguments: required by the API, not used by the controller."""


@dataclass
class URConfig(ArmConfig):
    """``arm_config:`` of a ``ur_rtde`` hardware config."""

    hostname: str = ""
    """Robot controller IP address."""
    frequency: float = 500.0
    """RTDE frequency (Hz): 500 for e-series, 125 for CB3. Also the servo loop rate."""
    lookahead_time: float = 0.1
    """servoJ lookahead time (s), in [0.03, 0.2]: larger is smoother and lags more."""
    gain: float = 300.0
    """servoJ proportional gain, in [100, 2000]: larger tracks tighter and can oscillate."""
    stop_deceleration: float = 10.0
    """Joint deceleration of servoStop (rad/s^2) on e-stop."""

    def __post_init__(self):
        super().__post_init__()
        if not self.hostname:
            raise ConfigError("arm_config.hostname is empty: give the UR controller's IP address")
        if self.frequency not in (125.0, 500.0):
            raise ConfigError(
                f"arm_config.frequency must be 125 (CB3) or 500 (e-series), got {self.frequency}"
            )
        if not 0.03 <= self.lookahead_time <= 0.2:
            raise ConfigError(
                f"arm_config.lookahead_time must be in [0.03, 0.2] s, got {self.lookahead_time}"
            )
        if not 100 <= self.gain <= 2000:
            raise ConfigError(f"arm_config.gain must be in [100, 2000], got {self.gain}")
        if self.control_hz and self.control_hz != self.frequency:
            raise ConfigError(
                f"arm_config.control_hz ({self.control_hz}) must equal frequency ({self.frequency}) or be 0: "
                "servoJ is paced by the RTDE period"
            )
        if self.stop_deceleration <= 0:
            raise ConfigError("arm_config.stop_deceleration must be > 0")


@register_arm("ur_rtde")
class URArm(Arm):
    """UR arm: servoJ streamed at the RTDE frequency."""

    config_class = URConfig
    extra = "ur"

    def __init__(self, config: URConfig, hw: HardwareConfig, sdk=None):
        """``sdk``: object with ``RTDEControlInterface`` and ``RTDEReceiveInterface`` (the real
        ur_rtde modules by default; tests inject a fake at this boundary)."""
        super().__init__(config, hw)
        if self.n_joints != 6:
            raise ConfigError(
                f"hardware config '{hw.name}': a UR arm has 6 joints, joint_names lists {self.n_joints}"
            )
        self.config: URConfig = config
        self._sdk = sdk
        self._ctrl = None
        self._recv = None
        self._dt = 1.0 / config.frequency
        self._in_servo = False
        self._last_error = ""

    @property
    def native_hz(self) -> float:  # type: ignore[override]
        return self.config.frequency

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        try:
            return (
                self._ctrl is not None and bool(self._ctrl.isConnected()) and bool(self._recv.isConnected())
            )
        except Exception:  # noqa: BLE001 - a dead interface reads as disconnected
            return False

    def _modules(self):
        if self._sdk is not None:
            return self._sdk.RTDEControlInterface, self._sdk.RTDEReceiveInterface
        ctrl = import_sdk("rtde_control", backend="ur_rtde", package="ur-rtde", extra="ur")
        recv = import_sdk("rtde_receive", backend="ur_rtde", package="ur-rtde", extra="ur")
        return ctrl.RTDEControlInterface, recv.RTDEReceiveInterface

    def connect(self) -> None:
        Control, Receive = self._modules()
        host, f = self.config.hostname, self.config.frequency
        try:
            # Receive first: a controller that cannot stream state is not worth uploading a script to.
            recv = Receive(host, f)
            ctrl = Control(host, f)
        except Exception as e:  # noqa: BLE001 - ur_rtde raises RuntimeError on refused connections
            raise ArmError(f"cannot connect to the UR controller at {host}: {e}") from e
        self._ctrl, self._recv, self._in_servo = ctrl, recv, False

    def disconnect(self) -> None:
        ctrl, recv = self._ctrl, self._recv
        self._ctrl = self._recv = None
        self._in_servo = False
        # Documented order: leave servo mode, end the control script, then close both interfaces.
        for what, fn in (
            ("servoStop", lambda: ctrl.servoStop(self.config.stop_deceleration)),
            ("stopScript", lambda: ctrl.stopScript()),
            ("disconnect control", lambda: ctrl.disconnect()),
            ("disconnect receive", lambda: recv.disconnect()),
        ):
            if ctrl is None:
                break
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - best effort on a possibly dead connection
                log.debug("UR %s at disconnect: %s", what, e)

    def recover(self) -> None:
        if not self.connected:
            self._drop()
            self.connect()
        stopped = self._stop_reason()
        if stopped:
            raise ArmError(f"UR is in {stopped}: clear it on the teach pendant; recovery retries until then")
        if not self._ctrl.isProgramRunning():
            if not self._ctrl.reuploadScript():
                raise ArmError("UR: reuploadScript() failed (is the robot in remote control mode?)")
        self._in_servo = False

    def _drop(self) -> None:
        # Interfaces of a lost connection are discarded without further calls.
        self._ctrl = self._recv = None
        self._in_servo = False

    # -- the fast loop ---------------------------------------------------------------------
    def period_start(self) -> Any:
        ctrl = self._ctrl
        if ctrl is None:
            return super().period_start()
        return (ctrl, ctrl.initPeriod())

    def period_wait(self, token: Any, wake: threading.Event) -> None:
        if not isinstance(token, tuple):
            return super().period_wait(token, wake)
        ctrl, t_start = token
        if ctrl is self._ctrl:
            ctrl.waitPeriod(t_start)
        else:  # reconnected during this tick: the old interface's period is void
            wake.wait(self._dt)

    def read(self) -> JointState:
        if self._recv is None or not self._recv.isConnected():
            raise ArmError(f"UR at {self.config.hostname}: RTDE receive connection lost")
        try:
            q = np.asarray(self._recv.getActualQ(), dtype=np.float64)
            dq = np.asarray(self._recv.getActualQd(), dtype=np.float64)
        except Exception as e:  # noqa: BLE001
            raise ArmError(f"UR at {self.config.hostname}: reading the state failed: {e}") from e
        return JointState(position=q, stamp=time.monotonic(), velocity=dq, names=tuple(self.hw.joint_names))

    def _send(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        stopped = self._stop_reason()
        if stopped:
            raise ArmError(f"UR is in {stopped}: target not sent")
        cfg = self.config
        try:
            ok = self._ctrl.servoJ(
                q.tolist(), SERVO_SPEED, SERVO_ACCEL, self._dt, cfg.lookahead_time, cfg.gain
            )
        except Exception as e:  # noqa: BLE001
            self._last_error = str(e)
            raise ArmError(f"UR at {cfg.hostname}: servoJ failed: {e}") from e
        if not ok:
            reason = self._stop_reason() or "control script not running"
            self._last_error = f"servoJ refused: {reason}"
            raise ArmError(f"UR at {cfg.hostname}: servoJ refused the target ({reason})")
        self._in_servo = True
        return q.copy()

    def stop(self) -> None:
        if self._ctrl is None or not self._in_servo:
            return
        try:
            self._ctrl.servoStop(self.config.stop_deceleration)
        except Exception as e:  # noqa: BLE001
            raise ArmError(f"UR at {self.config.hostname}: servoStop failed: {e}") from e
        self._in_servo = False

    def _stop_reason(self) -> str:
        """'' when the robot may move, else the active protective/emergency stop."""
        r = self._recv
        if r.isEmergencyStopped():
            return "emergency stop"
        if r.isProtectiveStopped():
            return "protective stop"
        mode = int(r.getSafetyMode())
        return "" if mode in (1, 2) else SAFETY_MODES.get(mode, f"safety mode {mode}")

    def status(self) -> dict[str, Any]:
        if not self.connected:
            return {
                "connected": False,
                "mode": "disconnected",
                "faults": [self._last_error] if self._last_error else [],
                "protective_stop": False,
                "hostname": self.config.hostname,
            }
        mode = int(self._recv.getSafetyMode())
        protective = bool(self._recv.isProtectiveStopped() or self._recv.isEmergencyStopped())
        return {
            "connected": True,
            "mode": "servo" if self._in_servo else "idle",
            "safety_mode": SAFETY_MODES.get(mode, str(mode)),
            "faults": [SAFETY_MODES.get(mode, str(mode))] if mode not in (1, 2) else [],
            "protective_stop": protective,
            "program_running": bool(self._ctrl.isProgramRunning()),
            "hostname": self.config.hostname,
            "last_error": self._last_error,
        }
