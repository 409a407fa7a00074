"""camera_node over DDS, in its own process, with the most real sources that run here: a UVC
camera playing a video file written here, and a RealSense playing a recording made here through
pyrealsense2's software device and ``rs.recorder``. A recorder_node in the same graph records the
UVC camera's topic from a hardware YAML, as it records sim_node's cameras.

The hardware YAML of camera_node has a ``sim`` camera too, which camera_node must leave alone.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
rs = pytest.importorskip("pyrealsense2")
cv2 = pytest.importorskip("cv2")

from ros_graph import Graph, diagnostics, private_domain, wait_until  # noqa: E402

pytestmark = pytest.mark.ros

W, H, FPS = 64, 48, 30.0
N_VIDEO = 30  # frames in the looping video (1 s)
N_REC = 30  # frames in the RealSense recording (1 s, replayed after each end)
UVC_LATENCY = 0.05  # capture-to-arrival latency configured for the UVC camera (s)
CALIB_K = [[55.0, 0.0, 30.5], [0.0, 56.0, 22.5], [0.0, 0.0, 1.0]]

LAUNCH = """<launch>
  <arg name="cam_hw"/>
  <arg name="rec_hw"/>
  <arg name="calibration"/>
  <arg name="dataset"/>
  <node pkg="robot_policy" exec="camera_node" name="cameras" output="screen">
    <param name="hardware" value="$(var cam_hw)"/>
    <param name="calibration" value="$(var calibration)"/>
    <param name="reconnect_s" value="0.2"/>
  </node>
  <node pkg="robot_policy" exec="recorder_node" name="recorder" output="screen">
    <param name="hardware" value="$(var rec_hw)"/>
    <param name="dataset" value="$(var dataset)"/>
  </node>
