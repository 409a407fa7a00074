"""The camera contract and registry, the ``sim`` backend on a real MuJoCo scene, and the ``uvc``
backend with a video file (written here with cv2.VideoWriter) standing in for a V4L2 device."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from robot_policy.camera_model import IntrinsicsError
from robot_policy.cameras import (
    CAMERAS,
    CameraError,
    camera_config,
    make_camera,
    options_from_hardware,
)
from robot_policy.config import ConfigError
from robot_policy.hardware.config import CameraConfig as HardwareCamera


def test_registry_lists_backends_and_errors_name_the_field():
    assert CAMERAS.names() == ["realsense", "sim", "uvc"]
    with pytest.raises(ConfigError, match="unknown camera backend 'gige'; known: realsense, sim, uvc"):
        camera_config("gige", {})
    with pytest.raises(ConfigError, match=r"camera 'wrist'.*unknown field\(s\) \['fov'\]"):
        make_camera("uvc", {"name": "wrist", "fov": 60})
    with pytest.raises(ConfigError, match="camera 'wrist': fps must be > 0, got 0"):
        camera_config("uvc", {"name": "wrist", "fps": 0})
    with pytest.raises(ConfigError, match="backend 'uvc' has no depth stream; set depth: false"):
        make_camera("uvc", {"name": "wrist", "depth": True})
    with pytest.raises(IntrinsicsError, match="intrinsics file .*nope.json does not exist"):
        make_camera("uvc", {"intrinsics": "/nope.json"})


def test_options_from_a_hardware_yaml_camera_entry():
    hw_cam = HardwareCamera(
        name="front", width=640, height=480, fps=30, depth=True, serial="0421", backend="realsense"
    )
    cfg = camera_config("realsense", options_from_hardware(hw_cam, {"global_time": False}))
    assert (cfg.name, cfg.width, cfg.height, cfg.depth, cfg.serial, cfg.global_time) == (
        "front",
        640,
        480,
        True,
        "0421",
        False,
    )
    # A backend without a serial field simply does not receive it.
    uvc = camera_config("uvc", options_from_hardware(HardwareCamera(name="top", backend="uvc", serial="x")))
    assert not hasattr(uvc, "serial")


# -- sim ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tabletop():
    from robot_policy.sim import make_env

    env = make_env("tabletop", cameras=None)
    env.reset(seed=0)
    yield env.unwrapped
    env.close()


def test_sim_camera_renders_the_scene_it_is_given(tabletop):
    u = tabletop
    cam = make_camera(
        "sim", {"name": "agentview", "width": 96, "height": 64, "depth": True}, model=u.model, data=u.data
    )
    with pytest.raises(CameraError, match="not connected"):
        cam.read()
    with cam:
        c0 = cam.read()
        assert c0.color.image.shape == (64, 96, 3) and c0.color.image.dtype == np.uint8
        assert c0.color.image.std() > 5  # the table and arm, not a blank frame
        assert c0.stamp == pytest.approx(u.data.time) and c0.depth.stamp == c0.stamp
        d = c0.depth.image
        assert d.dtype == np.uint16 and d.shape == (64, 96)
        assert 300 < np.median(d[d > 0]) < 3000  # the table is 0.3-3 m from the camera (mm)
        u.step(np.r_[u.data.qpos[: u.n_arm], -1.0].astype(np.float32))
        c1 = cam.read()
        assert c1.number == c0.number + 1 and c1.stamp > c0.stamp
        intr = cam.intrinsics()
        assert intr.fy == pytest.approx(0.5 * 64 / math.tan(math.radians(50) / 2))
        assert (intr.cx, intr.cy) == ((96 - 1) / 2, (64 - 1) / 2) and intr.source == "mujoco:agentview"
        assert cam.status()["frames_read"] == 2
    with pytest.raises(CameraError, match=r"no camera 'top'; cameras: \['agentview', 'sideview', 'wrist'\]"):
        make_camera("sim", {"name": "top"}, model=u.model, data=u.data)
    with pytest.raises(CameraError, match="pass model= and data="):
        make_camera("sim", {"name": "agentview"})


def test_sim_depth_is_the_distance_along_the_optical_axis():
    from robot_policy.calibration.board import BoardConfig
    from robot_policy.calibration.synthetic import BoardScene
    from robot_policy.camera_model import invert_pose

    scene = BoardScene(BoardConfig(), width=160, height=120, texture_dpi=100)
    try:
        cam = make_camera(
            "sim",
            {"name": "fixed", "width": 160, "height": 120, "depth": True},
            model=scene.model,
            data=scene.data,
        )
        cam.connect()
        c = cam.read()
        # Project the board centre with the camera's own intrinsics: its depth pixel holds its z.
        p = invert_pose(scene.camera_pose("fixed")) @ np.r_[scene.board_center(), 1.0]
        u, v = (cam.intrinsics().K @ p[:3])[:2] / p[2]
        assert c.depth.image[int(round(v)), int(round(u))] == pytest.approx(p[2] * 1000.0, abs=2.0)
        cam.disconnect()
    finally:
        scene.close()


# -- uvc (a video file as the device) ------------------------------------------------------------
N_FRAMES, VW, VH, VFPS = 12, 64, 48, 30.0


def coded_frame(i: int) -> np.ndarray:
    """BGR frame whose left half's grey level encodes ``i`` (large flat areas survive MJPG)."""
    img = np.zeros((VH, VW, 3), np.uint8)
    img[:, : VW // 2] = 15 * i + 20
    img[:, VW // 2 :, 2] = 200  # red in BGR: the backend must return it as RGB channel 0
    return img


def decode_index(rgb: np.ndarray) -> int:
    return int(round((float(np.median(rgb[8:-8, 4 : VW // 2 - 4])) - 20) / 15))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    import cv2

    path = tmp_path_factory.mktemp("uvc") / "source.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VFPS, (VW, VH))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(coded_frame(i))
    writer.release()
    return path


def test_uvc_delivers_every_frame_in_order_when_not_realtime(video):
    cam = make_camera(
        "uvc", {"name": "top", "device": str(video), "width": VW, "height": VH, "realtime": False}
    )
    with cam:
        seen = []
        for _ in range(N_FRAMES):
            c = cam.read(timeout_s=5.0)
            assert c.color.image.shape == (VH, VW, 3)
            assert c.color.image[VH // 2, VW - 5, 0] > 150  # red comes back in channel 0 (RGB)
            seen.append((c.number, decode_index(c.color.image)))
        assert seen == [(i, i) for i in range(N_FRAMES)]
        with pytest.raises(CameraError, match=f"ended after {N_FRAMES} frames"):
            cam.read(timeout_s=5.0)
        st = cam.status()
        assert st["frames_read"] == N_FRAMES and st["frames_dropped"] == 0 and st["frames_superseded"] == 0
        assert st["mode"]["width"] == VW and st["mode"]["fps"] == pytest.approx(VFPS)


def test_uvc_realtime_read_returns_the_newest_frame(video):
    cam = make_camera("uvc", {"name": "top", "device": str(video), "width": VW, "height": VH, "loop": True})
    with cam:
        first = cam.read(timeout_s=5.0)
        time.sleep(4 / VFPS)  # the "camera" keeps capturing while nobody reads
        later = cam.read(timeout_s=5.0)
        assert later.stamp > first.stamp
        assert decode_index(later.color.image) == later.number % N_FRAMES
        # Frames captured but not read are superseded (the reader was slow), never "dropped".
        st = cam.status()
        assert st["frames_superseded"] >= 1 and st["frames_dropped"] == 0
        assert 0 <= st["latency_s"] < 1.0


def test_uvc_errors_say_what_to_change(video):
    with pytest.raises(CameraError, match=r"delivers 64x48, config asks 640x480; set width/height"):
        make_camera("uvc", {"name": "top", "device": str(video), "width": 640, "height": 480}).connect()
    with pytest.raises(CameraError, match="cannot open '/dev/video-missing'"):
        make_camera("uvc", {"name": "top", "device": "/dev/video-missing"}).connect()
    cam = make_camera(
        "uvc", {"name": "top", "device": str(video), "width": VW, "height": VH, "realtime": False}
    )
    with cam:
        cam.read(timeout_s=5.0)
    with pytest.raises(CameraError, match="not connected"):
        cam.read()
    intr = cam.intrinsics()  # no calibration file: a nominal pinhole from fovy_deg, said so
    assert intr.source == "nominal:fovy=60.0" and intr.fy == pytest.approx(
        0.5 * VH / math.tan(math.radians(30))
    )
