"""Cameras: the contract (``base``), host-clock mapping (``clock``), one folder per backend.

Importing this package registers every backend in :data:`CAMERAS`; no backend imports its SDK
(pyrealsense2, OpenCV, MuJoCo) before ``connect()``, so this import needs none of them.

A ``camera_node`` needs only::

    cam = make_camera(backend, options)       # or options_from_hardware(hw.cameras[i])
    cam.connect()
    capture = cam.read()                      # Capture: .color / .depth Frames, .stamp, .number
    info = cam.intrinsics()                   # K, dist, size: CameraInfo
    diag = cam.status()                       # counters, latency, clock offset
    cam.disconnect()
"""

from robot_policy.cameras import realsense, sim, uvc  # noqa: F401 - registers the backends
from robot_policy.cameras.base import (
    CAMERAS,
    Camera,
    CameraConfig,
    CameraError,
    CameraTimeout,
    Capture,
    SDKMissing,
    camera_class,
    camera_config,
    make_camera,
    options_from_hardware,
    register_camera,
)

__all__ = [
    "CAMERAS",
    "Camera",
    "CameraConfig",
    "CameraError",
    "CameraTimeout",
    "Capture",
    "SDKMissing",
    "camera_class",
    "camera_config",
    "make_camera",
    "options_from_hardware",
    "register_camera",
]
