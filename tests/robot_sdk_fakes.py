"""Fakes of the UR RTDE and xArm SDKs at their Python boundary, for arms that cannot be attached here.

They enforce the SDKs' documented contracts so that a backend bug fails a test instead of
passing silently: ranges (servoJ lookahead 0.03-0.2 s and gain 100-2000, xArm joint ranges),
units (xArm angles only with ``is_radian=True``), call order (servoJ inside an
initPeriod/waitPeriod cycle, nothing after stopScript or disconnect, xArm servo motion only after
motion_enable + set_mode(1) + set_state(0), and again after clean_error), vector lengths. A
breach raises :class:`ContractViolation` and is also recorded in ``robot.violations`` (the
controller turns exceptions into faults, so tests assert that list is empty).

The robot side moves to each accepted target within the period and, like the real controllers,
stops (UR protective stop / xArm error) when targets jump faster than the joint speed limit,
judged over a window of commands so scheduling jitter of a loaded test machine is not a jump.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from types import SimpleNamespace

import numpy as np


class ContractViolation(AssertionError):
    """A call the SDK's documentation does not allow."""


class _Robot:
    """Shared robot-side state: joints, network, contract breaches, call log."""

    def __init__(self, hostname: str, q0, max_speed: float):
        self.hostname = hostname
        self.q = np.asarray(q0, dtype=np.float64).copy()
        self.qd = np.zeros_like(self.q)
        self.max_speed = max_speed
        self.up = True
        self.violations: list[str] = []
        self.log: list[tuple] = []
        self.lock = threading.RLock()
        self._window: deque = deque(maxlen=10)  # (time, q) of recent accepted targets

    def violate(self, msg: str):
        self.violations.append(msg)
        raise ContractViolation(msg)

    def too_fast(self, q: np.ndarray, period: float) -> float | None:
        """Joint speed over the recent window if it exceeds the limit, else None; records q."""
        now = time.monotonic()
        w = self._window
        if not w:  # baseline: where the robot is, one period ago
            w.append((now - period, self.q.copy()))
        if w:
            t0, q0 = w[0]
            dt = max(now - t0, period * len(w))
            speed = float(np.max(np.abs(q - q0)) / dt)
            if speed > self.max_speed:
                w.clear()
                return speed
        w.append((now, q.copy()))
        return None

    def calls(self, name: str) -> int:
        return sum(1 for c in self.log if c[0] == name)


# -- UR RTDE ---------------------------------------------------------------------------------
class FakeURRobot(_Robot):
    """A UR controller: safety mode, control script, joints (6)."""

    def __init__(self, hostname: str = "10.0.0.5", q0=(0.0, -1.57, 1.57, -1.57, -1.57, 0.0)):
        super().__init__(hostname, q0, max_speed=math.pi)  # UR5e: 180 deg/s on every joint
        self.safety_mode = 1
        self.program_running = False
        self.interfaces_created = 0

    def protective_stop(self):
        with self.lock:
            self.safety_mode, self.program_running = 3, False
            self.qd[:] = 0.0

    def clear_protective_stop(self):
        with self.lock:
            self.safety_mode = 1

    @property
    def sdk(self) -> SimpleNamespace:
        """What the backend gets instead of the ur_rtde modules."""
        return SimpleNamespace(
            RTDEControlInterface=lambda host, frequency=-1.0, *a, **k: FakeRTDEControl(self, host, frequency),
            RTDEReceiveInterface=lambda host, frequency=-1.0, *a, **k: FakeRTDEReceive(self, host),
        )


def _ur_connect(robot: FakeURRobot, host: str):
    if host != robot.hostname or not robot.up:
        raise RuntimeError(f"ur_rtde: could not connect to {host}: connection refused")


