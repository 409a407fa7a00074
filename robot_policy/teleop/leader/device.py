"""Leader arm teleop: a GELLO-style Dynamixel arm or a LeRobot SO-101 leader (Feetech), mapped
joint-to-joint onto the follower with per-joint signs and offsets from a calibration file.

``intervene: always`` gives the leader control the whole time (demonstrations). ``intervene:
motion`` lets a policy run while the leader rests and hands control to the human when they move
it: the leader must first be brought within ``takeover_tolerance`` of the arm's measured pose,
so taking over never yanks the arm across the workspace; control returns after the leader
rests ``release_after_s``.

Bus hiccups (one timed-out or corrupt reply) reuse the last reading and are counted; after
``max_failures`` in a row, or when the serial port itself fails, :class:`DeviceDisconnected`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robot_policy.config import ConfigError
from robot_policy.teleop.base import (
    DeviceDisconnected,
    TeleopCommand,
    TeleopConfig,
    TeleopDevice,
    TeleopError,
    register_teleop,
)
from robot_policy.teleop.leader.bus import SERVO_BUSES, BusError, BusLost, ServoBus
from robot_policy.teleop.leader.calibration import LeaderCalibration, load_calibration


@dataclass
class LeaderConfig(TeleopConfig):
    """A leader arm on a serial servo bus."""

    calibration: str = ""
    """Calibration JSON (``robot-policy teleop calibrate-leader``); required."""
    port: str = "/dev/ttyUSB0"
    """Serial port of the bus adapter (U2D2 for Dynamixel, the Feetech board for SO-101)."""
    baudrate: int = 1_000_000
    """Bus baud rate (both defaults: 1 Mbps)."""
    intervene: Literal["always", "motion"] = "always"
    """``always``: the leader drives; ``motion``: the human takes over by moving it (see above)."""
    motion_threshold: float = 0.03
    """``motion``: joint motion (rad, largest joint) since the leader last rested that counts as taking over."""
    release_after_s: float = 0.5
    """``motion``: control returns to the policy after the leader rests this long (s)."""
    takeover_tolerance: float = 0.25
    """``motion``: the leader must be this close (rad, largest joint) to the arm to take over."""
    max_failures: int = 5
    """Failed bus reads in a row before the leader counts as disconnected."""

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise TeleopError(f"leader max_failures must be >= 1, got {self.max_failures}")
        if self.motion_threshold <= 0 or self.takeover_tolerance <= 0 or self.release_after_s < 0:
            raise TeleopError(
                "leader motion_threshold and takeover_tolerance must be > 0, release_after_s >= 0"
            )


@register_teleop("leader")
class LeaderDevice(TeleopDevice):
    """Leader arm (GELLO Dynamixel or SO-101 Feetech), joint to joint via a calibration file.

    ``sdk``: the servo SDK module (tests pass the real one on an emulated bus)."""

    config_class = LeaderConfig
    extra = "teleop"
    help = (
        "leader arm: the follower copies its joints (intervene=motion: move it, aligned with the arm,\n"
        "  to take control; let it rest to hand back)"
    )
    needs_observation = True

    def __init__(self, config: LeaderConfig, hw, sdk=None, calibration: LeaderCalibration | None = None):
        super().__init__(config, hw)
        self._sdk = sdk
        self.cal = calibration
        self.bus: ServoBus | None = None
        self.raw: np.ndarray | None = None
        self.failures = 0
        self.intervening = False
        self._rest: np.ndarray | None = None  # leader joints where it last rested
        self._last_motion = -np.inf
        self.gripper = config.gripper_start

    def connect(self) -> None:
        if self.cal is None:
            if not self.config.calibration:
                raise ConfigError(
                    "leader teleop needs a calibration file (device option calibration: PATH); create one "
                    "with `robot-policy teleop calibrate-leader`"
                )
            self.cal = load_calibration(self.config.calibration, self.hw.name, self.n_joints)
        bus_cls = SERVO_BUSES.get(self.cal.bus)
        bus = bus_cls(self.config.port, self.config.baudrate, self.cal.ids, sdk=self._sdk)
        bus.open()
        self.bus = bus
        self.raw = self._read_raw(first=True)
        self.connected = True
        self.stats.extra.update(bus=self.cal.bus, port=self.config.port)

    def disconnect(self) -> None:
        if self.bus is not None:
            self.bus.close()
        self.bus = None
        self.connected = False

    def reset(self, seed: int | None = None) -> None:
        self.intervening = False
        self._rest = None

    def _lost(self, why: str) -> DeviceDisconnected:
        self.connected = False
        if self.bus is not None:
            self.bus.close()
            self.bus = None
        return DeviceDisconnected(
            f"leader arm on {self.config.port} stopped answering ({why}): the arm holds where it is. "
            "Check its power and USB cable, then restart the teleop"
        )

    def _read_raw(self, first: bool = False) -> np.ndarray:
        if self.bus is None:
            raise TeleopError("leader arm is not connected; call connect() first")
        try:
            raw = self.bus.read_radians()
        except BusLost as e:
            raise self._lost(str(e)) from e
        except BusError as e:
            self.failures += 1
            self.stats.bad(str(e))
            if first or self.failures >= self.config.max_failures:
                raise self._lost(f"{self.failures} failed reads in a row; last: {e}") from e
            return self.raw
        self.failures = 0
        self.stats.reports += 1
        return raw

    def read(self, obs=None) -> TeleopCommand:
        self.raw = self._read_raw()
        q, grip = self.cal.to_joints(self.raw)
        if grip is not None:
            self.gripper = grip
        now = time.monotonic()
        c = self.config
        if c.intervene == "always":
            self.intervening = True
        else:
            self._motion(q, now, obs)
        self.stats.reads += 1
        return TeleopCommand(
            stamp=now,
            joints=q if self.intervening else None,
            gripper=self.gripper,
            intervening=self.intervening,
        )

    def _motion(self, q: np.ndarray, now: float, obs) -> None:
        c = self.config
        if self._rest is None:
            self._rest = q.copy()
        if np.max(np.abs(q - self._rest)) > c.motion_threshold:
            self._last_motion = now
            self._rest = q.copy()
            if not self.intervening:
                arm = None if obs is None else obs.get("joint_pos")
                gap = np.inf if arm is None else float(np.max(np.abs(q - np.asarray(arm)[: len(q)])))
                if gap <= c.takeover_tolerance:
                    self.intervening = True
                else:
                    self.stats.extra["takeover_refused"] = self.stats.extra.get("takeover_refused", 0) + 1
                    self.stats.extra["last_refusal"] = (
                        f"leader is {gap:.2f} rad from the arm (limit {c.takeover_tolerance}): align it first"
                    )
        if self.intervening and now - self._last_motion > c.release_after_s:
            self.intervening = False
