"""``robot-policy bench camera``: camera_node through ROS 2, per backend: sustained frames/s,
capture-to-publish and capture-to-receive latency, frames lost, for N cameras of W x H at R Hz.

* ``realsense``: N ``SoftwareRealSense`` devices (pyrealsense2's software device) fed with
  generated colour + depth frames at R Hz, stamped at push in global time (the host wall clock,
  as a D4xx with global time does), run by ``CameraNode`` in a process of its own (a software
  device lives in one process, so the feeder and the node share it); depth is aligned to colour
  by ``rs.align``, as from a real camera.
* ``uvc``: the ``camera_node`` console script with a hardware YAML of N UVC cameras, each playing
  an MJPG video file written here at R fps (decoded by OpenCV as a UVC MJPG stream is); colour only.

A subscriber in this process receives every topic (best-effort sensor QoS). Figures per backend:
frames/s received per camera (colour), capture-to-publish p50/p99 (camera_node's ``/diagnostics``:
host clock after ``publish()`` minus the capture stamp, over the measured frames), capture-to-receive
p50/p99 (arrival here minus header stamp, ROS time), frames lost end to end (gaps in the received
capture stamps), frames the node's reader skipped (superseded) and the node's CPU use.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from robot_policy import conventions as conv
from robot_policy.console import add_command

BACKENDS = ("realsense", "uvc")


def register(sub) -> None:
    p = add_command(
        sub,
        "camera",
        help="camera_node through ROS 2 per backend (realsense software device, uvc video file): "
        "frames/s, capture-to-publish/receive latency, drops",
        description=__doc__.split("\n", 2)[2],
        epilog="examples:\n  robot-policy bench camera                         # 2 x 640x480 @ 30 Hz, 10 s per backend\n"
        "  robot-policy bench camera --backends uvc --seconds 30\n"
        "  robot-policy bench camera --cameras 1 --width 1280 --height 720",
    )
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default realsense,uvc)")
    p.add_argument("--cameras", type=int, default=2, help="cameras per backend (default 2)")
    p.add_argument("--width", type=int, default=640, help="image width (default 640)")
    p.add_argument("--height", type=int, default=480, help="image height (default 480)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    p.add_argument("--no-depth", action="store_true", help="realsense: colour only")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per backend (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (default 3)")
    p.add_argument("--out", help="JSON path (default outputs/bench/camera.json)")
    p.set_defaults(func=run)


# -- the realsense side: software devices fed in the node's own process ------------------------------
def feed_main(argv: list[str] | None = None) -> int:
    """``python -m robot_policy.bench.camera --feed ...``: CameraNode over N software RealSense
    devices, fed with generated frames at ``--fps`` from a thread until the node is stopped."""
    p = argparse.ArgumentParser(prog="python -m robot_policy.bench.camera")
    p.add_argument("--feed", action="store_true")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--no-depth", action="store_true")
    a, _ = p.parse_known_args(argv)  # the launcher appends --ros-args ...

    from robot_policy.cameras.realsense import RealSenseCamera, RealSenseConfig
    from robot_policy.cameras.realsense.software import SoftwareRealSense
    from robot_policy.ros._node import run_node
    from robot_policy.ros.camera_node import CameraNode

    depth = not a.no_depth
    devices = [SoftwareRealSense(a.width, a.height, fps=a.fps, serial=f"SW{i:04d}") for i in range(a.cameras)]
    cams = [
        RealSenseCamera(
            RealSenseConfig(
                name=f"cam{i}", width=a.width, height=a.height, fps=a.fps, depth=depth, serial=f"SW{i:04d}"
            ),
            device=sw.device,
        )
        for i, sw in enumerate(devices)
    ]
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 255, (a.height, a.width, 3), dtype=np.uint8) for _ in range(3)]
    dep = [rng.integers(300, 3000, (a.height, a.width), dtype=np.uint16) for _ in range(3)]
    stop = threading.Event()

    def feeder() -> None:
        period, k = 1.0 / a.fps, 0
        t0 = time.monotonic()
        while not stop.is_set():
            delay = t0 + k * period - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            wall_ms = time.time() * 1000.0  # "captured" now, in global time
            try:
                for sw in devices:
                    sw.push(rgb[k % 3], dep[k % 3] if depth else None, timestamp_ms=wall_ms, number=k)
            except RuntimeError:  # sensors stopped: shutting down
                return
            k += 1

    def factory():
        node = CameraNode(cameras=cams, hardware_name="bench_realsense")
        thread = threading.Thread(target=feeder, name="feeder", daemon=True)
        thread.start()
        close = node.close

        def close_all() -> None:
            stop.set()
            thread.join(timeout=5.0)
            close()

        node.close = close_all
        return node

    return run_node(factory)


def _write_video(path: Path, width: int, height: int, fps: float, frames: int) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video {path}")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))  # texture that compresses like a scene
    for i in range(frames):
        writer.write(np.roll(base, 4 * i, axis=1))  # moving: every frame differs
    writer.release()


def _uvc_hardware(tmp: Path, a) -> Path:
    import yaml

    from robot_policy.hardware.config import load_hardware_config

    video = tmp / "bench.avi"
    _write_video(video, a.width, a.height, a.fps, frames=int(a.fps * 4))
    base = load_hardware_config("sim_tabletop")
    cams = [
        {
            "name": f"cam{i}",
            "backend": "uvc",
            "width": a.width,
            "height": a.height,
            "fps": a.fps,
            "options": {"device": str(video), "loop": True},
        }
        for i in range(a.cameras)
    ]
    doc = {
        "name": "bench_uvc",
        "joint_names": base.joint_names,
        "position_lower": base.position_lower,
        "position_upper": base.position_upper,
        "velocity_limits": base.velocity_limits,
        "cameras": cams,
    }
    path = tmp / "bench_uvc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (s), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class _Receiver:
    """Arrival minus header stamp and the capture stamps of every image, per topic, while armed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.armed = False
        self.latency: dict[str, list[float]] = {}
        self.stamps: dict[str, list[float]] = {}
        self.first: dict[str, float] = {}

    def callback(self, topic: str):
        def cb(msg, t_wall: float) -> None:
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            with self.lock:
                self.first.setdefault(topic, t_wall)
                if self.armed:
                    self.latency.setdefault(topic, []).append(t_wall - stamp)  # ROS time = wall clock
                    self.stamps.setdefault(topic, []).append(stamp)

        return cb

    def arm(self) -> None:
        with self.lock:
            self.latency.clear()
            self.stamps.clear()
            self.armed = True

    def disarm(self) -> None:
        with self.lock:
            self.armed = False


