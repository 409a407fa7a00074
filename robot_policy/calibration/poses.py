"""Where to move the arm for a hand-eye capture: a set of views of the board with rotation diversity.

Hand-eye solvers (Tsai, Park, ...) need the arm to rotate between views about axes that are
not parallel; pure translations, or rotations about one axis, leave the solution undetermined.
The guided capture plans in two steps:

1. **Bootstrap** (:func:`bootstrap_poses`): small rotations of the gripper about its own x, y and
   z axes around the nominal pose (where the user put the arm, camera seeing the board). From
   these and the nominal view a rough hand-eye solve gives the camera mount and the board pose
   to centimetres: enough to aim.
2. **Views** (:func:`plan_views`): the board as the camera should see it (``T_cam_board``): facing
   the camera, centred near the optical axis at a chosen distance, then tilted by 15-35 degrees
   about in-plane axes spread around the circle and rolled about the line of sight by up to
   30 degrees. The same list serves both mounts (:func:`gripper_poses` turns it into arm
   poses through the rough solve): eye-in-hand moves the camera around the fixed board,
   eye-to-hand moves the held board in front of the fixed camera. The board's in-image rotation
   starts from the nominal view's, so the wrist stays near where the user left it.

:func:`rotation_spread` measures what a set of poses offers the solver (the spread of the
relative rotation axes), so a poor set is reported rather than silently solved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_policy.camera_model import invert_pose, pose_matrix
from robot_policy.config import ConfigError


@dataclass
class ViewPlan:
    """How the guided capture spreads its views."""

    views: int = 16
    """Views in the main set (after the bootstrap views); 15-25 is typical."""
    min_tilt_deg: float = 15.0
    """Smallest tilt of the board away from facing the camera (degrees)."""
    max_tilt_deg: float = 35.0
    """Largest tilt (degrees); tilts are spread evenly between the two."""
    max_roll_deg: float = 30.0
    """Largest rotation about the line of sight, either way (degrees)."""
    distance_m: float = 0.0
    """Camera-to-board-centre distance of the views (m); 0: as at the nominal pose."""
    distance_spread: float = 0.15
    """Views vary the distance by up to this fraction either way."""
    max_offset_deg: float = 8.0
    """The board centre is placed up to this far off the optical axis (degrees), so the corners
    of the image are covered too (what intrinsics need)."""
    bootstrap_deg: float = 8.0
    """Rotation of each bootstrap view about the gripper's own axes (degrees)."""
    seed: int = 0
    """Seed of the jitter in azimuths, rolls, distances and offsets."""

    def __post_init__(self):
        if self.views < 3:
            raise ConfigError(f"view plan: views must be >= 3, got {self.views}")
        if not 0.0 <= self.min_tilt_deg <= self.max_tilt_deg < 80.0:
            raise ConfigError(
                f"view plan: need 0 <= min_tilt_deg <= max_tilt_deg < 80, got {self.min_tilt_deg}, "
                f"{self.max_tilt_deg}"
            )
        if not 0.0 <= self.max_roll_deg <= 90.0:
            raise ConfigError(f"view plan: max_roll_deg must be in [0, 90], got {self.max_roll_deg}")
        if self.distance_m < 0 or not 0.0 <= self.distance_spread < 0.9:
            raise ConfigError(
                f"view plan: distance_m must be >= 0 and distance_spread in [0, 0.9), got "
                f"{self.distance_m}, {self.distance_spread}"
            )
        if not 0.0 < self.bootstrap_deg <= 30.0:
            raise ConfigError(f"view plan: bootstrap_deg must be in (0, 30], got {self.bootstrap_deg}")


