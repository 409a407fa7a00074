"""Hand-eye calibration: where the camera is on the gripper (eye-in-hand) or in the robot base
frame (eye-to-hand), from board images and the arm poses recorded with them.

Data: a folder of images, and beside each image ``<stem>.json`` holding the arm pose at that
instant: ``{"T_base_gripper": 4x4 row-major}`` (the flange/gripper frame in the robot base frame,
metres, i.e. forward kinematics). The arm must stand still while the image is taken.

Both setups are the same equation ``A_i X B_i = Y`` (A_i from the arm, B_i the board pose in the
camera from ``solvePnP``, X and Y unknown):

- eye-in-hand: ``T_base_gripper_i  X  T_cam_board_i = T_base_board`` with ``X = T_gripper_cam``;
- eye-to-hand: ``T_gripper_base_i  X  T_cam_board_i = T_gripper_board`` with ``X = T_base_cam``,

so eye-to-hand is eye-in-hand with the arm poses inverted (as OpenCV's documentation says).
Solvers: ``cv2.calibrateHandEye`` (Tsai, Park, Horaud, Andreff, Daniilidis) and
``cv2.calibrateRobotWorldHandEye`` (Shah, Li), which also returns Y.

Residuals written with the result: how well one fixed Y explains every view, as the spread of
the per-view ``Y_i`` (mm, degrees) and as the reprojection error of the board corners through
the whole chain (pixels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robot_policy.calibration.board import BoardConfig, cv2_module
from robot_policy.calibration.detect import BoardDetector, Detection, DetectionConfig
from robot_policy.calibration.intrinsics import CalibrationError, load_images
from robot_policy.camera_model import Intrinsics, invert_pose, pose_matrix

POSE_KEY = "T_base_gripper"
"""Key of the 4x4 arm pose in the JSON file saved beside each image."""

Setup = Literal["eye_in_hand", "eye_to_hand"]


def _methods() -> dict[str, tuple[str, int]]:
    cv2 = cv2_module()
    return {
        "tsai": ("hand_eye", cv2.CALIB_HAND_EYE_TSAI),
        "park": ("hand_eye", cv2.CALIB_HAND_EYE_PARK),
        "horaud": ("hand_eye", cv2.CALIB_HAND_EYE_HORAUD),
        "andreff": ("hand_eye", cv2.CALIB_HAND_EYE_ANDREFF),
        "daniilidis": ("hand_eye", cv2.CALIB_HAND_EYE_DANIILIDIS),
        "shah": ("robot_world", cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH),
        "li": ("robot_world", cv2.CALIB_ROBOT_WORLD_HAND_EYE_LI),
    }


METHODS = ("tsai", "park", "horaud", "andreff", "daniilidis", "shah", "li")
"""Solver names (``--method``)."""


@dataclass
class HandEyeResult:
    """A hand-eye calibration and the evidence for it."""

    setup: str
    """``eye_in_hand`` (``T`` is the camera in the gripper frame) or ``eye_to_hand`` (camera in the base frame)."""
    T: np.ndarray
    """4x4: ``T_gripper_cam`` (eye-in-hand) or ``T_base_cam`` (eye-to-hand), OpenCV camera axes, metres."""
    T_other: np.ndarray
    """4x4 second unknown: ``T_base_board`` (eye-in-hand) or ``T_gripper_board`` (eye-to-hand)."""
    method: str
    """Solver used."""
    views_used: list[str]
    views_rejected: list[dict[str, str]]
    residuals: dict[str, Any] = field(default_factory=dict)
    """``translation_rms_mm``, ``rotation_rms_deg`` (spread of the per-view board pose), ``reprojection_rms_px``,
    and ``per_view`` values."""

    @property
    def frame_names(self) -> tuple[str, str]:
        return (
            ("T_gripper_cam", "T_base_board")
            if self.setup == "eye_in_hand"
            else ("T_base_cam", "T_gripper_board")
        )

    def to_json(self, board: BoardConfig, intrinsics: Intrinsics, data: dict[str, Any] | None = None) -> dict:
        a, b = self.frame_names
        return {
            "setup": self.setup,
            a: self.T,
            b: self.T_other,
            "method": self.method,
            "views_used": self.views_used,
            "views_rejected": self.views_rejected,
            "residuals": self.residuals,
            "data": {"board": board.to_dict(), "intrinsics": intrinsics.to_dict(), **(data or {})},
        }


def load_views(folder: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB image, T_base_gripper) for every image in ``folder`` with its pose JSON beside it."""
    folder = Path(folder)
    out = []
    for name, img in load_images(folder):
        pose_file = folder / (Path(name).stem + ".json")
        if not pose_file.is_file():
            raise CalibrationError(
                f"{folder / name} has no arm pose: expected {pose_file} with "
                f'{{"{POSE_KEY}": [[...4x4 row-major, metres...]]}}'
            )
        out.append((name, img, read_pose(pose_file)))
    return out


