"""The pinhole camera model shared by the camera backends and the calibration tools.

``Intrinsics`` (K, distortion, image size, where they came from) and the JSON file format a
calibration writes and a camera reads, plus the conventions that bite: OpenCV's camera axes
(x right, y down, z forward) versus MuJoCo's (x right, y up, looking along -z), and the pixel
centre convention (OpenCV puts pixel centres at integer coordinates, so an ideal centred pinhole
has ``cx = (W - 1) / 2``, not ``W / 2``; checked on rendered MuJoCo images in the calibration tests).

Foundation layer: numpy and json only, so both ``cameras`` and ``calibration`` can import it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MJ_TO_CV = np.diag([1.0, -1.0, -1.0])
"""Rotation from a MuJoCo camera frame (y up, looking along -z) to OpenCV's (y down, along +z):
``R_world_cv = R_world_mj @ MJ_TO_CV`` (the matrix is its own inverse)."""

DISTORTION_MODEL = "plumb_bob"
"""ROS ``CameraInfo.distortion_model`` of OpenCV's 5-coefficient model (k1, k2, p1, p2, k3)."""


class IntrinsicsError(ValueError):
    """An intrinsics file or value is unusable; the message names the file, field and value."""


@dataclass
class Intrinsics:
    """Pinhole intrinsics of one image stream at one image size."""

    K: np.ndarray
    """3x3 camera matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels (OpenCV pixel-centre convention)."""
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    """Distortion coefficients in OpenCV order (k1, k2, p1, p2, k3[, ...]); zeros: none."""
    width: int = 0
    """Image width (pixels) the values are valid for."""
    height: int = 0
    """Image height (pixels) the values are valid for."""
    model: str = DISTORTION_MODEL
    """Distortion model name: ``plumb_bob`` (OpenCV), or the device's own (e.g. RealSense
    ``inverse_brown_conrady``), which a consumer must not feed to OpenCV blindly."""
    source: str = ""
    """Where the values come from: ``calibration:<file>``, ``device:<serial>``, ``mujoco:<camera>``."""

    def __post_init__(self):
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def to_dict(self) -> dict[str, Any]:
        return {
            "K": self.K.tolist(),
            "dist": self.dist.tolist(),
            "image_size": [int(self.width), int(self.height)],
            "distortion_model": self.model,
            "source": self.source,
        }


def pinhole_from_fovy(fovy_deg: float, width: int, height: int, source: str = "") -> Intrinsics:
    """Intrinsics of an ideal pinhole with vertical field of view ``fovy_deg`` (MuJoCo's ``fovy``):
    ``fy = 0.5 H / tan(fovy / 2)``, square pixels, principal point at the image centre."""
    if not 0 < fovy_deg < 180:
        raise IntrinsicsError(f"fovy must be in (0, 180) degrees, got {fovy_deg}")
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return Intrinsics(K=K, dist=np.zeros(5), width=int(width), height=int(height), source=source)


def intrinsics_from_dict(data: dict, where: str = "intrinsics") -> Intrinsics:
    """Parse the fields an intrinsics calibration file holds (``K``, ``dist``, ``image_size``)."""
    missing = [k for k in ("K", "dist", "image_size") if k not in data]
    if missing:
        raise IntrinsicsError(
            f"{where}: missing field(s) {missing}; an intrinsics file holds K (3x3), dist and "
            "image_size [w, h] (write one with `robot-policy calibrate intrinsics`)"
        )
    K = np.asarray(data["K"], dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise IntrinsicsError(f"{where}: K must be a finite 3x3 matrix with fx, fy > 0, got {data['K']!r}")
    size = data["image_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(int(v) > 0 for v in size)):
        raise IntrinsicsError(f"{where}: image_size must be [width, height], got {size!r}")
    return Intrinsics(
        K=K,
        dist=np.asarray(data["dist"], dtype=np.float64),
        width=int(size[0]),
        height=int(size[1]),
        model=str(data.get("distortion_model", DISTORTION_MODEL)),
        source=str(data.get("source", "")),
    )


def load_intrinsics(path: str | Path) -> Intrinsics:
    """Read an intrinsics JSON (the file ``robot-policy calibrate intrinsics`` writes)."""
    path = Path(path)
    if not path.is_file():
        raise IntrinsicsError(
            f"intrinsics file {path} does not exist; calibrate with "
            "`robot-policy calibrate intrinsics --images DIR --board BOARD.yaml --out FILE.json`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise IntrinsicsError(f"intrinsics file {path} is not valid JSON: {e}") from None
    intr = intrinsics_from_dict(data, where=str(path))
    intr.source = f"calibration:{path}"
    return intr


def pose_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a rotation (3x3) and a translation (3)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (transpose of the rotation, no general matrix inverse)."""
    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    return pose_matrix(R.T, -R.T @ t)