def rot(axis, degrees: float) -> np.ndarray:
    """3x3 rotation about ``axis`` by ``degrees`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    th = np.radians(degrees)
    K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(th) * K + (1.0 - np.cos(th)) * K @ K


def bootstrap_poses(T_base_gripper: np.ndarray, degrees: float) -> list[tuple[str, np.ndarray]]:
    """(name, pose): the nominal gripper pose rotated about its own x, y (both ways) and z axes."""
    out = []
    for name, axis, sign in (("x+", 0, 1), ("x-", 0, -1), ("y+", 1, 1), ("y-", 1, -1), ("z+", 2, 1)):
        T = np.asarray(T_base_gripper, dtype=np.float64).copy()
        T[:3, :3] = T[:3, :3] @ rot(np.eye(3)[axis], sign * degrees)
        out.append((f"bootstrap_{name}", T))
    return out


def plan_views(
    T_cam_board_nominal: np.ndarray, board_size: tuple[float, float], plan: ViewPlan, scale: float = 1.0
) -> list:
    """Desired ``T_cam_board`` of every main view (OpenCV camera axes, board frame at its corner).

    ``T_cam_board_nominal``: the board as seen at the nominal pose (distance and in-image
    rotation are taken from it); ``board_size``: (width, height) of the chessboard area (m);
    ``scale``: tilts and rolls multiplied by it (the same views, gentler: a fallback for the
    ones out of the arm's reach).
    """
    rng = np.random.default_rng(plan.seed)
    T0 = np.asarray(T_cam_board_nominal, dtype=np.float64)
    half = np.array([board_size[0] / 2, board_size[1] / 2, 0.0])
    center0 = T0[:3, :3] @ half + T0[:3, 3]
    dist = plan.distance_m or float(np.linalg.norm(center0))
    # Facing the camera (board z along the optical axis), in-image rotation as at the nominal view.
    x = T0[:3, 0] * [1.0, 1.0, 0.0]
    x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-6 else np.array([1.0, 0.0, 0.0])
    R_face = np.stack([x, np.cross([0.0, 0.0, 1.0], x), [0.0, 0.0, 1.0]], axis=1)
    n = plan.views
    tilts = np.linspace(plan.min_tilt_deg, plan.max_tilt_deg, n)[rng.permutation(n)]
    out = []
    for k in range(n):
        az = 2 * np.pi * k / n + rng.uniform(-0.2, 0.2)
        axis = np.array([np.cos(az), np.sin(az), 0.0])
        roll = plan.max_roll_deg * (1.0 if k % 2 else -1.0) * rng.uniform(0.3, 1.0)
        R = rot([0.0, 0.0, 1.0], scale * roll) @ rot(axis, scale * tilts[k]) @ R_face
        off = np.radians(rng.uniform(0.0, plan.max_offset_deg))
        psi = rng.uniform(0.0, 2 * np.pi)
        direction = np.array([np.tan(off) * np.cos(psi), np.tan(off) * np.sin(psi), 1.0])
        d = dist * (1.0 + rng.uniform(-plan.distance_spread, plan.distance_spread))
        center = d * direction / np.linalg.norm(direction)
        out.append(pose_matrix(R, center - R @ half))
    return out


def gripper_poses(views: list, mount: str, X: np.ndarray, Y: np.ndarray) -> list[np.ndarray]:
    """``T_base_gripper`` that shows the board as in each of ``views`` (``T_cam_board``), from a
    (rough) hand-eye solution: eye-in-hand ``X = T_gripper_cam``, ``Y = T_base_board``;
    eye-to-hand ``X = T_base_cam``, ``Y = T_gripper_board``."""
    if mount == "eye_in_hand":
        return [Y @ invert_pose(V) @ invert_pose(X) for V in views]
    if mount == "eye_to_hand":
        return [X @ V @ invert_pose(Y) for V in views]
    raise ValueError(f"mount must be 'eye_in_hand' or 'eye_to_hand', got {mount!r}")


def rotation_spread(poses: list[np.ndarray]) -> dict[str, float]:
    """What a set of gripper poses offers a hand-eye solver: the relative rotations between
    consecutive and first-to-every poses, their largest angle, and how well their axes span 3-D
    (``axis_spread``: the smallest singular value of the angle-weighted axes over the largest;
    0 means every rotation is about one axis, which leaves the solution undetermined)."""
    axes = []
    angles = []
    Ts = [np.asarray(T, dtype=np.float64) for T in poses]
    pairs = [(Ts[i], Ts[i + 1]) for i in range(len(Ts) - 1)] + [(Ts[0], T) for T in Ts[2:]]
    for a, b in pairs:
        R = a[:3, :3].T @ b[:3, :3]
        angle = float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))
        if angle < 1e-6:
            continue
        w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
        if np.linalg.norm(w) < 1e-9:  # 180 degrees: axis from the symmetric part
            w = np.sqrt(np.clip((np.diag(R) + 1.0) / 2.0, 0.0, None))
        axes.append(angle * w / np.linalg.norm(w))
        angles.append(angle)
    if len(axes) < 2:
        return {"max_rotation_deg": float(np.degrees(max(angles, default=0.0))), "axis_spread": 0.0}
    s = np.linalg.svd(np.asarray(axes), compute_uv=False)
    return {
        "max_rotation_deg": float(np.degrees(max(angles))),
        "axis_spread": float(s[-1] / s[0]) if s[0] > 0 else 0.0,
    }