class FakeRTDEControl:
    def __init__(self, robot: FakeURRobot, host: str, frequency: float):
        _ur_connect(robot, host)
        if frequency not in (125.0, 500.0):
            robot.violate(f"RTDEControlInterface frequency {frequency}: 125 (CB3) or 500 (e-series)")
        self.r, self.dt = robot, 1.0 / frequency
        self._connected, self._script_stopped, self._lost = True, False, False
        self._period: float | None = None
        self._servoed_in_period = False
        robot.program_running = robot.safety_mode == 1  # the control script is uploaded at construction
        robot.interfaces_created += 1

    def _alive(self, name: str):
        if not self._connected:
            self.r.violate(f"{name}() after disconnect()")
        if self._script_stopped:
            self.r.violate(f"{name}() after stopScript(): the control script is gone")
        if self._lost or not self.r.up:
            self._lost = True  # a dropped interface stays dropped: reconnect with new interfaces
            raise RuntimeError(f"ur_rtde: {name}: RTDE control connection lost")

    def initPeriod(self):
        if self._period is not None:
            self.r.violate("initPeriod() twice without waitPeriod()")
        self._period = time.monotonic()
        self._servoed_in_period = False
        return self._period

    def waitPeriod(self, t_start):
        if self._period is None or t_start != self._period:
            self.r.violate("waitPeriod() without the token of the preceding initPeriod()")
        time.sleep(max(0.0, self._period + self.dt - time.monotonic()))
        self._period = None

    def servoJ(self, q, speed, acceleration, t, lookahead_time, gain):
        self._alive("servoJ")
        r = self.r
        if self._period is None:
            r.violate("servoJ() outside an initPeriod()/waitPeriod() cycle")
        if self._servoed_in_period:
            r.violate("two servoJ() calls in one period")
        if len(q) != 6:
            r.violate(f"servoJ() needs 6 joint positions, got {len(q)}")
        q = np.asarray(q, dtype=np.float64)
        if not np.isfinite(q).all():
            r.violate(f"servoJ() with non-finite joints {q.tolist()}")
        if not 0.03 <= lookahead_time <= 0.2:
            r.violate(f"servoJ() lookahead_time {lookahead_time} outside [0.03, 0.2]")
        if not 100 <= gain <= 2000:
            r.violate(f"servoJ() gain {gain} outside [100, 2000]")
        if abs(t - self.dt) > 1e-9:
            r.violate(f"servoJ() time {t} is not the control period {self.dt}")
        self._servoed_in_period = True
        with r.lock:
            r.log.append(("servoJ", q.copy()))
            if r.safety_mode != 1 or not r.program_running:
                return False
            if r.too_fast(q, self.dt) is not None:
                r.protective_stop()  # what the controller does on a jump
                return False
            r.qd, r.q = (q - r.q) / self.dt, q
        return True

    def servoStop(self, a=10.0):
        self._alive("servoStop")
        self.r.log.append(("servoStop", a))
        self.r.qd[:] = 0.0
        return True

    def stopScript(self):
        self._alive("stopScript")
        self.r.log.append(("stopScript",))
        self._script_stopped = True
        self.r.program_running = False

    def reuploadScript(self):
        if not self._connected:
            self.r.violate("reuploadScript() after disconnect()")
        self.r.log.append(("reuploadScript",))
        self._script_stopped = False
        self.r.program_running = self.r.safety_mode == 1
        return self.r.program_running

    def isProgramRunning(self):
        if not self._connected:
            self.r.violate("isProgramRunning() after disconnect()")
        return self.r.program_running and not self._script_stopped

    def isConnected(self):
        self._lost = self._lost or not self.r.up
        return self._connected and not self._lost

    def disconnect(self):
        self.r.log.append(("disconnect",))
        self._connected = False


class FakeRTDEReceive:
    def __init__(self, robot: FakeURRobot, host: str):
        _ur_connect(robot, host)
        self.r, self._connected, self._lost = robot, True, False

    def _check(self, name):
        if not self._connected:
            self.r.violate(f"RTDEReceiveInterface.{name}() after disconnect()")

    # A dead connection keeps returning the last values (as ur_rtde does): check isConnected().
    def getActualQ(self):
        self._check("getActualQ")
        return self.r.q.tolist()

    def getActualQd(self):
        self._check("getActualQd")
        return self.r.qd.tolist()

    def getSafetyMode(self):
        self._check("getSafetyMode")
        return self.r.safety_mode

    def isProtectiveStopped(self):
        self._check("isProtectiveStopped")
        return self.r.safety_mode == 3

    def isEmergencyStopped(self):
        self._check("isEmergencyStopped")
        return self.r.safety_mode in (6, 7)

    def isConnected(self):
        self._lost = self._lost or not self.r.up
        return self._connected and not self._lost

    def disconnect(self):
        self._connected = False


# -- xArm ------------------------------------------------------------------------------------
XARM7_RANGES = [  # the SDK's XARM7_X4 joint ranges (rad)
    (-2 * math.pi, 2 * math.pi),
    (-2.059488, 2.094395),
    (-2 * math.pi, 2 * math.pi),
    (-0.191986, 3.92699),
    (-2 * math.pi, 2 * math.pi),
    (-1.692969, math.pi),
    (-2 * math.pi, 2 * math.pi),
]
SPEED_ERROR = 24
"""Controller error code the fake raises for a joint speed jump."""


class FakeXArmRobot(_Robot):
    """An xArm 7 control box: enable flag, mode, state, error/warn codes, gripper."""

    def __init__(
        self, hostname: str = "10.0.0.7", q0=(0.0, 0.0, 0.0, 0.5, 0.0, 0.5, 0.0), period: float = 0.01
    ):
        super().__init__(hostname, q0, max_speed=math.pi)  # 180 deg/s
        self.period = period
        self.enabled = False
        self.mode, self._pending_mode = 0, 0
        self.state = 4  # stopped until set_state(0)
        self.error_code = 0
        self.warn_code = 0
        self.gripper_enabled = False
        self.gripper_mode: int | None = None
        self.gripper_pos = 850.0
        self.apis_created = 0

    def raise_error(self, code: int):
        """A controller error (collision, over-speed...): the arm stops until clean_error + re-enable."""
        with self.lock:
            self.error_code, self.state = code, 4

    @property
    def sdk(self) -> SimpleNamespace:
        return SimpleNamespace(
            XArmAPI=lambda port=None, is_radian=False, **kw: FakeXArmAPI(self, port, is_radian)
        )


