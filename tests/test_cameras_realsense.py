"""RealSense backend through real pyrealsense2: a software device (frames, timestamps and frame
numbers we generate) and the playback of a recording made here with ``rs.recorder``. No mocks."""

from __future__ import annotations

import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from robot_policy.cameras import CameraError, CameraTimeout, make_camera  # noqa: E402
from robot_policy.cameras.clock import wall_minus_monotonic  # noqa: E402
from robot_policy.cameras.realsense import RealSenseCamera, RealSenseConfig  # noqa: E402
from robot_policy.cameras.realsense.software import SoftwareRealSense  # noqa: E402
from robot_policy.config import ConfigError  # noqa: E402

W, H = 64, 48


def frame_pair(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour and depth that identify frame ``i`` (so a mispaired capture is visible)."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = i
    rgb[..., 1] = np.arange(W, dtype=np.uint8)[None, :]  # a column ramp: catches flipped channels
    rgb[..., 2] = 200
    depth = np.full((H, W), 500 + 10 * i, np.uint16)
    return rgb, depth


@pytest.fixture
def software():
    sw = SoftwareRealSense(W, H, fps=30, serial="SW0001")
    cam = RealSenseCamera(RealSenseConfig(name="wrist", width=W, height=H, depth=True), device=sw.device)
    cam.connect()
    yield sw, cam
    cam.disconnect()


def assert_depth_matches(capture, expected_mm: int):
    d = capture.depth.image
    assert d.shape == (H, W) and d.dtype == np.uint16
    valid = d > 0
    # rs.align leaves a few holes (pixels no depth pixel projects onto), never wrong values.
    assert valid.mean() > 0.85
    assert np.all(d[valid] == expected_mm)


def test_software_device_colour_and_aligned_depth_with_host_stamps(software):
    sw, cam = software
    for i in range(5):
        rgb, depth = frame_pair(i)
        t_capture = time.monotonic() - 0.004  # the device captured 4 ms before it sent the frame
        wall_ms = (t_capture + wall_minus_monotonic()) * 1000.0  # global time: host wall clock, ms
        sw.push(rgb, depth, timestamp_ms=wall_ms, number=i)
        c = cam.read(timeout_s=2.0)
        assert c.number == i
        np.testing.assert_array_equal(c.color.image, rgb)  # RGB order, untouched
        assert_depth_matches(c, 500 + 10 * i)
        assert c.stamp == c.depth.stamp == c.color.stamp
        assert c.stamp == pytest.approx(t_capture, abs=1e-4)  # the capture time, not arrival
        assert c.color.camera == "wrist"
    st = cam.status()
    assert st["frames_received"] == 5 and st["frames_read"] == 5 and st["frames_dropped"] == 0
    assert st["serial"] == "SW0001" and st["timestamp_domain"] == "global_time" and st["clock"] == "wall"
    assert st["clock_offset_s"] == pytest.approx(-wall_minus_monotonic(), abs=1e-3)
    assert 0.004 <= st["latency_s"] < 1.0  # capture-to-read, measured on the host


def test_read_returns_the_newest_capture_and_counts_drops_from_frame_numbers(software):
    sw, cam = software
    t0 = time.time() * 1000.0
    for n in (0, 1, 2, 5, 6, 9):  # the device skipped 3, 4, 7, 8
        rgb, depth = frame_pair(n)
        sw.push(rgb, depth, timestamp_ms=t0 + n * 33.3, number=n)
    time.sleep(0.05)
    c = cam.read(timeout_s=2.0)
    assert c.number == 9  # the newest, not the oldest queued
    assert c.color.image[0, 0, 0] == 9
    assert_depth_matches(c, 590)
    st = cam.status()
    assert st["frames_dropped"] == 4
    assert st["frames_received"] == 6
    with pytest.raises(CameraTimeout, match="no new frame"):
        cam.read(timeout_s=0.05)  # nothing newer than frame 9


def test_colour_waits_for_its_depth_partner(software):
    sw, cam = software
    t0 = time.time() * 1000.0
    rgb, depth = frame_pair(3)
    sw.push(rgb, None, timestamp_ms=t0, number=3)  # colour first, depth late
    with pytest.raises(CameraTimeout):
        cam.read(timeout_s=0.05)
    sw.push(np.zeros_like(rgb), depth, timestamp_ms=t0 + 100, number=4, depth_timestamp_ms=t0)
    c = cam.read(timeout_s=2.0)
    assert c.color.image[0, 0, 0] == 3  # paired by timestamp: depth of frame 3 with colour of frame 3
    assert_depth_matches(c, 530)


def test_device_clock_domain_is_mapped_by_arrival_with_known_spacing(software):
    sw, cam = software
    device_zero = 1234.5  # the device's own clock (s), unrelated to the host's
    stamps, captured = [], []
    for i in range(6):
        captured.append(time.monotonic())
        sw.push(
            *frame_pair(i),
            timestamp_ms=(device_zero + i * 0.0333) * 1000.0,
            number=i,
            domain="hardware_clock",
        )
        stamps.append(cam.read(timeout_s=2.0).stamp)
        time.sleep(0.01)
    st = cam.status()
    assert st["clock"] == "device" and st["timestamp_domain"] == "hardware_clock"
    # Offset from the fastest arrival: stamps are never before capture, by at most the transport delay.
    assert all(s >= c - 1e-6 for s, c in zip(stamps, captured))
    assert stamps[-1] - captured[-1] < 0.05
    # The device's spacing is kept exactly once the estimate has settled on the fastest frame.
    offset = st["clock_offset_s"]
    assert stamps[-1] == pytest.approx(device_zero + 5 * 0.0333 + offset, abs=1e-9)


def test_intrinsics_from_the_device_then_from_calibration(software, tmp_path):
    sw, cam = software
    intr = cam.intrinsics()
    assert intr.width == W and intr.height == H and intr.source == "device:SW0001"
    assert intr.cx == pytest.approx((W - 1) / 2) and intr.model == "plumb_bob"
    calib = tmp_path / "wrist_intrinsics.json"
    calib.write_text(
        '{"K": [[50, 0, 30], [0, 51, 22], [0, 0, 1]], "dist": [0.1, 0, 0, 0, 0], "image_size": [64, 48]}'
    )
    cam2 = RealSenseCamera(RealSenseConfig(width=W, height=H, intrinsics=str(calib)), device=sw.device)
    assert cam2.intrinsics().fy == 51 and cam2.intrinsics().source == f"calibration:{calib}"
    with pytest.raises(ConfigError, match="calibrated at 64x48 but the camera streams 640x480"):
        RealSenseCamera(RealSenseConfig(width=640, height=480, intrinsics=str(calib)), device=sw.device)


def test_missing_stream_mode_lists_what_the_device_has():
    sw = SoftwareRealSense(W, H, fps=30)
    cam = RealSenseCamera(RealSenseConfig(width=W, height=H, fps=60, depth=True), device=sw.device)
    with pytest.raises(CameraError, match=r"no color stream 64x48@60 rgb8; available: \['64x48@30 rgb8'\]"):
        cam.connect()


def test_unknown_serial_lists_connected_serials():
    # A real librealsense context: on this machine no camera is attached.
    cam = make_camera("realsense", {"name": "front", "serial": "123456789012"})
    with pytest.raises(
        CameraError, match=r"no RealSense with serial '123456789012' is connected; connected serials: "
    ):
        cam.connect()
    assert not cam.connected


def test_recordings_of_two_cameras_play_back_by_serial(tmp_path):
    # Record two cameras at once (each through rs.recorder), then play both back at once, each
    # chosen by its serial: the path of several real cameras, through librealsense's playback.
    serials = {"SW0042": 0, "SW0043": 100}  # serial -> offset of the frame content
    t0 = time.time() * 1000.0
    for serial, base in serials.items():
        sw = SoftwareRealSense(W, H, fps=30, serial=serial)
        recorder = sw.record(str(tmp_path / f"{serial}.db3"))
        cam = RealSenseCamera(RealSenseConfig(name=serial, width=W, height=H, depth=True), device=recorder)
        cam.connect()
        for i in range(8):
            sw.push(*frame_pair(base + i), timestamp_ms=t0 + i * 33.3, number=i)
            assert cam.read(timeout_s=2.0).number == i
        cam.disconnect()
        del cam, recorder
        sw.stop_recording()  # the file is complete once the recorder's last reference is gone

    opts = {"width": W, "height": H, "depth": True, "playback_realtime": False}
    cams = {
        serial: make_camera(
            "realsense",
            {**opts, "name": f"cam{base}", "serial": serial, "playback": str(tmp_path / f"{serial}.db3")},
        )
        for serial, base in serials.items()
    }
    for c in cams.values():
        c.connect()
    try:
        for serial, c in cams.items():
            got = []
            while True:
                try:
                    got.append(c.read(timeout_s=2.0))
                except CameraError as e:  # the end of the recording, once nothing more comes
                    assert "ended after 8 colour frames" in str(e)
                    break
            assert got, "no frame played back"
            last, base = got[-1], serials[serial]
            # Playback delivers every recorded frame (numbers intact); reads see the newest.
            assert c.status()["frames_received"] == 8 and c.status()["frames_dropped"] == 0
            assert c.status()["serial"] == serial
            assert last.number == 7 and last.color.image[0, 0, 0] == base + 7
            assert_depth_matches(last, 500 + 10 * (base + 7))
            # Recorded global timestamps come back as they were taken, then map to the host clock.
            assert last.device_stamp == pytest.approx((t0 + 7 * 33.3) / 1000.0, abs=1e-6)
            assert [g.stamp for g in got] == sorted(g.stamp for g in got)
    finally:
        for c in cams.values():
            c.disconnect()

    wrong = make_camera(
        "realsense", {**opts, "name": "c", "serial": "999", "playback": str(tmp_path / "SW0042.db3")}
    )
    with pytest.raises(CameraError, match="has serial SW0042, config asks for serial 999"):
        wrong.connect()


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="playback file .* does not exist"):
        make_camera("realsense", {"playback": str(tmp_path / "none.db3")})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['exposure'\]"):
        make_camera("realsense", {"exposure": 10})
    with pytest.raises(ConfigError, match="unknown camera backend 'kinect'; known: realsense, sim, uvc"):
        make_camera("kinect", {})
