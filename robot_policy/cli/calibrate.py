"""``robot-policy calibrate ...``: board printing, intrinsics, hand-eye and latency, offline from saved
data; the guided capture and live arm latency (which drive the arm) are in ``_calibrate_live``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from robot_policy.console import add_command, add_group, print_table

RESULTS = (
    "Results are JSON files; by convention calibration/<setup>/<camera>_intrinsics.json, "
    "<camera>_hand_eye.json and latency.json (give --setup instead of --out to use those names)."
)


def register(sub) -> None:
    group = add_group(
        sub,
        "calibrate",
        help="camera intrinsics, hand-eye extrinsics and latencies (offline, or driving the arm)",
        description="Calibrate cameras and measure latencies, offline from images and traces saved "
        "beforehand or live: 'capture' moves the arm through poses and calibrates hand-eye (and "
        "intrinsics), 'latency --live' excites a joint to measure the arm's latency. Typical order: "
        "print a board, take 15-30 sharp views of it per camera (intrinsics), then views with the "
        "arm pose saved beside each image (hand-eye, or 'capture' does both), then latencies. " + RESULTS,
    )

    p = add_command(
        group,
        "board",
        help="write a ChArUco board as a PNG at true scale, ready to print",
        description="Render the board of a board YAML (type: charuco, squares: [X, Y], square_length and "
        "marker_length in metres, dictionary) as a PNG with its dpi recorded. Print it at 100% "
        "(no 'fit to page') and measure one square: square_length in the YAML must be what you measure.",
        epilog="examples:\n  robot-policy calibrate board --board calibration/boards/charuco_7x5_40mm.yaml "
        "--out board.png --dpi 300",
    )
    p.add_argument("--board", required=True, help="board YAML")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--dpi", type=float, default=300.0, help="printer resolution (dots per inch; default 300)")
    p.add_argument(
        "--margin-mm", type=float, default=10.0, help="white margin around the board (mm; default 10)"
    )
    p.set_defaults(func=_board)

    p = add_command(
        group,
        "intrinsics",
        help="camera matrix and distortion from images of a ChArUco board",
        description="Detect the board in every image of DIR, reject board-less and blurred views (the "
        "reasons go into the result), calibrate (cv2.calibrateCameraExtended), drop outlier views and "
        "calibrate again. Writes K (3x3), dist, rms, image_size [w, h], views used and rejected, "
        "per-view errors and parameter standard deviations. " + RESULTS,
        epilog="examples:\n  robot-policy calibrate intrinsics --images shots/wrist --board board.yaml "
        "--out calibration/panda/wrist_intrinsics.json\n"
        "  robot-policy calibrate intrinsics --images shots/wrist --board board.yaml --setup panda --camera wrist",
    )
    p.add_argument("--images", required=True, help="folder of images (png/jpg) of the board")
    p.add_argument("--board", required=True, help="board YAML")
    _out_args(p)
    p.add_argument("--fix-k3", action="store_true", help="hold k3 at 0 (few views, narrow lens)")
    p.add_argument("--zero-tangent", action="store_true", help="hold p1, p2 at 0")
    p.add_argument("--rational", action="store_true", help="8-coefficient rational model (wide-angle lenses)")
    _detection_args(p)
    p.add_argument("--min-views", type=int, default=5, help="fewest usable views (default 5; aim for 15-30)")
    p.set_defaults(func=_intrinsics)

    p = add_command(
        group,
        "hand-eye",
        help="camera pose on the gripper (eye-in-hand) or in the base frame (eye-to-hand)",
        description="From images of a board and, beside each image NAME.png, NAME.json holding "
        '{"T_base_gripper": 4x4} (the gripper pose in the robot base frame from forward kinematics, '
        "metres, arm standing still). Eye-in-hand: the camera rides on the gripper and the board is "
        "fixed; result T_gripper_cam. Eye-to-hand: the camera is fixed and the gripper holds the "
        "board; result T_base_cam. Both with OpenCV camera axes (x right, y down, z forward). " + RESULTS,
        epilog="examples:\n  robot-policy calibrate hand-eye --images shots/he --board board.yaml "
        "--intrinsics calibration/panda/wrist_intrinsics.json --mount eye-in-hand --setup panda --camera wrist",
    )
    p.add_argument(
        "--images", required=True, help="folder of images, each with NAME.json holding T_base_gripper"
    )
    p.add_argument("--board", required=True, help="board YAML")
    p.add_argument("--intrinsics", required=True, help="intrinsics JSON of the camera (calibrate intrinsics)")
    p.add_argument(
        "--mount", choices=("eye-in-hand", "eye-to-hand"), default="eye-in-hand", help="where the camera is"
    )
    p.add_argument(
        "--method",
        default="park",
        choices=("tsai", "park", "horaud", "andreff", "daniilidis", "shah", "li"),
        help="solver: cv2.calibrateHandEye (tsai, park, horaud, andreff, daniilidis) or "
        "cv2.calibrateRobotWorldHandEye (shah, li); default park",
    )
    _out_args(p)
    _detection_args(p)
    p.set_defaults(func=_hand_eye)

    p = add_command(
        group,
        "latency",
        help="camera latency (filmed screen timestamps) and arm latency (commanded vs measured motion)",
        description="Camera: --camera-frames DIR holds images of a screen showing the host clock as a QR "
        "code (robot_policy.calibration.latency.timestamp_image) and stamps.json mapping each file to "
        "the stamp the pipeline gave it; latency = stamp - displayed time - half a display period. "
        "Arm: --arm FILE.json holds commanded and measured joint traces with host-clock stamps "
        '({"commanded": {"t": [...], "q": [[...]]}, "measured": {...}}); latency = the lag that best '
        "aligns them (cross-correlation). Results are merged into the output file, so camera and arm "
        "can be measured separately into one latency.json.",
        epilog="examples:\n  robot-policy calibrate latency --arm traces.json --setup panda\n"
        "  robot-policy calibrate latency --live --hardware fr3_sim\n"
        "  robot-policy calibrate latency --camera-frames shots/qr --camera wrist --display-hz 60 --setup panda",
    )
    p.add_argument("--arm", help="arm trace JSON (commanded and measured joint positions with stamps)")
    live = p.add_argument_group("live arm latency (--live: drives the arm)")
    live.add_argument(
        "--live",
        action="store_true",
        help="command a small sum of sines on one joint of --hardware's arm through the controller, "
        "record commanded and measured joints and estimate the latency from them",
    )
    live.add_argument("--hardware", help="robot setup for --live: hardware/NAME.yaml or a path")
    live.add_argument("--joint", default="", help="joint to excite (default: the last arm joint)")
    live.add_argument(
        "--amplitude-deg", type=float, default=3.0, help="peak excursion of the joint (degrees; default 3)"
    )
    live.add_argument("--duration", type=float, default=8.0, help="length of the motion (s; default 8)")
    live.add_argument(
        "--traces-out",
        help="also save the recorded traces here (the --arm format; default: calibration/<setup>/arm_traces.json)",
    )
    p.add_argument("--camera-frames", help="folder of QR-clock images plus stamps.json")
    p.add_argument(
        "--display-hz",
        type=float,
        default=60.0,
        help="refresh rate of the screen showing the clock (default 60)",
    )
    p.add_argument("--max-lag", type=float, default=0.5, help="longest arm latency searched (s; default 0.5)")
    _out_args(p)
    p.set_defaults(func=_latency)

    from robot_policy.cli._calibrate_live import register_capture

    register_capture(group, _detection_args)

    p = add_command(
        group,
        "check",
        help="measure this install's calibration errors on rendered ground truth (MuJoCo)",
        description="Render a ChArUco board in MuJoCo (sim/calibration_board.xml) from many poses, run "
        "the same intrinsics and hand-eye code as on real images, and compare with the truth the "
        "scene knows (intrinsics from the camera's fovy, the camera mount from the model). Prints "
        "one row per seed; docs/calibration.md quotes these figures.",
        epilog="examples:\n  robot-policy calibrate check\n  robot-policy calibrate check --seeds 5 --views 20",
    )
    p.add_argument("--seeds", type=int, default=3, help="independent sets of views (default 3)")
    p.add_argument("--views", type=int, default=20, help="views per set (default 20)")
    p.add_argument("--method", default="park", help="hand-eye solver (default park)")
    p.set_defaults(func=_check)


def _out_args(p) -> None:
    p.add_argument("--out", help="result JSON to write")
    p.add_argument("--setup", help="robot setup name: write to calibration/<setup>/... instead of --out")
    p.add_argument(
        "--camera", default="camera", help="camera name for the file name and the result (default camera)"
    )


def _detection_args(p) -> None:
    p.add_argument(
        "--min-corners", type=int, default=6, help="fewest board corners a view must show (default 6)"
    )
    p.add_argument(
        "--max-blur",
        type=float,
        default=2.0,
        help="reject views blurred more than this at the corners (px; default 2)",
    )


def _out_path(args, kind: str) -> Path:
    from robot_policy.calibration.results import default_path

    if args.out:
        return Path(args.out)
    if args.setup:
        return default_path(args.setup, kind, args.camera)
    raise SystemExit(
        f"calibrate: give --out FILE.json or --setup NAME (writes {default_path('NAME', kind, args.camera)})"
    )


def _detection(args):
    from robot_policy.calibration.detect import DetectionConfig

    return DetectionConfig(min_corners=args.min_corners, max_blur_px=args.max_blur)


def _fail(e: Exception) -> int:
    print(f"calibrate: {e}", file=sys.stderr)
    return 1


def _board(args) -> int:
    from robot_policy.calibration.board import load_board, save_board_png
    from robot_policy.config import ConfigError

    try:
        info = save_board_png(load_board(args.board), args.out, args.dpi, margin_m=args.margin_mm / 1000.0)
    except ConfigError as e:
        return _fail(e)
    print(
        f"wrote {info['path']}: {info['pixels'][0]}x{info['pixels'][1]} px at {info['dpi']:g} dpi = "
        f"{info['size_mm'][0]} x {info['size_mm'][1]} mm; print at 100 % and check a square measures "
        f"{load_board(args.board).square_length * 1000:g} mm"
    )
    return 0


def _intrinsics(args) -> int:
    from robot_policy.calibration.board import load_board
    from robot_policy.calibration.intrinsics import (
        CalibrationError,
        IntrinsicsOptions,
        calibrate_intrinsics,
        load_images,
    )
    from robot_policy.calibration.results import write_result
    from robot_policy.config import ConfigError

    out = _out_path(args, "intrinsics")
    try:
        board = load_board(args.board)
        opts = IntrinsicsOptions(
            fix_k3=args.fix_k3,
            zero_tangent=args.zero_tangent,
            rational=args.rational,
            min_views=args.min_views,
        )
        result = calibrate_intrinsics(load_images(args.images), board, opts, _detection(args))
    except (CalibrationError, ConfigError) as e:
        return _fail(e)
    body = result.to_json(board, {"images": str(args.images), "board_file": str(args.board)})
    write_result(out, "intrinsics", {"camera": args.camera, **body})
    i = result.intrinsics
    print_table(
        [
            {
                "fx": i.fx,
                "fy": i.fy,
                "cx": i.cx,
                "cy": i.cy,
                "rms_px": result.rms,
                "views": len(result.views_used),
                "rejected": len(result.views_rejected),
            }
        ]
    )
    for r in result.views_rejected:
        print(f"  rejected {r['view']}: {r['reason']}")
    print(f"wrote {out}")
    return 0


def _hand_eye(args) -> int:
    from robot_policy.calibration.board import load_board
    from robot_policy.calibration.hand_eye import calibrate_hand_eye, load_views
    from robot_policy.calibration.intrinsics import CalibrationError
    from robot_policy.calibration.results import write_result
    from robot_policy.camera_model import IntrinsicsError, load_intrinsics
    from robot_policy.config import ConfigError

    out = _out_path(args, "hand_eye")
    try:
        board = load_board(args.board)
        intr = load_intrinsics(args.intrinsics)
        result = calibrate_hand_eye(
            load_views(args.images), board, intr, args.mount.replace("-", "_"), args.method, _detection(args)
        )
    except (CalibrationError, ConfigError, IntrinsicsError, ValueError) as e:
        return _fail(e)
    data = {
        "images": str(args.images),
        "board_file": str(args.board),
        "intrinsics_file": str(args.intrinsics),
    }
    write_result(out, "hand_eye", {"camera": args.camera, **result.to_json(board, intr, data)})
    res = result.residuals
    name = result.frame_names[0]
    t = result.T[:3, 3] * 1000
    print(f"{name}: translation [{t[0]:.1f}, {t[1]:.1f}, {t[2]:.1f}] mm")
    print_table(
        [
            {
                "views": len(result.views_used),
                "rejected": len(result.views_rejected),
                "spread_mm": res["translation_rms_mm"],
                "spread_deg": res["rotation_rms_deg"],
                "reproj_px": res["reprojection_rms_px"],
            }
        ]
    )
    print(f"wrote {out}")
    return 0


def _latency(args) -> int:
    from robot_policy.calibration.intrinsics import CalibrationError
    from robot_policy.calibration.latency import arm_latency, camera_latency_from_folder, load_traces
    from robot_policy.calibration.results import write_result
    from robot_policy.config import ConfigError

    if not args.arm and not args.camera_frames and not args.live:
        raise SystemExit(
            "calibrate latency: give --arm TRACES.json, --live --hardware NAME and/or --camera-frames DIR"
        )
    if args.live and args.arm:
        raise SystemExit("calibrate latency: --live measures the arm; give it or --arm, not both")
    if args.live and not args.hardware:
        raise SystemExit("calibrate latency --live: give --hardware NAME (the robot setup whose arm to move)")
    if args.live and not (args.out or args.setup):
        from robot_policy.hardware.config import load_hardware_config

        try:
            args.setup = load_hardware_config(args.hardware).name
        except ConfigError as e:
            return _fail(e)
    if args.live and not args.traces_out:
        args.traces_out = str(_out_path(args, "latency").with_name("arm_traces.json"))
    out = _out_path(args, "latency")
    doc = {}
    if out.is_file():
        # Keep what was measured before (camera and arm are usually measured separately).
        doc = {k: v for k, v in json.loads(out.read_text()).items() if k in ("arm", "cameras")}
    rows = []
    try:
        if args.arm:
            tr = load_traces(args.arm)
            r = arm_latency(
                tr["t_commanded"], tr["q_commanded"], tr["t_measured"], tr["q_measured"], args.max_lag
            )
            doc["arm"] = {**r.to_json(), "data": str(args.arm)}
            rows.append({"what": "arm", "latency_ms": r.latency_s * 1000, "samples": r.samples})
        if args.live:
            from robot_policy.cli._calibrate_live import live_latency

            rows.append(live_latency(args, doc))
        if args.camera_frames:
            r = camera_latency_from_folder(args.camera_frames, args.display_hz)
            doc.setdefault("cameras", {})[args.camera] = {**r.to_json(), "data": str(args.camera_frames)}
            rows.append(
                {"what": f"camera {args.camera}", "latency_ms": r.latency_s * 1000, "samples": r.samples}
            )
    except (CalibrationError, ConfigError, ValueError, RuntimeError) as e:
        return _fail(e)
    write_result(out, "latency", doc)
    print_table(rows)
    print(f"wrote {out}")
    return 0


def _check(args) -> int:
    from robot_policy.calibration.ground_truth import check_hand_eye, check_intrinsics

    rows = []
    for seed in range(args.seeds):
        i = check_intrinsics(args.views, seed)
        row = {
            "seed": seed,
            "f_err_%": 100 * max(abs(i["fx_rel_err"]), abs(i["fy_rel_err"])),
            "pp_err_px": max(abs(i["cx_err_px"]), abs(i["cy_err_px"])),
            "rms_px": i["rms_px"],
        }
        for mount, key in (("eye_in_hand", "in_hand"), ("eye_to_hand", "to_hand")):
            h = check_hand_eye(mount, args.views, seed, args.method)
            row[f"{key}_mm"] = h["translation_err_mm"]
            row[f"{key}_deg"] = h["rotation_err_deg"]
        rows.append(row)
    print_table(rows)
    return 0