class FakeXArmAPI:
    def __init__(self, robot: FakeXArmRobot, port, is_radian=False):
        self.r = robot
        self._open = port == robot.hostname and robot.up  # the SDK logs and reports connected=False
        self.default_is_radian = is_radian
        robot.apis_created += 1

    @property
    def connected(self):
        self._open = self._open and self.r.up  # a dropped connection stays dropped for this object
        return self._open

    error_code = property(lambda self: self.r.error_code)
    warn_code = property(lambda self: self.r.warn_code)
    mode = property(lambda self: self.r.mode)
    state = property(lambda self: self.r.state)

    def _radians(self, name, is_radian):
        if is_radian is not True:
            self.r.violate(f"{name}() without is_radian=True: the SDK's default unit is degrees")

    def motion_enable(self, enable=True, servo_id=None):
        if not self.connected:
            return -1
        self.r.log.append(("motion_enable", enable))
        self.r.enabled = bool(enable)
        return 0

    def set_mode(self, mode=0, detection_param=0):
        if not self.connected:
            return -1
        self.r.log.append(("set_mode", mode))
        self.r._pending_mode = mode  # takes effect with set_state(0), as on the controller
        return 0

    def set_state(self, state=0):
        if not self.connected:
            return -1
        r = self.r
        r.log.append(("set_state", state))
        if state == 0:
            if r.error_code:
                return 1
            if not r.enabled:
                return -2
            r.mode, r.state = r._pending_mode, 2
        elif state == 4:
            r.state = 4
        return 0

    def set_servo_angle_j(self, angles, speed=None, mvacc=None, mvtime=None, is_radian=None, **kwargs):
        if not self.connected:
            return -1
        r = self.r
        self._radians("set_servo_angle_j", is_radian)
        if len(angles) != 7:
            r.violate(f"set_servo_angle_j() needs 7 angles for an xArm 7, got {len(angles)}")
        q = np.asarray(angles, dtype=np.float64)
        if not np.isfinite(q).all():
            r.violate(f"set_servo_angle_j() with non-finite angles {q.tolist()}")
        with r.lock:
            r.log.append(("set_servo_angle_j", q.copy()))
            if r.error_code:
                return 1
            if not r.enabled:
                return -2
            if r.state not in (1, 2):
                return 9
            if r.mode != 1:
                r.violate(f"set_servo_angle_j() in mode {r.mode}: set_mode(1) and set_state(0) first")
            for i, (lo, hi) in enumerate(XARM7_RANGES):
                if not lo - math.radians(0.1) <= q[i] <= hi + math.radians(0.1):
                    return -8
            if r.too_fast(q, r.period) is not None:
                r.raise_error(SPEED_ERROR)
                return 1
            r.qd, r.q, r.state = (q - r.q) / r.period, q, 1
        return 0

    def get_servo_angle(self, servo_id=None, is_radian=None, is_real=False):
        self._radians("get_servo_angle", is_radian)
        return (0 if self.connected else -1), self.r.q.tolist()

    def get_joint_states(self, is_radian=None, num=3):
        self._radians("get_joint_states", is_radian)
        return (0 if self.connected else -1), [self.r.q.tolist(), self.r.qd.tolist(), [0.0] * 7]

    def clean_error(self):
        if not self.connected:
            return -1
        r = self.r
        r.log.append(("clean_error",))
        # The SDK: "need to be manually enabled motion and set state after clean error".
        r.error_code, r.enabled, r.state = 0, False, 4
        return 0

    def clean_warn(self):
        if not self.connected:
            return -1
        self.r.warn_code = 0
        return 0

    def set_gripper_mode(self, mode, **kw):
        if not self.connected:
            return -1
        self.r.gripper_mode = mode
        return 0

    def set_gripper_enable(self, enable, **kw):
        if not self.connected:
            return -1
        if self.r.gripper_mode != 0:
            self.r.violate("set_gripper_enable() before set_gripper_mode(0)")
        self.r.gripper_enabled = bool(enable)
        return 0

    def set_gripper_speed(self, speed, **kw):
        if not self.connected:
            return -1
        if not 1000 <= speed <= 5000:
            self.r.violate(f"set_gripper_speed({speed}) outside [1000, 5000] r/min")
        return 0

    def set_gripper_position(self, pos, wait=False, speed=None, auto_enable=False, timeout=None, **kw):
        if not self.connected:
            return -1
        if not self.r.gripper_enabled:
            self.r.violate("set_gripper_position() before set_gripper_enable(True)")
        if wait:
            self.r.violate("set_gripper_position(wait=True) would block the control loop")
        if not -10 <= pos <= 850:
            self.r.violate(f"set_gripper_position({pos}) outside [-10, 850] pulses")
        self.r.log.append(("set_gripper_position", pos))
        self.r.gripper_pos = float(pos)  # the fake gripper arrives at once
        return 0

    def get_gripper_position(self, **kw):
        return (0 if self.connected else -1), self.r.gripper_pos

    def disconnect(self):
        self.r.log.append(("disconnect",))
        self._open = False
