"""Guided hand-eye capture: move the arm through planned poses, keep the sharp views of the board,
save them in the format the offline ``calibrate hand-eye --images`` reads, and solve.

The procedure talks to a :class:`CaptureRig` (an arm that can be moved and read, a camera, the
arm's kinematics), not to a particular robot: ``robot_policy.runtime.calibration_rig`` builds one
from any ``ARMS`` backend (the simulated robot, franky-sim, a real arm) under the shared
``ArmController`` and any ``CAMERAS`` backend, so simulation and hardware run the same code.

Per view: inverse kinematics to the planned gripper pose (out of reach: the view is skipped,
with the reason), a smooth move, wait until the arm is still, a frame captured after that,
board detection with the blur check of :mod:`.detect` (board-less or blurred views are
rejected with the reason, after grabbing again ``retries`` times), then
``NAME.png`` + ``NAME.json`` (``T_base_gripper`` from forward kinematics of the joints measured
with the frame). Rejected views go to ``rejected/`` so the folder stays a clean input for the
offline command; ``capture.json`` lists every view with its status, reason, joints and blur.
The views are planned in two steps (:mod:`.poses`): a bootstrap around the nominal pose, a
rough solve to learn where the board is, then the main set aimed at the board.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robot_policy.calibration.board import BoardConfig, cv2_module
from robot_policy.calibration.detect import BoardDetector, Detection, DetectionConfig
from robot_policy.calibration.hand_eye import (
    HandEyeResult,
    board_pose,
    calibrate_hand_eye,
    load_views,
    write_pose,
)
from robot_policy.calibration.intrinsics import (
    CalibrationError,
    IntrinsicsOptions,
    IntrinsicsResult,
    calibrate_intrinsics,
)
from robot_policy.calibration.poses import (
    ViewPlan,
    bootstrap_poses,
    gripper_poses,
    plan_views,
    rotation_spread,
)
from robot_policy.camera_model import Intrinsics

MANIFEST = "capture.json"
"""The capture's record of every view (in the capture folder)."""
REJECTED = "rejected"
"""Subfolder for the images of rejected views."""


class CaptureRig(Protocol):
    """An arm, its kinematics and a camera, as the guided capture uses them."""

    def joints(self) -> np.ndarray:
        """Measured arm joint positions (rad), command order, no gripper."""

    def fk(self, q: np.ndarray) -> np.ndarray:
        """``T_base_gripper`` (4x4, metres) at joints ``q``."""

    def ik(self, T_base_gripper: np.ndarray, q_seed: np.ndarray) -> np.ndarray:
        """Joints near ``q_seed`` reaching the pose; ValueError when it is out of reach."""

    def move_to(self, q: np.ndarray) -> str:
        """Move to ``q`` and wait until the arm is still there; returns "" or why it is not."""

    def grab(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 image captured after the arm came to rest, joints measured with it)."""

    def intrinsics(self) -> Intrinsics:
        """The camera's intrinsics (its calibration file's, else the device's)."""


@dataclass
class CaptureConfig:
    """How the guided capture runs."""

    mount: str = "eye_in_hand"
    """``eye_in_hand`` (camera on the gripper, board fixed) or ``eye_to_hand`` (camera fixed, board held)."""
    plan: ViewPlan = field(default_factory=ViewPlan)
    """Where the views go."""
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    """When a view counts (corners, blur)."""
    retries: int = 1
    """A rejected view (blurred, board not found) is grabbed again up to this many times before it
    counts as rejected: the arm may have been shaking, someone may have passed in front."""
    min_bootstrap_views: int = 4
    """Usable views (nominal + bootstrap) the rough solve needs before the main set is planned."""

    def __post_init__(self):
        if self.mount not in ("eye_in_hand", "eye_to_hand"):
            raise ValueError(f"capture: mount must be 'eye_in_hand' or 'eye_to_hand', got {self.mount!r}")
        if self.retries < 0 or self.min_bootstrap_views < 3:
            raise ValueError(
                f"capture: need retries >= 0 and min_bootstrap_views >= 3, got {self.retries}, "
                f"{self.min_bootstrap_views}"
            )


@dataclass
class CapturedView:
    """One planned view and what became of it."""

    name: str
    """Image file name (``view_NNN.png``)."""
    phase: str
    """``nominal``, ``bootstrap_<axis>``, ``main`` or ``main_gentle`` (half the tilt and roll: the
    planned view was out of reach)."""
    status: str = "used"
    """``used`` or ``rejected``."""
    reason: str = ""
    """Why it was rejected (out of reach, did not settle, board not found, blurred)."""
    q: list[float] | None = None
    """Joints measured with the frame (rad)."""
    T_base_gripper: list[list[float]] | None = None
    """Forward kinematics of ``q``."""
    corners: int = 0
    """Board corners detected."""
    blur_px: float | None = None
    """Blur measured at the corners (px)."""


