"""Leader-arm calibration: which servo drives which follower joint, with its sign and offset.

``q_follower[j] = sign[j] * (raw[j] - offset[j])`` with ``raw`` the servo angle in radians
(ticks * 2 pi / ticks_per_rev), as GELLO maps its Dynamixels. The gripper servo maps linearly
from its ``open`` angle (-1) to its ``closed`` angle (+1).

The file is JSON, written by ``robot-policy teleop calibrate-leader`` (leader and follower held
in the same pose) under ``calibration/<setup>/leader.json``::

    {"bus": "dynamixel", "follower": "sim_tabletop",
     "joints": [{"id": 1, "sign": 1, "offset": 3.1416}, ...],
     "gripper": {"id": 8, "open": 3.05, "closed": 3.9}}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robot_policy.config import ConfigError, from_dict


@dataclass
class LeaderJoint:
    """One follower joint's servo."""

    id: int
    """Servo id on the bus."""
    sign: int = 1
    """+1 or -1: the servo turns the follower joint's way or the opposite way."""
    offset: float = 0.0
    """Servo angle (rad) at which the follower joint is at 0."""

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ConfigError(f"leader calibration joint id {self.id}: sign must be 1 or -1, got {self.sign}")


@dataclass
class LeaderGripper:
    """The trigger / gripper servo."""

    id: int
    """Servo id on the bus."""
    open: float = 0.0
    """Servo angle (rad) for a fully open gripper (-1)."""
    closed: float = 1.0
    """Servo angle (rad) for a fully closed gripper (+1)."""

    def __post_init__(self) -> None:
        if self.open == self.closed:
            raise ConfigError(f"leader calibration gripper id {self.id}: open and closed angles are equal")


@dataclass
class LeaderCalibration:
    """A leader arm's mapping to its follower (one entry per follower joint, in joint order)."""

    bus: str
    """Servo bus (``dynamixel`` or ``feetech``)."""
    joints: list[LeaderJoint]
    """One per follower joint, in the hardware config's joint order."""
    gripper: LeaderGripper | None = None
    """The gripper servo, if the leader has one."""
    follower: str = ""
    """Hardware config name the calibration was made for (checked on load)."""
    ticks_per_rev: int = 4096
    """Encoder ticks per revolution."""
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [j.id for j in self.joints] + ([self.gripper.id] if self.gripper else [])
        if len(set(ids)) != len(ids):
            raise ConfigError(f"leader calibration: servo ids repeat: {ids}")

    @property
    def ids(self) -> list[int]:
        return [j.id for j in self.joints] + ([self.gripper.id] if self.gripper else [])

    def to_joints(self, raw: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Servo angles (rad, order of :attr:`ids`) -> (follower joints, gripper in [-1, 1])."""
        n = len(self.joints)
        sign = np.array([j.sign for j in self.joints], dtype=np.float64)
        offset = np.array([j.offset for j in self.joints], dtype=np.float64)
        q = sign * (np.asarray(raw[:n], dtype=np.float64) - offset)
        grip = None
        if self.gripper is not None:
            g = self.gripper
            grip = float(np.clip(2.0 * (raw[n] - g.open) / (g.closed - g.open) - 1.0, -1.0, 1.0))
        return q, grip

    @classmethod
    def from_pose(
        cls,
        bus: str,
        ids: list[int],
        raw: np.ndarray,
        follower_q: np.ndarray,
        signs: list[int],
        follower: str = "",
        snap: float = 0.0,
        gripper: LeaderGripper | None = None,
    ) -> LeaderCalibration:
        """Offsets from one pose where leader and follower agree: ``offset = raw - sign * q``.
        ``snap`` > 0 rounds offsets to multiples of it (GELLO: pi/2, the servo horn positions)."""
        raw = np.asarray(raw, dtype=np.float64)
        q = np.asarray(follower_q, dtype=np.float64)
        if not len(ids) == len(raw) == len(q) == len(signs):
            raise ConfigError(
                f"leader calibration needs one id, reading, follower angle and sign per joint; got "
                f"{len(ids)}, {len(raw)}, {len(q)}, {len(signs)}"
            )
        off = raw - np.asarray(signs, dtype=np.float64) * q
        if snap > 0:
            off = np.round(off / snap) * snap
        joints = [LeaderJoint(int(i), int(s), float(o)) for i, s, o in zip(ids, signs, off)]
        return cls(bus=bus, joints=joints, gripper=gripper, follower=follower)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def load_calibration(path: str | Path, follower: str, n_joints: int) -> LeaderCalibration:
    """Load and check a calibration file against the follower (name and joint count)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"leader calibration {path} does not exist: hold leader and arm in the same pose and run "
            "`robot-policy teleop calibrate-leader --port PORT --out PATH`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"leader calibration {path} is not valid JSON: {e}") from None
    cal = from_dict(LeaderCalibration, data, where=str(path))
    if len(cal.joints) != n_joints:
        raise ConfigError(
            f"leader calibration {path} maps {len(cal.joints)} joints, the follower '{follower}' has "
            f"{n_joints}: calibrate this leader for this robot"
        )
    if cal.follower and cal.follower != follower:
        raise ConfigError(
            f"leader calibration {path} was made for '{cal.follower}', not '{follower}': calibrate again"
        )
    return cal