def read_pose(path: str | Path) -> np.ndarray:
    data = json.loads(Path(path).read_text())
    if POSE_KEY not in data:
        raise CalibrationError(f"{path}: missing {POSE_KEY!r} (the gripper pose in the base frame, 4x4)")
    T = np.asarray(data[POSE_KEY], dtype=np.float64)
    if T.shape != (4, 4) or not np.allclose(T[3], [0, 0, 0, 1]):
        raise CalibrationError(f"{path}: {POSE_KEY} must be a 4x4 homogeneous matrix, got {data[POSE_KEY]!r}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise CalibrationError(f"{path}: {POSE_KEY} rotation is not orthonormal (det {np.linalg.det(R):.4f})")
    return T


def write_pose(path: str | Path, T_base_gripper: np.ndarray) -> None:
    """Save an arm pose beside an image (the format :func:`load_views` reads)."""
    Path(path).write_text(json.dumps({POSE_KEY: np.asarray(T_base_gripper).tolist()}))


def board_pose(det: Detection, intr: Intrinsics) -> np.ndarray:
    """``T_cam_board`` from one detection (iterative PnP refined with Levenberg-Marquardt)."""
    cv2 = cv2_module()
    obj = det.object_points.astype(np.float64)
    img = det.corners.astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, intr.K, intr.dist, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise CalibrationError(f"view {det.name}: solvePnP failed")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, intr.K, intr.dist, rvec, tvec)
    return pose_matrix(cv2.Rodrigues(rvec)[0], tvec)


def calibrate_hand_eye(
    views: list[tuple[str, np.ndarray, np.ndarray]],
    board: BoardConfig,
    intrinsics: Intrinsics,
    setup: Setup = "eye_in_hand",
    method: str = "park",
    detection: DetectionConfig | None = None,
    min_views: int = 5,
) -> HandEyeResult:
    """Solve for the camera mount from (name, image, T_base_gripper) views."""
    if setup not in ("eye_in_hand", "eye_to_hand"):
        raise ValueError(f"setup must be 'eye_in_hand' or 'eye_to_hand', got {setup!r}")
    methods = _methods()
    if method not in methods:
        raise ValueError(f"unknown hand-eye method {method!r}; known: {list(methods)}")
    detector = BoardDetector(board, detection)
    used, rejected, A, B, dets = [], [], [], [], []
    for name, img, T_base_gripper in views:
        if img.shape[1] != intrinsics.width or img.shape[0] != intrinsics.height:
            raise CalibrationError(
                f"view {name} is {img.shape[1]}x{img.shape[0]} but the intrinsics are for "
                f"{intrinsics.width}x{intrinsics.height}"
            )
        det = detector.detect(img, name)
        if not det.ok:
            rejected.append({"view": name, "reason": det.reason})
            continue
        used.append(name)
        dets.append(det)
        A.append(T_base_gripper if setup == "eye_in_hand" else invert_pose(T_base_gripper))
        B.append(board_pose(det, intrinsics))
    if len(used) < min_views:
        raise CalibrationError(
            f"only {len(used)} usable views, need {min_views}; rejected: {rejected[:10]}. Move the arm "
            "through poses that rotate about different axes (>= 15 degrees apart), board in view and in focus."
        )
    solver, flag = methods[method]
    X, Y = _SOLVERS[solver](A, B, flag)
    residuals = _residuals(A, B, X, Y, dets, intrinsics, used)
    return HandEyeResult(setup, X, Y, method, used, rejected, residuals)


