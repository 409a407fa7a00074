"""Camera intrinsics from ChArUco views (``cv2.calibrateCameraExtended``).

Procedure: detect the board in every image (rejecting board-less and blurred views, see
:mod:`.detect`), calibrate, drop views whose reprojection error is an outlier (a moved board, a
misdetection), calibrate again. The result file holds K, dist, rms, image_size, the views used
and rejected (with reasons), each view's error and the standard deviation of every parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_policy.calibration.board import BoardConfig, cv2_module
from robot_policy.calibration.detect import BoardDetector, Detection, DetectionConfig
from robot_policy.camera_model import DISTORTION_MODEL, Intrinsics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class CalibrationError(RuntimeError):
    """Not enough usable data; the message says what was rejected and why."""


@dataclass
class IntrinsicsOptions:
    """Which intrinsics are estimated and which views are kept."""

    fix_k3: bool = False
    """Hold k3 at 0 (fewer parameters: safer with few views or a narrow lens)."""
    zero_tangent: bool = False
    """Hold p1, p2 at 0."""
    rational: bool = False
    """Rational model (k4..k6, 8 coefficients) for wide-angle lenses."""
    min_views: int = 5
    """Fewest usable views; fewer is an error (aim for 15-30 views, tilted up to ~45 degrees)."""
    outlier_factor: float = 3.0
    """A view whose reprojection error exceeds this many times the median (and ``outlier_min_px``) is dropped."""
    outlier_min_px: float = 0.5
    """Never drop a view whose error is below this (pixels)."""


@dataclass
class IntrinsicsResult:
    """An intrinsics calibration and the evidence for it."""

    intrinsics: Intrinsics
    """K, dist and image size."""
    rms: float
    """Reprojection error over all used corners (pixels)."""
    views_used: list[str]
    """Names of the views that went into the result."""
    views_rejected: list[dict[str, str]]
    """``{"view": name, "reason": why}`` for every view left out."""
    per_view_rms: dict[str, float]
    """Reprojection error of each used view (pixels)."""
    std: dict[str, float]
    """Standard deviation of fx, fy, cx, cy (pixels) and the distortion coefficients."""
    corners: int = 0
    """Corners used in total."""
    options: dict[str, Any] = field(default_factory=dict)
    """The :class:`IntrinsicsOptions` used."""

    def to_json(self, board: BoardConfig, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """The body of the result file (``write_result(path, "intrinsics", body)``)."""
        i = self.intrinsics
        return {
            "K": i.K,
            "dist": i.dist,
            "distortion_model": i.model,
            "image_size": [i.width, i.height],
            "rms": self.rms,
            "views_used": self.views_used,
            "views_rejected": self.views_rejected,
            "residuals": {"rms_px": self.rms, "per_view_rms_px": self.per_view_rms, "std": self.std},
            "data": {"board": board.to_dict(), "corners": self.corners, **(data or {})},
            "options": self.options,
        }


def load_images(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """Every image in ``folder`` (sorted by name) as (file name, RGB uint8 array)."""
    cv2 = cv2_module()
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder {folder} does not exist")
    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise CalibrationError(f"cannot read image {p}")
            out.append((p.name, bgr[..., ::-1]))
    if not out:
        raise CalibrationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return out


def _flags(opts: IntrinsicsOptions) -> int:
    cv2 = cv2_module()
    flags = 0
    flags |= cv2.CALIB_FIX_K3 if opts.fix_k3 else 0
    flags |= cv2.CALIB_ZERO_TANGENT_DIST if opts.zero_tangent else 0
    flags |= cv2.CALIB_RATIONAL_MODEL if opts.rational else 0
    return flags


def calibrate_intrinsics(
    images: Iterable[tuple[str, np.ndarray]],
    board: BoardConfig,
    options: IntrinsicsOptions | None = None,
    detection: DetectionConfig | None = None,
) -> IntrinsicsResult:
    """Calibrate from (name, image) pairs showing ``board``; images must all have one size."""
    opts = options or IntrinsicsOptions()
    detector = BoardDetector(board, detection)
    detections: list[Detection] = []
    rejected: list[dict[str, str]] = []
    size: tuple[int, int] | None = None
    for name, img in images:
        det = detector.detect(img, name)
        if size is None:
            size = det.image_size
        elif det.image_size != size:
            raise CalibrationError(
                f"view {name} is {det.image_size[0]}x{det.image_size[1]}, the first view was "
                f"{size[0]}x{size[1]}; calibrate each image size separately"
            )
        if det.ok:
            detections.append(det)
        else:
            rejected.append({"view": name, "reason": det.reason})
    return calibrate_from_detections(detections, size, opts, rejected)


def calibrate_from_detections(
    detections: list[Detection],
    size: tuple[int, int] | None,
    opts: IntrinsicsOptions,
    rejected: list[dict[str, str]] | None = None,
) -> IntrinsicsResult:
    cv2 = cv2_module()
    rejected = list(rejected or [])
    _need_views(detections, opts, rejected)
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-10)
    for attempt in range(2):
        obj = [d.object_points.reshape(-1, 1, 3) for d in detections]
        img = [d.corners.reshape(-1, 1, 2) for d in detections]
        rms, K, dist, _, _, std_i, _, per_view = cv2.calibrateCameraExtended(
            obj, img, size, None, None, flags=_flags(opts), criteria=crit
        )
        per_view = per_view.reshape(-1)
        if attempt == 1:
            break
        # One pass of outlier removal: a view far worse than the rest is a bad detection or a
        # board that moved during exposure, and it drags every parameter.
        limit = max(opts.outlier_factor * float(np.median(per_view)), opts.outlier_min_px)
        bad = [i for i, e in enumerate(per_view) if e > limit]
        if not bad:
            break
        for i in bad:
            rejected.append(
                {
                    "view": detections[i].name,
                    "reason": f"reprojection error {per_view[i]:.2f} px > {limit:.2f} px",
                }
            )
        detections = [d for i, d in enumerate(detections) if i not in bad]
        _need_views(detections, opts, rejected)
    std_i = std_i.reshape(-1)
    names = ["fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"]
    intr = Intrinsics(K=K, dist=dist.reshape(-1), width=size[0], height=size[1], model=DISTORTION_MODEL)
    return IntrinsicsResult(
        intrinsics=intr,
        rms=float(rms),
        views_used=[d.name for d in detections],
        views_rejected=rejected,
        per_view_rms={d.name: float(e) for d, e in zip(detections, per_view)},
        std={n: float(s) for n, s in zip(names, std_i)},
        corners=int(sum(len(d.ids) for d in detections)),
        options=dict(vars(opts)),
    )


def _need_views(detections: list[Detection], opts: IntrinsicsOptions, rejected: list[dict[str, str]]) -> None:
    if len(detections) < opts.min_views:
        reasons = "; ".join(f"{r['view']}: {r['reason']}" for r in rejected[:10])
        raise CalibrationError(
            f"only {len(detections)} usable views, need {opts.min_views} (min_views). Rejected: "
            f"{reasons or 'none'}. Take more views of the whole board, in focus, tilted in different directions."
        )