</launch>
"""


def video_frame(i: int) -> np.ndarray:
    """BGR frame whose left half's grey level encodes ``i`` (large flat areas survive MJPG)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = 6 * i + 20
    img[:, W // 2 :, 2] = 200
    return img


def video_index(rgb: np.ndarray) -> int:
    return int(round((float(np.median(rgb[8:-8, 4 : W // 2 - 4])) - 20) / 6))


def stamp_of(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def write_video(path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for i in range(N_VIDEO):
        writer.write(video_frame(i))
    writer.release()


def write_recording(path) -> list[float]:
    """Record N_REC frames at 30 Hz (real pace: playback keeps the recorded pacing) through
    rs.recorder; frame i has red = i and depth 500 + 10 i mm. Returns the frames' global stamps (s)."""
    from robot_policy.cameras.realsense import RealSenseCamera, RealSenseConfig
    from robot_policy.cameras.realsense.software import SoftwareRealSense

    sw = SoftwareRealSense(W, H, fps=FPS, serial="SW0007")
    recorder = sw.record(str(path))
    cam = RealSenseCamera(RealSenseConfig(name="wrist", width=W, height=H, depth=True), device=recorder)
    cam.connect()
    stamps, t0 = [], time.monotonic()
    for i in range(N_REC):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 0], rgb[..., 2] = i, 200
        wall_ms = time.time() * 1000.0
        sw.push(rgb, np.full((H, W), 500 + 10 * i, np.uint16), timestamp_ms=wall_ms, number=i)
        stamps.append(wall_ms / 1000.0)
        cam.read(timeout_s=2.0)
        time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
    cam.disconnect()
    del cam, recorder
    sw.stop_recording()
    return stamps


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_graph import REPO
    from sensor_msgs.msg import CameraInfo, Image

    from robot_policy.calibration.results import write_result

    private_domain()
    tmp = tmp_path_factory.mktemp("camera_node")
    write_video(tmp / "top.avi")
    rec_stamps = write_recording(tmp / "wrist.db3")
    # A calibration for 'top' where camera_node looks by convention: <calibration>/<setup>/top_intrinsics.json.
    write_result(
        tmp / "calibration" / "camtest" / "top_intrinsics.json",
        "intrinsics",
        {"K": CALIB_K, "dist": [0.01, -0.02, 0.0, 0.0, 0.003], "image_size": [W, H]},
    )
    base = yaml.safe_load((REPO / "hardware" / "sim_tabletop.yaml").read_text())
    top = {
        "name": "top",
        "backend": "uvc",
        "width": W,
        "height": H,
        "fps": FPS,
        "options": {"device": str(tmp / "top.avi"), "loop": True, "latency_s": UVC_LATENCY},
    }
    wrist = {
        "name": "wrist",
        "backend": "realsense",
        "width": W,
        "height": H,
        "fps": FPS,
        "depth": True,
        "serial": "SW0007",
        "options": {"playback": str(tmp / "wrist.db3")},
    }
    sim_cam = {"name": "agentview", "backend": "sim", "width": 84, "height": 84}
    (tmp / "cams.yaml").write_text(
        yaml.safe_dump({**base, "name": "camtest", "cameras": [top, wrist, sim_cam]})
    )
    # The recorder records the live-like UVC stream: the recording's stamps repeat on every replay.
    (tmp / "rec.yaml").write_text(yaml.safe_dump({**base, "name": "camtest", "cameras": [top]}))
    (tmp / "cams.launch.xml").write_text(LAUNCH)
    g = Graph(
        str(tmp / "cams.launch.xml"),
        {
            "cam_hw": str(tmp / "cams.yaml"),
            "rec_hw": str(tmp / "rec.yaml"),
            "calibration": str(tmp / "calibration"),
            "dataset": str(tmp / "rec.zarr"),
        },
        tmp / "graph.log",
    )
    c = g.client
    for cam in ("top", "wrist"):
        c.subscribe(f"/{cam}/color/image_raw", Image, keep=120)
        c.subscribe(f"/{cam}/color/camera_info", CameraInfo, keep=120)
    c.subscribe("/wrist/aligned_depth_to_color/image_raw", Image, keep=120)
    c.subscribe("/wrist/aligned_depth_to_color/camera_info", CameraInfo, keep=5)
    c.subscribe("/diagnostics", DiagnosticArray, keep=20, sensor=False)
    try:
        c.latest("/top/color/image_raw", timeout=60)
        c.latest("/wrist/aligned_depth_to_color/image_raw", timeout=60)
        c.call("/recorder/discard", timeout=60)  # waits until the recorder is up
    except (TimeoutError, AssertionError):
        print(g.log())
        g.close()
        raise
    g.tmp, g.rec_stamps = tmp, rec_stamps
    yield g
    g.close()


def test_uvc_image_and_calibrated_camera_info_with_capture_stamps(graph):
    c = graph.client
    n0 = c.count("/top/color/image_raw")
    wait_until(lambda: c.count("/top/color/image_raw") >= n0 + 20, 30, "20 more top images")
    with c._cond:  # (arrival wall time, message): ROS time is the wall clock
        arrivals = list(c._msgs["/top/color/image_raw"])[-20:]
    img = arrivals[-1][1]
    assert (img.encoding, img.width, img.height, img.step) == ("rgb8", W, H, 3 * W)
    assert img.header.frame_id == "top_color_optical_frame"
    from robot_policy.ros.convert import image_to_frame

    rgb = image_to_frame(img).image
    assert rgb[H // 2, W - 5, 0] > 150  # the video's red half comes back in channel 0 (RGB)
    assert 0 <= video_index(rgb) < N_VIDEO
    stamps = np.array([stamp_of(m) for _, m in arrivals])
    assert np.all(np.diff(stamps) > 0)
    # Header stamps are capture times: arrival minus the configured latency at least, never the
    # publish time (a stamp taken at publish would be newer than arrival - latency).
    assert all(t_arr - stamp_of(m) >= UVC_LATENCY - 0.002 for t_arr, m in arrivals)
    # CameraInfo from calibration/<setup>/top_intrinsics.json, stamped like its image.
    infos = {stamp_of(m): m for m in c.messages("/top/color/camera_info")}
    info = infos[next(t for t in stamps[::-1] if t in infos)]
    assert (info.width, info.height, info.distortion_model) == (W, H, "plumb_bob")
    assert list(info.k) == pytest.approx(np.ravel(CALIB_K).tolist())
    assert list(info.d) == pytest.approx([0.01, -0.02, 0.0, 0.0, 0.003])
    assert (
        list(info.p)[:3] == pytest.approx([55.0, 0.0, 30.5]) and info.header.frame_id == img.header.frame_id
    )

    d = diagnostics(c, "camera: top", timeout=10, since=c.now() - 1.0)
    assert d["backend"] == "uvc" and d["state"] == "streaming" and int(d["frames_published"]) > 0
    assert float(d["rate_hz"]) > 0 and int(d["frames_dropped"]) == 0
    assert float(d["capture_to_publish_ms_p50"]) >= UVC_LATENCY * 1e3 - 2  # includes the camera latency
    assert d["intrinsics"].startswith("calibration:") and d["intrinsics"].endswith("top_intrinsics.json")
    assert float(d["graph_minus_monotonic_s"]) == pytest.approx(time.time() - time.monotonic(), abs=0.5)
    for key in ("frames_superseded", "read_timeouts", "capture_to_publish_ms_p99", "latency_s"):
        assert key in d


def test_realsense_playback_colour_and_aligned_depth(graph):
    from robot_policy.camera_model import pinhole_from_fovy
    from robot_policy.ros.convert import image_to_frame

    c = graph.client
    n0 = c.count("/wrist/aligned_depth_to_color/image_raw")
    wait_until(
        lambda: c.count("/wrist/aligned_depth_to_color/image_raw") >= n0 + 20, 30, "20 more depth images"
    )
    colours = {stamp_of(m): m for m in c.messages("/wrist/color/image_raw")}
    depths = c.messages("/wrist/aligned_depth_to_color/image_raw")[-20:]
    matched = 0
    for dmsg in depths:
        assert (dmsg.encoding, dmsg.width, dmsg.height) == ("16UC1", W, H)
        assert dmsg.header.frame_id == "wrist_color_optical_frame"  # aligned: the colour frame
        cmsg = colours.get(stamp_of(dmsg))
        if cmsg is None:  # its colour image was dropped on the way (best effort)
            continue
        matched += 1
        i = int(image_to_frame(cmsg).image[0, 0, 0])
        depth = image_to_frame(dmsg).image
        valid = depth > 0
        assert valid.mean() > 0.85 and np.all(depth[valid] == 500 + 10 * i)  # colour and depth of one frame
        # The recorded capture stamp (global time = the wall clock) comes out as the header stamp.
        assert stamp_of(dmsg) == pytest.approx(graph.rec_stamps[i], abs=2e-3)
    assert matched >= 10
    expected = pinhole_from_fovy(58.0, W, H)  # SoftwareRealSense's factory intrinsics
    for topic in ("/wrist/color/camera_info", "/wrist/aligned_depth_to_color/camera_info"):
        info = c.latest(topic)
        assert list(info.k) == pytest.approx(expected.K.ravel().tolist())
        assert info.header.frame_id == "wrist_color_optical_frame"
    d = diagnostics(c, "camera: wrist", timeout=10, since=c.now() - 1.0)
    assert d["serial"] == "SW0007" and d["timestamp_domain"] == "global_time" and d["clock"] == "wall"
    assert d["intrinsics"] == "device:SW0007"
    # Every end of the recording is an error the stream recovers from by reconnecting (replay).
    wait_until(lambda: int(diagnostics(c, "camera: wrist")["reconnects"]) >= 1, 30, "a replay")


def test_sim_cameras_are_left_to_sim_node(graph):
    c = graph.client
    assert "camera: agentview" not in {st.name for m in c.messages("/diagnostics") for st in m.status}
    assert c.node.count_publishers("/agentview/color/image_raw") == 0
    assert "cameras top (uvc 64x48@30, intrinsics calibration:" in graph.log()


def test_recorder_records_camera_node_topics(graph):
    from sensor_msgs.msg import JointState

    from robot_policy.data import EpisodeStore
    from robot_policy.hardware.config import load_hardware_config

    c = graph.client
    hw = load_hardware_config(graph.tmp / "rec.yaml")
    names = hw.command_names
    stop = threading.Event()

    def arm():  # /joint_states and /joint_commands at 20 Hz: the recorder's master clock
        q = np.zeros(len(names))
        while not stop.is_set():
            t = c.now()
            js = JointState(name=names, position=q.tolist(), velocity=[0.0] * len(names))
            js.header.stamp.sec, js.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
            c.publish("/joint_states", js, sensor=True)
            c.publish(
                "/joint_commands", JointState(header=js.header, name=names, position=q.tolist()), sensor=True
            )
            time.sleep(0.05)

    th = threading.Thread(target=arm, daemon=True)
    th.start()
    try:
        time.sleep(0.5)
        assert c.call("/recorder/start").success
        time.sleep(2.0)
        r = c.call("/recorder/stop")
    finally:
        stop.set()
        th.join()
    assert r.success, r.message + "\n" + graph.log()[-3000:]
    store = EpisodeStore.open(graph.tmp / "rec.zarr")
    ep = store.get_episode(store.num_episodes - 1)
    n = len(ep["joint_pos"])
    assert n >= 20
    assert ep["top_rgb"].shape == (n, H, W, 3) and ep["top_rgb"].dtype == np.uint8
    idx = [video_index(f) for f in ep["top_rgb"]]
    assert all(0 <= i < N_VIDEO for i in idx)
    # Frames aligned by capture stamp follow the video in time order (30 Hz sampled at 20 Hz).
    steps = np.mod(np.diff(idx), N_VIDEO)
    assert np.all(steps <= 5), idx
    assert store.episode_meta(store.num_episodes - 1)["robot"] == "camtest"


# -- the core (no graph) ---------------------------------------------------------------------------
def test_camera_stream_reconnects_after_the_stream_ends(tmp_path):
    from robot_policy.cameras import make_camera
    from robot_policy.runtime.camera_stream import CameraStream

    path = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for i in range(6):
        writer.write(video_frame(i))
    writer.release()
    opts = {"name": "top", "device": str(path), "width": W, "height": H}
    got = []
    cam = make_camera("uvc", opts)
    cam.connect()
    stream = CameraStream(cam, got.append, reconnect_s=0.05, warn=lambda m: None, error=lambda m: None)
    stream.start()
    try:
        wait_until(lambda: stream.reconnects >= 2, 30, "two replays after the file ended")
        st = stream.status()
        assert st["state"] == "streaming" and st["errors"] >= 2 and "ended after" in st["last_error"]
        assert st["frames_published"] == len(got) >= 12 and st["capture_to_publish_ms_p50"] >= 0
        idx = [video_index(c.color.image) for c in got]
        assert idx[0] == 0 and set(idx) <= set(range(6))  # each pass plays the file from its start
    finally:
        stream.stop()
    assert stream.status()["state"] == "stopped" and not cam.connected

    # reconnect_s <= 0: the stream stays down, said so.
    cam = make_camera("uvc", opts)
    cam.connect()
    stream = CameraStream(cam, lambda c: None, reconnect_s=0, warn=lambda m: None, error=lambda m: None)
    stream.start()
    wait_until(lambda: not stream.running, 30, "the stream to end")
    assert stream.status()["state"] == "failed"
    assert stream.published + cam.stats.superseded == 6  # every frame published (or superseded under load)
    stream.stop()


def test_driver_cameras_and_calibration_by_convention(tmp_path):
    from robot_policy.calibration.results import write_result
    from robot_policy.config import ConfigError
    from robot_policy.hardware.config import CameraConfig, load_hardware_config
    from robot_policy.runtime.camera_stream import camera_options, driver_cameras

    hw = load_hardware_config("sim_tabletop")
    assert driver_cameras(hw) == []  # sim cameras belong to sim_node
    with pytest.raises(
        ConfigError, match=r"\['wrist'\] of 'sim_tabletop' have backend 'sim'.*realsense, uvc"
    ):
        driver_cameras(hw, ["wrist"])
    hw.cameras.append(
        CameraConfig(name="top", backend="uvc", width=W, height=H, options={"device": "/dev/video4"})
    )
    with pytest.raises(
        ConfigError, match=r"no camera\(s\) \['side'\]; its cameras are \['agentview', 'wrist', 'top'\]"
    ):
        driver_cameras(hw, ["side"])
    assert [c.name for c in driver_cameras(hw)] == ["top"]
    opts = camera_options(hw, hw.cameras[-1], tmp_path)
    assert opts == {
        "name": "top",
        "width": W,
        "height": H,
        "fps": 30.0,
        "depth": False,
        "device": "/dev/video4",
    }
    calib = write_result(
        tmp_path / "sim_tabletop" / "top_intrinsics.json",
        "intrinsics",
        {"K": CALIB_K, "dist": [0] * 5, "image_size": [W, H]},
    )
    assert camera_options(hw, hw.cameras[-1], tmp_path)["intrinsics"] == str(calib)
    assert "intrinsics" not in camera_options(hw, hw.cameras[-1], "")  # lookup switched off
    hw.cameras[-1].options["intrinsics"] = "mine.json"  # the YAML's own file wins
    assert camera_options(hw, hw.cameras[-1], tmp_path)["intrinsics"] == "mine.json"
    hw.cameras[-1].options = {"devce": "/dev/video4"}
    from robot_policy.cameras import make_camera

    with pytest.raises(ConfigError, match=r"camera 'top'.*unknown field\(s\) \['devce'\]"):
        make_camera("uvc", camera_options(hw, hw.cameras[-1]))


def test_camera_info_from_intrinsics():
    from robot_policy.camera_model import Intrinsics
    from robot_policy.ros.convert import intrinsics_to_camera_info

    intr = Intrinsics(K=CALIB_K, dist=[0.1, 0.01, 0.0, 0.0], width=W, height=H)
    info = intrinsics_to_camera_info(intr, 12.5, "f")
    assert (info.distortion_model, list(info.d)) == ("plumb_bob", [0.1, 0.01, 0.0, 0.0, 0.0])
    assert (info.header.stamp.sec, info.header.stamp.nanosec, info.header.frame_id) == (12, 500_000_000, "f")
    assert list(info.p) == [55.0, 0.0, 30.5, 0.0, 0.0, 56.0, 22.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    rational = intrinsics_to_camera_info(
        Intrinsics(K=CALIB_K, dist=np.arange(1, 9) / 100, width=W, height=H), 0, ""
    )
    assert rational.distortion_model == "rational_polynomial" and len(rational.d) == 8
    device = intrinsics_to_camera_info(
        Intrinsics(K=CALIB_K, dist=[0.1] * 5, model="inverse_brown_conrady"), 0, ""
    )
    assert device.distortion_model == "inverse_brown_conrady" and list(device.d) == [0.1] * 5


def run_node(tmp_path, *params: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "camera_node"
    env = dict(os.environ, ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", "0"))
    args = [str(exe), "--ros-args", *[x for p in params for x in ("-p", p)]]
    return subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_camera_node_exits_cleanly_without_driver_cameras_and_loudly_on_bad_config(tmp_path):
    import yaml
    from ros_graph import REPO

    r = run_node(tmp_path, "hardware:=sim_tabletop")
    assert r.returncode == 0 and "no camera with a driver backend" in r.stderr, r.stderr
    r = run_node(tmp_path)
    assert r.returncode == 1 and "parameter 'hardware' is required" in r.stderr, r.stderr
    base = yaml.safe_load((REPO / "hardware" / "sim_tabletop.yaml").read_text())
    bad = {"name": "front", "backend": "realsense", "serial": "999000999", "width": 640, "height": 480}
    (tmp_path / "hw.yaml").write_text(yaml.safe_dump({**base, "cameras": [bad]}))
    r = run_node(tmp_path, f"hardware:={tmp_path / 'hw.yaml'}")
    assert r.returncode == 1 and "no RealSense with serial '999000999' is connected" in r.stderr, r.stderr


def test_bench_camera_smoke(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "robot-policy"
    out = tmp_path / "camera.json"
    argv = [str(exe), "bench", "camera", "--cameras", "1", "--width", "64", "--height", "48"]
    argv += ["--seconds", "1", "--warmup", "0.5", "--out", str(out)]
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(out.read_text())["results"]
    assert [row["backend"] for row in rows] == ["realsense", "uvc"]
    for row in rows:
        assert row["fps_per_camera_min"] > 0 and row["capture_to_receive_ms_p50"] is not None
    assert rows[0]["lost_depth"] is not None and rows[1]["lost_depth"] is None  # uvc: colour only
