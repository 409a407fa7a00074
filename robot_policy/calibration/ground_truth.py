"""Measure the calibration's errors against rendered ground truth (``robot-policy calibrate check``).

Each check renders views of the board in :class:`~robot_policy.calibration.synthetic.BoardScene`,
runs the same calibration code a user runs on real images, and compares with the truth the
scene knows: intrinsics from the camera's fovy, the camera mount from the model. The tests use
these functions with fixed seeds and assert the tolerances; docs/calibration.md quotes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_policy.calibration.board import BoardConfig
from robot_policy.calibration.hand_eye import calibrate_hand_eye, rotation_angle_deg
from robot_policy.calibration.intrinsics import IntrinsicsOptions, calibrate_intrinsics
from robot_policy.calibration.synthetic import BoardScene, board_views, orbit_views

DEFAULT_BOARD = BoardConfig(squares=[7, 5], square_length=0.04, marker_length=0.03, dictionary="DICT_5X5_100")
"""The board of ``calibration/boards/charuco_7x5_40mm.yaml``."""


def wrist_views(scene: BoardScene, n: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, T_base_gripper): the gripper carries the "wrist" camera around the fixed board."""
    out = []
    for i, T_world_cam in enumerate(orbit_views(scene.board_center(), n, np.random.default_rng(seed))):
        scene.set_body_pose("gripper", scene.gripper_pose_for(T_world_cam))
        out.append((f"view_{i:03d}.png", scene.render("wrist"), scene.body_pose("gripper")))
    return out


def held_board_views(scene: BoardScene, n: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, T_base_gripper): the gripper ("board" body) moves the board before the fixed camera."""
    out = []
    rng = np.random.default_rng(seed)
    for i, T_world_board in enumerate(board_views(scene.camera_pose("fixed"), scene.board, n, rng)):
        scene.set_body_pose("board", scene.board_body_pose_for(T_world_board))
        out.append((f"view_{i:03d}.png", scene.render("fixed"), scene.body_pose("board")))
    return out


def intrinsics_errors(result, truth) -> dict[str, float]:
    K, Kt = result.intrinsics.K, truth.K
    return {
        "fx_rel_err": float(K[0, 0] / Kt[0, 0] - 1.0),
        "fy_rel_err": float(K[1, 1] / Kt[1, 1] - 1.0),
        "cx_err_px": float(K[0, 2] - Kt[0, 2]),
        "cy_err_px": float(K[1, 2] - Kt[1, 2]),
        "rms_px": float(result.rms),
    }


def pose_errors(T: np.ndarray, T_true: np.ndarray) -> dict[str, float]:
    return {
        "translation_err_mm": float(np.linalg.norm(T[:3, 3] - T_true[:3, 3]) * 1000.0),
        "rotation_err_deg": rotation_angle_deg(T[:3, :3].T @ T_true[:3, :3]),
    }


def check_intrinsics(
    n_views: int = 20, seed: int = 0, width: int = 640, height: int = 480, board: BoardConfig = DEFAULT_BOARD
) -> dict[str, Any]:
    """Calibrate the wrist camera from ``n_views`` rendered views; errors against its fovy."""
    scene = BoardScene(board, width, height)
    try:
        views = [(name, img) for name, img, _ in wrist_views(scene, n_views, seed)]
        result = calibrate_intrinsics(views, board, IntrinsicsOptions())
        return {"views": len(result.views_used), **intrinsics_errors(result, scene.intrinsics("wrist"))}
    finally:
        scene.close()


def check_hand_eye(
    mount: str = "eye_in_hand",
    n_views: int = 16,
    seed: int = 0,
    method: str = "park",
    width: int = 640,
    height: int = 480,
    board: BoardConfig = DEFAULT_BOARD,
) -> dict[str, Any]:
    """Intrinsics then hand-eye from the same rendered views (as a user would); errors of the
    camera mount against the model: ``T_gripper_cam`` (eye-in-hand) or ``T_base_cam`` (eye-to-hand)."""
    scene = BoardScene(board, width, height)
    try:
        if mount == "eye_in_hand":
            views, camera = wrist_views(scene, n_views, seed), "wrist"
            truth = scene.camera_in_body("wrist")
        else:
            views, camera = held_board_views(scene, n_views, seed), "fixed"
            truth = scene.camera_pose("fixed")  # the world is the robot base here
        intr = calibrate_intrinsics([(n, img) for n, img, _ in views], board).intrinsics
        result = calibrate_hand_eye(views, board, intr, mount, method)
        return {
            "mount": mount,
            "method": method,
            "views": len(result.views_used),
            **pose_errors(result.T, truth),
            "spread_mm": result.residuals["translation_rms_mm"],
            "spread_deg": result.residuals["rotation_rms_deg"],
            "reprojection_px": result.residuals["reprojection_rms_px"],
            "intrinsics_fx_rel_err": float(intr.fx / scene.intrinsics(camera).fx - 1.0),
        }
    finally:
        scene.close()