def backend_run(backend: str, a, log: Path) -> dict:
    """Start camera_node for ``backend``, measure ``a.seconds`` after ``a.warmup``; one result row."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from robot_policy.ros.client import GraphClient
    from robot_policy.ros.launch_file import LaunchDescription, NodeSpec
    from robot_policy.ros.launcher import Launcher
    from robot_policy.runtime.align import count_missing

    depth = backend == "realsense" and not a.no_depth
    # Capture-to-publish percentiles over the measured frames (the node's window, in frames).
    params = {"diagnostics_period_s": "0.5", "latency_window": str(int(a.fps * a.seconds))}
    with tempfile.TemporaryDirectory(prefix="bench_camera_") as tmp:
        if backend == "realsense":
            spec = NodeSpec(
                pkg="robot_policy",
                executable=Path(sys.executable).name,
                name="cameras",
                params=params,
                args=["-m", "robot_policy.bench.camera", "--feed", "--cameras", str(a.cameras)]
                + ["--width", str(a.width), "--height", str(a.height), "--fps", str(a.fps)]
                + (["--no-depth"] if a.no_depth else []),
            )
        else:
            hw = _uvc_hardware(Path(tmp), a)
            spec = NodeSpec(
                pkg="robot_policy",
                executable="camera_node",
                name="cameras",
                params={**params, "hardware": str(hw)},
            )
        names = [f"cam{i}" for i in range(a.cameras)]
        topics = [conv.color_topic(n) for n in names] + (
            [conv.aligned_depth_topic(n) for n in names] if depth else []
        )
        rx = _Receiver()
        with open(log, "w") as f:
            launcher = Launcher(
                LaunchDescription(nodes=[spec], env={}, args={}, arg_docs={}), grace=5.0, color=False, out=f
            )
            launcher.start()
            try:
                with GraphClient("bench_camera") as c:
                    for t in topics:
                        c.subscribe(t, Image, keep=1, callback=rx.callback(t))
                    c.subscribe(conv.DIAGNOSTICS, DiagnosticArray, keep=20, sensor=False)
                    deadline = time.time() + 120
                    while len(rx.first) < len(topics):
                        if time.time() > deadline or not launcher.poll():
                            raise RuntimeError(
                                f"camera_node ({backend}) published nothing on {topics}; see {log}"
                            )
                        time.sleep(0.1)
                    time.sleep(a.warmup)
                    pid = launcher.procs[0].popen.pid
                    diag0 = {
                        n: c.diagnostics(f"camera: {n}", since=c.now() - 1.0, timeout=5) or {} for n in names
                    }
                    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
                    rx.arm()
                    time.sleep(a.seconds)
                    rx.disarm()
                    cpu1, t1 = _cpu_seconds(pid), time.monotonic()
                    since = c.now() - 0.3
                    diag1 = {n: c.diagnostics(f"camera: {n}", since=since, timeout=5) or {} for n in names}
            finally:
                launcher.shutdown()
    span = t1 - t0
    colour = [conv.color_topic(n) for n in names]
    fps = [len(rx.stamps.get(t, [])) / span for t in colour]
    recv = np.concatenate([rx.latency.get(t, []) for t in topics]) * 1e3 if topics else np.zeros(0)

    def lost(t: str) -> int:
        s = np.asarray(rx.stamps.get(t, []))
        return count_missing(s, a.fps, s.min(), s.max()) if s.size else 0

    def diag(n: str, key: str, d=diag1) -> float:
        try:
            return float(d[n].get(key, "nan"))
        except ValueError:
            return float("nan")

    def delta(key: str) -> int:
        return int(sum(diag(n, key) - diag(n, key, diag0) for n in names if diag0.get(n) and diag1.get(n)))

    row = {
        "backend": backend,
        "streams": f"{a.cameras} x {a.width}x{a.height}{' rgb+depth' if depth else ' rgb'} @ {a.fps:g} Hz",
        "fps_per_camera_min": float(min(fps)) if fps else 0.0,
        "fps_per_camera_mean": float(np.mean(fps)) if fps else 0.0,
        "capture_to_publish_ms_p50": float(np.nanmax([diag(n, "capture_to_publish_ms_p50") for n in names])),
        "capture_to_publish_ms_p99": float(np.nanmax([diag(n, "capture_to_publish_ms_p99") for n in names])),
        "capture_to_receive_ms_p50": float(np.percentile(recv, 50)) if recv.size else None,
        "capture_to_receive_ms_p99": float(np.percentile(recv, 99)) if recv.size else None,
        "lost_colour": sum(lost(t) for t in colour),
        "lost_depth": sum(lost(conv.aligned_depth_topic(n)) for n in names) if depth else None,
        "node_superseded": delta("frames_superseded"),
        "device_dropped": delta("frames_dropped"),
        "node_cpu_percent": 100.0 * (cpu1 - cpu0) / span if cpu0 is not None and cpu1 is not None else None,
        "seconds": span,
        "load_avg_1min": os.getloadavg()[0],
    }
    if launcher.failed:
        row["failed"] = str(launcher.failed)
    return row


def run(args: argparse.Namespace) -> int:
    from robot_policy.bench._common import save_results
    from robot_policy.console import print_table
    from robot_policy.ros.transport import apply_profile

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        print(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}", file=sys.stderr)
        return 2
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(80 + os.getpid() % 20)
    apply_profile()
    out_dir = Path(args.out).parent if args.out else Path("outputs/bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for backend in backends:
        log = out_dir / f"camera_{backend}.log"
        print(
            f"{backend}: {args.cameras} camera(s) {args.width}x{args.height} @ {args.fps:g} Hz through camera_node, "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s measured (log {log})",
            flush=True,
        )
        rows.append(backend_run(backend, args, log))
    print_table(
        rows,
        [
            "backend",
            "streams",
            "fps_per_camera_min",
            "capture_to_publish_ms_p50",
            "capture_to_publish_ms_p99",
            "capture_to_receive_ms_p50",
            "capture_to_receive_ms_p99",
            "lost_colour",
            "lost_depth",
            "node_superseded",
            "node_cpu_percent",
        ],
    )
    path = save_results("camera", rows, args.out)
    print(f"saved {path}")
    return 0 if all("failed" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(feed_main())