def _solve_hand_eye(A, B, flag):
    cv2 = cv2_module()
    R, t = cv2.calibrateHandEye(
        [a[:3, :3] for a in A],
        [a[:3, 3] for a in A],
        [b[:3, :3] for b in B],
        [b[:3, 3] for b in B],
        method=flag,
    )
    X = pose_matrix(R, t)
    # Y from every view, averaged: the board in the base (eye-in-hand) / gripper (eye-to-hand) frame.
    return X, _mean_pose([a @ X @ b for a, b in zip(A, B)])


def _solve_robot_world(A, B, flag):
    # OpenCV's AX = ZB with A = T_cam_world (board), B = T_gripper_base: here "world" is the board
    # and "base -> gripper" is our A inverted, so Z = T_cam_gripper = X^-1 and X_cv = T_board_base = Y^-1.
    cv2 = cv2_module()
    Binv = [invert_pose(a) for a in A]
    R_bw, t_bw, R_gc, t_gc = cv2.calibrateRobotWorldHandEye(
        [b[:3, :3] for b in B],
        [b[:3, 3] for b in B],
        [bi[:3, :3] for bi in Binv],
        [bi[:3, 3] for bi in Binv],
        method=flag,
    )
    X = invert_pose(pose_matrix(R_gc, t_gc))
    Y = invert_pose(pose_matrix(R_bw, t_bw))
    return X, Y


_SOLVERS = {"hand_eye": _solve_hand_eye, "robot_world": _solve_robot_world}


def _mean_pose(Ts: list[np.ndarray]) -> np.ndarray:
    """Chordal mean of rotations (SVD projection of the summed matrices), mean of translations."""
    M = sum(T[:3, :3] for T in Ts)
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    return pose_matrix(R, np.mean([T[:3, 3] for T in Ts], axis=0))


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix (degrees)."""
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _residuals(A, B, X, Y, dets, intr: Intrinsics, names) -> dict[str, Any]:
    cv2 = cv2_module()
    dt, dr, rp = [], [], []
    sq, n = 0.0, 0
    for a, b, det in zip(A, B, dets):
        Yi = a @ X @ b
        dt.append(float(np.linalg.norm(Yi[:3, 3] - Y[:3, 3]) * 1000.0))
        dr.append(rotation_angle_deg(Y[:3, :3].T @ Yi[:3, :3]))
        # The board pose this view should have seen if X and Y were exact, reprojected.
        T_cam_board = invert_pose(a @ X) @ Y
        rvec, _ = cv2.Rodrigues(T_cam_board[:3, :3])
        proj, _ = cv2.projectPoints(
            det.object_points.astype(np.float64), rvec, T_cam_board[:3, 3], intr.K, intr.dist
        )
        err = proj.reshape(-1, 2) - det.corners
        e2 = float((err**2).sum())
        rp.append(float(np.sqrt(e2 / len(err))))
        sq, n = sq + e2, n + len(err)
    return {
        "translation_rms_mm": float(np.sqrt(np.mean(np.square(dt)))),
        "rotation_rms_deg": float(np.sqrt(np.mean(np.square(dr)))),
        "reprojection_rms_px": float(np.sqrt(sq / n)),
        "per_view": {
            name: {"translation_mm": t, "rotation_deg": r, "reprojection_px": p}
            for name, t, r, p in zip(names, dt, dr, rp)
        },
    }
