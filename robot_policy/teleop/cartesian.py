"""Cartesian teleop: an end-effector twist or pose -> absolute joint targets.

A twist (SpaceMouse, gamepad) is integrated into a target pose that starts at the arm's
measured end-effector pose when the human takes control (so taking over never jumps), the
target position is clamped to a workspace box, and the project's IK
(:class:`robot_policy.hardware.kinematics.PoseSolver`, the solver behind ``robot_node``'s
``target_pose``) turns it into joint targets seeded from the previous solution. An unreachable
target is refused: the joints stay where they were and the pose target falls back to the last
reachable one (counted in ``unreachable``). The joint target then goes, like every command,
through the robot's safety layer (joint and velocity limits, watchdog, e-stop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_policy.hardware.config import HardwareConfig
from robot_policy.teleop.base import TeleopCommand, TeleopError


@dataclass
class CartesianConfig:
    """Limits of Cartesian teleop (``teleop_node`` parameters ``workspace_lower`` / ``workspace_upper``)."""

    workspace_lower: list[float] = field(default_factory=lambda: [0.2, -0.45, 0.01])
    """Lowest end-effector position (x, y, z) in the robot base frame (m). The default suits the
    Panda on the sim tabletop (table top at z = 0); set it for your cell."""
    workspace_upper: list[float] = field(default_factory=lambda: [0.8, 0.45, 0.7])
    """Highest end-effector position (x, y, z), m."""
    max_linear: float = 0.25
    """Largest end-effector speed accepted from a device (m/s); faster twists are scaled down."""
    max_angular: float = 1.0
    """Largest end-effector rotation speed (rad/s)."""
    max_dt: float = 0.2
    """A twist is integrated over at most this long (s): a stalled loop must not jump on resume."""

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_lower, float), np.asarray(self.workspace_upper, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise TeleopError(
                f"workspace_lower {self.workspace_lower} must be 3 values each below workspace_upper "
                f"{self.workspace_upper} (x, y, z in metres)"
            )
        if self.max_linear <= 0 or self.max_angular <= 0 or self.max_dt <= 0:
            raise TeleopError("cartesian max_linear, max_angular and max_dt must be > 0")


def _rotvec_quat(w: np.ndarray) -> np.ndarray:
    """Rotation vector -> quaternion (w, x, y, z)."""
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = w / angle
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternions (w, x, y, z)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


class CartesianMapper:
    """Twist / pose commands -> arm joint targets. ``solver``: ``fk(q) -> (pos, quat)`` and
    ``solve(q, pos, quat) -> q`` (ValueError when unreachable); default the robot's PoseSolver."""

    def __init__(
        self, hw: HardwareConfig, config: CartesianConfig | None = None, solver=None, site: str = "tcp"
    ):
        self.hw = hw
        self.cfg = config or CartesianConfig()
        self.n = len(hw.joint_names)
        self._solver = solver
        self._site = site
        self.lower = np.asarray(self.cfg.workspace_lower, dtype=np.float64)
        self.upper = np.asarray(self.cfg.workspace_upper, dtype=np.float64)
        self.pos: np.ndarray | None = None
        self.quat: np.ndarray | None = None
        self.q: np.ndarray | None = None
        self.unreachable = 0
        self.clamped = 0
        self.last_error = ""

    @property
    def solver(self):
        if self._solver is None:
            from robot_policy.hardware.kinematics import PoseSolver

            self._solver = PoseSolver(self.hw, self._site)
        return self._solver

    def reset(self) -> None:
        """Forget the target: the next command starts from the arm's measured pose."""
        self.pos = self.quat = self.q = None

    def sync(self, q_measured: np.ndarray) -> None:
        q = np.asarray(q_measured, dtype=np.float64)[: self.n].copy()
        self.pos, self.quat = self.solver.fk(q)
        self.q = q

    def joints(self, cmd: TeleopCommand, q_measured: np.ndarray | None, dt: float) -> np.ndarray | None:
        """Arm joint targets for a twist or pose command (None: nothing to command yet)."""
        if cmd.kind not in ("twist", "pose"):
            raise TeleopError(f"CartesianMapper takes twist or pose commands, got {cmd.kind}")
        if self.q is None:
            if q_measured is None:
                return None
            self.sync(q_measured)
        if cmd.kind == "twist":
            v, w = cmd.twist[:3], cmd.twist[3:]
            lin, ang = float(np.linalg.norm(v)), float(np.linalg.norm(w))
            if lin > self.cfg.max_linear:
                v = v * (self.cfg.max_linear / lin)
            if ang > self.cfg.max_angular:
                w = w * (self.cfg.max_angular / ang)
            dt = float(np.clip(dt, 0.0, self.cfg.max_dt))
            pos = self.pos + v * dt
            quat = quat_mul(_rotvec_quat(w * dt), self.quat)  # angular velocity in the base frame
        else:
            pos, quat = cmd.pose
        quat = quat / np.linalg.norm(quat)
        clipped = np.clip(pos, self.lower, self.upper)
        if not np.array_equal(clipped, pos):
            self.clamped += 1
        try:
            q = self.solver.solve(self.q, clipped, quat)
        except ValueError as e:
            self.unreachable += 1
            self.last_error = str(e)
            return self.q.copy()
        self.pos, self.quat, self.q = clipped, quat, np.asarray(q, dtype=np.float64)
        return self.q.copy()

    def status(self) -> dict[str, object]:
        return {
            "workspace_clamped": self.clamped,
            "unreachable": self.unreachable,
            "last_ik_error": self.last_error,
        }
