"""Calibration: camera intrinsics (ChArUco), hand-eye extrinsics, camera and arm latency.

Results are JSON files under the top-level ``calibration/<setup>/`` (see :mod:`.results`);
``robot-policy calibrate ...`` runs each step offline from saved images and traces, and
:mod:`.capture` (guided hand-eye capture, views planned by :mod:`.poses`) drives an arm through a
``CaptureRig`` (``robot_policy.runtime.calibration_rig`` builds one from a hardware YAML). OpenCV
(``opencv-python`` < 5: 5.x has no ``calibrateHandEye``) is imported only when a function runs.
"""

from robot_policy.calibration.board import BoardConfig, board_image, load_board, save_board_png
from robot_policy.calibration.capture import (
    CaptureConfig,
    CaptureResult,
    CaptureRig,
    run_capture,
    solve_capture,
)
from robot_policy.calibration.detect import BoardDetector, Detection, DetectionConfig
from robot_policy.calibration.hand_eye import HandEyeResult, calibrate_hand_eye, load_views
from robot_policy.calibration.intrinsics import (
    CalibrationError,
    IntrinsicsOptions,
    IntrinsicsResult,
    calibrate_intrinsics,
    load_images,
)
from robot_policy.calibration.latency import ExcitationConfig, LatencyResult, arm_latency, camera_latency
from robot_policy.calibration.poses import ViewPlan
from robot_policy.calibration.results import default_path, read_result, write_result

__all__ = [
    "BoardConfig",
    "BoardDetector",
    "CalibrationError",
    "CaptureConfig",
    "CaptureResult",
    "CaptureRig",
    "Detection",
    "DetectionConfig",
    "ExcitationConfig",
    "HandEyeResult",
    "IntrinsicsOptions",
    "IntrinsicsResult",
    "LatencyResult",
    "ViewPlan",
    "arm_latency",
    "board_image",
    "calibrate_hand_eye",
    "calibrate_intrinsics",
    "camera_latency",
    "default_path",
    "load_board",
    "load_images",
    "load_views",
    "read_result",
    "run_capture",
    "save_board_png",
    "solve_capture",
    "write_result",
]
