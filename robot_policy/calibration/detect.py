"""Finding the ChArUco board in an image, and deciding whether the view is worth using.

A view is rejected (with the reason recorded in the result file) when the board is not there
(fewer than ``min_corners`` corners, or corners all on one line, which constrain nothing), or
when it is blurred. Blur is measured at the detected corners, where it matters: across a
blurred edge the intensity rises over a width ~ the blur's sigma, so for a step edge of contrast
``C`` the steepest gradient is ``C / (sqrt(2 pi) sigma)``. ``blur_px`` is that sigma, estimated per
corner from the patch's contrast and its strongest gradient, and its median over the corners is
compared with ``max_blur_px``. A sharp rendered or well-focused image gives ~0.5-1 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from robot_policy.calibration.board import BoardConfig, cv2_module, cv_board


@dataclass
class DetectionConfig:
    """When a view counts."""

    min_corners: int = 6
    """Fewest ChArUco corners a view must show (and not all on one line)."""
    max_blur_px: float = 2.0
    """Largest accepted blur (sigma of an equivalent Gaussian, pixels) measured at the corners."""
    patch_px: int = 7
    """Half-size of the window around each corner used to measure blur (pixels)."""


@dataclass
class Detection:
    """The board as seen in one image."""

    name: str
    """View name (the image's file name)."""
    image_size: tuple[int, int]
    """(width, height) of the image."""
    corners: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    """Detected corner positions (N, 2), pixels, sub-pixel refined."""
    ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    """ChArUco corner ids (N,)."""
    object_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    """The same corners in the board frame (N, 3), metres."""
    blur_px: float | None = None
    """Median blur at the corners (pixels); None when there were no corners."""
    reason: str = ""
    """Why the view is rejected; empty when it is used."""

    @property
    def ok(self) -> bool:
        return not self.reason


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 greyscale of an RGB / greyscale image (RGB order: what cameras return)."""
    cv2 = cv2_module()
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    if img.dtype != np.uint8:
        raise ValueError(f"calibration images must be uint8, got {img.dtype}")
    return img


class BoardDetector:
    """Detects one board definition in images."""

    def __init__(self, board: BoardConfig, config: DetectionConfig | None = None):
        cv2 = cv2_module()
        self.board = board
        self.config = config or DetectionConfig()
        self.cv_board = cv_board(board)
        params = cv2.aruco.CharucoParameters()
        self._detector = cv2.aruco.CharucoDetector(self.cv_board, params)

    def detect(self, image: np.ndarray, name: str = "") -> Detection:
        cv2 = cv2_module()
        gray = to_gray(image)
        h, w = gray.shape
        det = Detection(name=name, image_size=(w, h))
        corners, ids, _, _ = self._detector.detectBoard(gray)
        n = 0 if ids is None else len(ids)
        if n < self.config.min_corners:
            det.reason = f"board not found: {n} corners, need {self.config.min_corners}"
            return det
        # CharucoDetector interpolates corners from markers; refine them on the image itself.
        corners = corners.reshape(-1, 1, 2).astype(np.float32)
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
        cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), crit)
        obj, img = self.cv_board.matchImagePoints(corners, ids)
        det.corners = img.reshape(-1, 2).astype(np.float32)
        det.ids = ids.reshape(-1).astype(np.int32)
        det.object_points = obj.reshape(-1, 3).astype(np.float32)
        det.blur_px = corner_blur(gray, det.corners, self.config.patch_px)
        if _collinear(det.object_points):
            det.reason = f"board corners all on one line ({n} corners): no constraint on the pose"
        elif det.blur_px > self.config.max_blur_px:
            det.reason = (
                f"blurred: {det.blur_px:.2f} px at the corners > max_blur_px {self.config.max_blur_px}"
            )
        return det


def corner_blur(gray: np.ndarray, corners: np.ndarray, half: int = 7) -> float:
    """Median over corners of ``contrast / (sqrt(2 pi) * max gradient)``: the sigma (pixels) of a
    Gaussian blur that would turn a sharp step of that contrast into the observed edge."""
    cv2 = cv2_module()
    g = gray.astype(np.float32)
    # 3x3 Sobel divided by 8: intensity change per pixel.
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    mag = np.hypot(gx, gy)
    h, w = g.shape
    sigmas = []
    for x, y in np.asarray(corners).reshape(-1, 2):
        x0, y0 = int(round(x)), int(round(y))
        if x0 - half < 0 or y0 - half < 0 or x0 + half >= w or y0 + half >= h:
            continue
        patch = g[y0 - half : y0 + half + 1, x0 - half : x0 + half + 1]
        contrast = float(np.percentile(patch, 95) - np.percentile(patch, 5))
        peak = float(np.percentile(mag[y0 - half : y0 + half + 1, x0 - half : x0 + half + 1], 98))
        if contrast < 20 or peak <= 0:  # a washed-out corner says nothing about focus
            continue
        sigmas.append(contrast / (math.sqrt(2 * math.pi) * peak))
    return float(np.median(sigmas)) if sigmas else float("inf")


def _collinear(obj: np.ndarray) -> bool:
    pts = np.asarray(obj, dtype=np.float64)[:, :2]
    if len(pts) < 3:
        return True
    s = np.linalg.svd(pts - pts.mean(0), compute_uv=False)
    return bool(s[1] < 1e-6 * max(s[0], 1e-12))