@dataclass
class CaptureResult:
    """The capture folder and its record."""

    folder: Path
    """Where the images and poses are (the input of the offline hand-eye command)."""
    mount: str
    views: list[CapturedView]
    rough: dict[str, Any] = field(default_factory=dict)
    """The bootstrap solve used for planning (mount, residuals)."""
    spread: dict[str, float] = field(default_factory=dict)
    """:func:`~robot_policy.calibration.poses.rotation_spread` of the used views' arm poses."""

    @property
    def used(self) -> list[CapturedView]:
        return [v for v in self.views if v.status == "used"]

    @property
    def rejected(self) -> list[CapturedView]:
        return [v for v in self.views if v.status != "used"]


def run_capture(
    rig: CaptureRig,
    board: BoardConfig,
    folder: str | Path,
    config: CaptureConfig | None = None,
    log: Callable[[str], None] = print,
) -> CaptureResult:
    """Capture views for hand-eye (and intrinsics) calibration starting from where the arm stands
    now (the nominal pose: the camera must see the board). Ends back at the nominal pose."""
    cfg = config or CaptureConfig()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.glob("view_*.png")):
        raise CalibrationError(f"{folder} already holds views (view_*.png); capture into an empty folder")
    q0 = np.asarray(rig.joints(), dtype=np.float64)
    session = _Session(rig, board, folder, cfg, log, q0)
    try:
        session.shoot("nominal", q0, move=False)
        if session.views[0].status != "used":
            raise CalibrationError(
                f"at the nominal pose the camera has no usable view of the board "
                f"({session.views[0].reason}): move the arm so the board is in view, sharp and "
                "filling a good part of the image, then start the capture again"
            )
        T0 = rig.fk(q0)
        q = q0
        for phase, T in bootstrap_poses(T0, cfg.plan.bootstrap_deg):
            q = session.reach_and_shoot(phase, [T], q)
        rough = session.rough_solve()
        X, Y = np.asarray(rough["X"]), np.asarray(rough["Y"])
        V0 = board_pose(session.detections["view_000.png"], rig.intrinsics())
        full, gentle = (
            gripper_poses(plan_views(V0, board.size_m, cfg.plan, scale), cfg.mount, X, Y)
            for scale in (1.0, 0.5)
        )
        for T, T_gentle in zip(full, gentle):
            q = session.reach_and_shoot("main", [T, T_gentle], q)
    finally:
        if len(session.views) > 1:  # the arm moved
            try:
                reason = rig.move_to(q0)
                log("back at the nominal pose" + (f" ({reason})" if reason else ""))
            except Exception as e:  # noqa: BLE001 - report, keep what was captured
                log(f"could not return to the nominal pose: {e}")
        # Written also when the capture stops early: what was seen, and why views were rejected.
        used = [np.asarray(v.T_base_gripper) for v in session.views if v.status == "used"]
        result = CaptureResult(folder, cfg.mount, session.views, session.rough_summary, rotation_spread(used))
        _write_manifest(result, board)
    return result


