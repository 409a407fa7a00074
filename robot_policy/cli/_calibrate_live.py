"""``robot-policy calibrate capture`` and ``calibrate latency --live``: calibration that drives the arm.

Registered by :mod:`robot_policy.cli.calibrate` (same command group); kept apart so that module
stays the offline commands. The arm is any backend of the hardware YAML (``arm: sim`` runs the
simulated robot in this process; a real arm or franky-sim through its SDK), under the same
controller and safety layer as ``robot_node``: do not run ``robot_node`` for the same arm at the
same time, and keep the workspace clear.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from robot_policy.console import add_command, print_table


def register_capture(group, detection_args) -> None:
    p = add_command(
        group,
        "capture",
        help="guided hand-eye capture: move the arm through poses, keep sharp board views, solve",
        description="Start with the arm where the camera sees the board (the nominal pose). The arm "
        "makes small rotations about its own axes (bootstrap), a rough solve finds the board, then "
        "it moves through --views poses aimed at the board: tilted 15-35 degrees about different "
        "axes and rolled about the line of sight (what Tsai/Park need), waits until still, grabs a "
        "frame, rejects board-less and blurred views (reasons recorded), and saves NAME.png + "
        "NAME.json (T_base_gripper from forward kinematics of the hardware YAML's description) in "
        "--images DIR, the format 'calibrate hand-eye --images' reads. Then intrinsics (unless "
        "given) and hand-eye are solved and written with their residuals. The arm returns to the "
        "nominal pose at the end.",
        epilog="examples:\n  robot-policy calibrate capture --hardware sim_calibration --camera wrist "
        "--mount eye-in-hand --board calibration/boards/charuco_7x5_40mm.yaml\n"
        "  robot-policy calibrate capture --hardware sim_calibration_held --camera agentview "
        "--mount eye-to-hand --board calibration/boards/charuco_7x5_40mm.yaml\n"
        "  robot-policy calibrate capture --hardware fr3 --camera wrist --mount eye-in-hand "
        "--board board.yaml --intrinsics calibration/fr3/wrist_intrinsics.json",
    )
    p.add_argument("--hardware", required=True, help="robot setup: hardware/NAME.yaml or a path")
    p.add_argument("--camera", required=True, help="camera name (a cameras: entry of the hardware YAML)")
    p.add_argument(
        "--mount", choices=("eye-in-hand", "eye-to-hand"), default="eye-in-hand", help="where the camera is"
    )
    p.add_argument("--board", required=True, help="board YAML")
    p.add_argument(
        "--images", help="folder for the captured views (default: calibration/<setup>/capture_<camera>)"
    )
    p.add_argument(
        "--intrinsics",
        default="auto",
        help="intrinsics for the hand-eye solve: a JSON file, 'device' (the camera's own), "
        "'calibrate' (from the captured views, written as <camera>_intrinsics.json) or 'auto' "
        "(default: calibration/<setup>/<camera>_intrinsics.json if it exists, else calibrate)",
    )
    p.add_argument("--views", type=int, default=16, help="views in the main set (default 16)")
    p.add_argument(
        "--distance", type=float, default=0.0, help="camera-to-board distance (m; default: as at the start)"
    )
    p.add_argument("--max-tilt", type=float, default=35.0, help="largest board tilt (degrees; default 35)")
    p.add_argument(
        "--bootstrap-deg",
        type=float,
        default=8.0,
        help="rotation of the bootstrap views (degrees; default 8)",
    )
    p.add_argument(
        "--speed", type=float, default=0.3, help="fraction of the velocity limits for moves (default 0.3)"
    )
    p.add_argument("--method", default="park", help="hand-eye solver (default park)")
    p.add_argument("--seed", type=int, default=0, help="seed of the view jitter (default 0)")
    p.add_argument("--setup", help="calibration/<setup>/ to write to (default: the hardware YAML's name)")
    p.add_argument("--out", help="hand-eye result JSON (default: calibration/<setup>/<camera>_hand_eye.json)")
    detection_args(p)
    p.set_defaults(func=_capture)


def _fail(e: Exception) -> int:
    print(f"calibrate: {e}", file=sys.stderr)
    return 1


def _capture(args) -> int:
    from robot_policy.calibration.board import load_board
    from robot_policy.calibration.capture import CaptureConfig, run_capture, solve_capture
    from robot_policy.calibration.detect import DetectionConfig
    from robot_policy.calibration.intrinsics import CalibrationError
    from robot_policy.calibration.poses import ViewPlan
    from robot_policy.calibration.results import default_path, write_result
    from robot_policy.camera_model import IntrinsicsError, load_intrinsics
    from robot_policy.config import ConfigError
    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.runtime.calibration_rig import RigConfig, open_rig

    mount = args.mount.replace("-", "_")
    try:
        hw = load_hardware_config(args.hardware)
        board = load_board(args.board)
        setup = args.setup or hw.name
        images = Path(args.images) if args.images else Path("calibration") / setup / f"capture_{args.camera}"
        detection = DetectionConfig(min_corners=args.min_corners, max_blur_px=args.max_blur)
        plan = ViewPlan(
            views=args.views,
            distance_m=args.distance,
            max_tilt_deg=args.max_tilt,
            bootstrap_deg=args.bootstrap_deg,
            seed=args.seed,
        )
        cfg = CaptureConfig(mount=mount, plan=plan, detection=detection)
        intr_file = default_path(setup, "intrinsics", args.camera)
        mode = args.intrinsics
        if mode == "auto":
            mode = str(intr_file) if intr_file.is_file() else "calibrate"
        intr = None if mode in ("calibrate", "device") else load_intrinsics(mode)
        print(f"capturing {args.camera} ({mount}) on '{hw.name}' into {images}")
        t0 = time.monotonic()
        with open_rig(hw, args.camera, config=RigConfig(speed=args.speed)) as rig:
            if mode == "device":
                intr = rig.camera.device_intrinsics()
            capture = run_capture(rig, board, images, cfg)
        print(f"captured in {time.monotonic() - t0:.0f} s")
        solution = solve_capture(images, board, mount, intr, args.method, detection)
    except (CalibrationError, ConfigError, IntrinsicsError, ValueError, TimeoutError) as e:
        return _fail(e)
    he = solution.hand_eye
    data = {"images": str(images), "board_file": str(args.board), "hardware": hw.name, "capture": "guided"}
    written = []
    if solution.intrinsics_result is not None:
        out = write_result(
            intr_file,
            "intrinsics",
            {"camera": args.camera, **solution.intrinsics_result.to_json(board, data)},
        )
        written.append(out)
        data["intrinsics_file"] = str(out)
    elif mode != "device":
        data["intrinsics_file"] = mode
    he_out = Path(args.out) if args.out else default_path(setup, "hand_eye", args.camera)
    body = he.to_json(board, solution.intrinsics, data)
    body["capture"] = {"rotation_spread": capture.spread, "rough_solve": capture.rough}
    written.append(write_result(he_out, "hand_eye", {"camera": args.camera, **body}))
    res = he.residuals
    t = he.T[:3, 3] * 1000
    print(f"{he.frame_names[0]}: translation [{t[0]:.1f}, {t[1]:.1f}, {t[2]:.1f}] mm")
    print_table(
        [
            {
                "views": len(he.views_used),
                "rejected": len(capture.rejected) + len(he.views_rejected),
                "max_rot_deg": capture.spread.get("max_rotation_deg", 0.0),
                "axis_spread": capture.spread.get("axis_spread", 0.0),
                "spread_mm": res["translation_rms_mm"],
                "spread_deg": res["rotation_rms_deg"],
                "reproj_px": res["reprojection_rms_px"],
            }
        ]
    )
    for v in capture.rejected:
        print(f"  rejected {v.name} [{v.phase}]: {v.reason}")
    for path in written:
        print(f"wrote {path}")
    return 0


def live_latency(args, doc: dict) -> dict:
    """``calibrate latency --live``: excite one joint through the controller, record commanded and
    measured joints, estimate the latency; returns the table row (``doc['arm']`` is filled)."""
    from robot_policy.calibration.latency import ExcitationConfig, arm_latency, save_traces
    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.runtime.calibration_rig import open_rig, record_excitation

    hw = load_hardware_config(args.hardware)
    exc = ExcitationConfig(joint=args.joint, amplitude_deg=args.amplitude_deg, duration_s=args.duration)
    print(
        f"exciting {exc.joint or hw.joint_names[-1]} of '{hw.name}' by up to {exc.amplitude_deg} deg "
        f"for {exc.duration_s:g} s"
    )
    with open_rig(hw, None) as rig:
        tr = record_excitation(rig, exc)
    r = arm_latency(tr["t_commanded"], tr["q_commanded"], tr["t_measured"], tr["q_measured"], args.max_lag)
    traces = Path(args.traces_out) if args.traces_out else None
    if traces is not None:
        traces.parent.mkdir(parents=True, exist_ok=True)
        save_traces(traces, tr["t_commanded"], tr["q_commanded"], tr["t_measured"], tr["q_measured"])
    doc["arm"] = {
        **r.to_json(),
        "data": str(traces) if traces else "live",
        "excitation": {**exc.__dict__, "joint": exc.joint or hw.joint_names[-1]},
        "hardware": hw.name,
    }
    return {"what": "arm (live)", "latency_ms": r.latency_s * 1000, "samples": r.samples}