class _Session:
    """The state of one capture: views so far, detections, the rough solve."""

    def __init__(self, rig, board, folder: Path, cfg: CaptureConfig, log, q0: np.ndarray):
        self.rig, self.board, self.folder, self.cfg, self.log = rig, board, folder, cfg, log
        self.q0 = q0
        self.detector = BoardDetector(board, cfg.detection)
        self.views: list[CapturedView] = []
        self.detections: dict[str, Detection] = {}
        self.images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.rough_summary: dict[str, Any] = {}

    def reach_and_shoot(self, phase: str, poses: list[np.ndarray], q_seed: np.ndarray) -> np.ndarray:
        """IK to the first reachable of ``poses`` (the planned view, then gentler versions), from the
        last view's joints, else from the nominal ones; then :meth:`shoot`. Returns the joints to
        seed the next IK from."""
        error = None
        for i, T in enumerate(poses):
            for seed in (q_seed, self.q0):
                try:
                    q = np.asarray(self.rig.ik(T, seed), dtype=np.float64)
                except ValueError as e:
                    error = error or e
                    continue
                self.shoot(phase if i == 0 else f"{phase}_gentle", q)
                return q
        self._record(CapturedView(self._name(), phase, "rejected", f"out of reach: {error}"))
        return q_seed

    def shoot(self, phase: str, q: np.ndarray, move: bool = True) -> None:
        view = CapturedView(self._name(), phase)
        if move:
            reason = self.rig.move_to(q)
            if reason:
                view.status, view.reason = "rejected", f"arm did not settle: {reason}"
                self._record(view)
                return
        for attempt in range(self.cfg.retries + 1):
            image, q_meas = self.rig.grab()
            det = self.detector.detect(image, view.name)
            if det.ok or attempt == self.cfg.retries:
                break
            self.log(f"  {view.name}: {det.reason}; grabbing again")
        q_meas = np.asarray(q_meas, dtype=np.float64)
        T = self.rig.fk(q_meas)
        view.q, view.T_base_gripper = q_meas.tolist(), np.asarray(T).tolist()
        view.corners, view.blur_px = len(det.corners), det.blur_px
        if not det.ok:
            view.status, view.reason = "rejected", det.reason
        else:
            self.detections[view.name] = det
            self.images[view.name] = (image, T)
        self._save(view, image, T)
        self._record(view)

    def rough_solve(self) -> dict[str, Any]:
        """Hand-eye from the nominal and bootstrap views, to aim the main set."""
        views = [(name, img, T) for name, (img, T) in self.images.items()]
        if len(views) < self.cfg.min_bootstrap_views:
            raise CalibrationError(
                f"only {len(views)} usable views around the nominal pose (need "
                f"{self.cfg.min_bootstrap_views}); rejected: "
                f"{[(v.name, v.reason) for v in self.views if v.status != 'used']}. Start from a pose "
                "where the board is well inside the image, or lower --bootstrap-deg"
            )
        r = calibrate_hand_eye(
            views, self.board, self.rig.intrinsics(), self.cfg.mount, "park", self.cfg.detection, 3
        )
        self.rough_summary = {
            "views": r.views_used,
            "translation_rms_mm": r.residuals["translation_rms_mm"],
            "rotation_rms_deg": r.residuals["rotation_rms_deg"],
            "T": r.T,
        }
        self.log(
            f"rough solve from {len(r.views_used)} views: spread {r.residuals['translation_rms_mm']:.1f} mm, "
            f"{r.residuals['rotation_rms_deg']:.2f} deg; planning {self.cfg.plan.views} views"
        )
        return {"X": r.T, "Y": r.T_other}

    def _name(self) -> str:
        return f"view_{len(self.views):03d}.png"

    def _save(self, view: CapturedView, image: np.ndarray, T: np.ndarray) -> None:
        cv2 = cv2_module()
        where = self.folder if view.status == "used" else self.folder / REJECTED
        where.mkdir(exist_ok=True)
        if not cv2.imwrite(str(where / view.name), np.ascontiguousarray(image[..., ::-1])):
            raise CalibrationError(f"could not write {where / view.name}")
        write_pose(where / (Path(view.name).stem + ".json"), T)

    def _record(self, view: CapturedView) -> None:
        self.views.append(view)
        what = "ok" if view.status == "used" else f"rejected: {view.reason}"
        blur = f", blur {view.blur_px:.2f} px" if view.blur_px is not None else ""
        self.log(f"  {view.name} [{view.phase}] {view.corners} corners{blur}: {what}")


def _write_manifest(result: CaptureResult, board: BoardConfig) -> None:
    from robot_policy.calibration.results import jsonable, now_iso

    doc = {
        "date": now_iso(),
        "mount": result.mount,
        "board": board.to_dict(),
        "views": [v.__dict__ for v in result.views],
        "rough_solve": result.rough,
        "rotation_spread": result.spread,
    }
    (result.folder / MANIFEST).write_text(json.dumps(jsonable(doc), indent=2) + "\n")


# -- solving ----------------------------------------------------------------------------------
@dataclass
class CaptureSolution:
    """Intrinsics (given or calibrated from the captured views) and the hand-eye result."""

    intrinsics: Intrinsics
    """What the hand-eye solve used."""
    intrinsics_result: IntrinsicsResult | None
    """Set when the intrinsics were calibrated from the captured views."""
    hand_eye: HandEyeResult


def solve_capture(
    folder: str | Path,
    board: BoardConfig,
    mount: str,
    intrinsics: Intrinsics | None = None,
    method: str = "park",
    detection: DetectionConfig | None = None,
    min_views: int = 5,
) -> CaptureSolution:
    """Hand-eye from a capture folder (the same code as ``calibrate hand-eye --images``). Without
    ``intrinsics`` they are first calibrated from the same views, as a user would."""
    views = load_views(folder)
    intr_result = None
    if intrinsics is None:
        intr_result = calibrate_intrinsics(
            [(n, img) for n, img, _ in views], board, IntrinsicsOptions(min_views=min_views), detection
        )
        intrinsics = intr_result.intrinsics
    he = calibrate_hand_eye(views, board, intrinsics, mount, method, detection, min_views)
    return CaptureSolution(intrinsics, intr_result, he)
