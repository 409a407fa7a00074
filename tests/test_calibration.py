"""Calibration pieces that need no rendering: board definitions and the printable PNG, view
rejection, latency estimation (synthetic traces, a MuJoCo arm, filmed QR timestamps), the
``robot-policy calibrate board|latency`` commands and the result file format."""

from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from robot_policy.calibration import (  # noqa: E402
    BoardConfig,
    BoardDetector,
    arm_latency,
    board_image,
    camera_latency,
    load_board,
)
from robot_policy.calibration.latency import decode_timestamp, save_traces, timestamp_image  # noqa: E402
from robot_policy.calibration.results import default_path, read_result, write_result  # noqa: E402
from robot_policy.cli.main import main  # noqa: E402
from robot_policy.config import ConfigError  # noqa: E402

BOARD_YAML = """type: charuco
squares: [7, 5]
square_length: 0.04
marker_length: 0.03
dictionary: DICT_5X5_100
"""


@pytest.fixture
def board_file(tmp_path):
    p = tmp_path / "board.yaml"
    p.write_text(BOARD_YAML)
    return p


def test_board_yaml_loads_and_bad_values_name_the_field(board_file, tmp_path):
    b = load_board(board_file)
    assert (b.squares, b.square_length, b.marker_length, b.dictionary) == ([7, 5], 0.04, 0.03, "DICT_5X5_100")
    assert b.n_corners == 24
    bad = tmp_path / "bad.yaml"
    for text, msg in [
        (
            BOARD_YAML.replace("marker_length: 0.03", "marker_length: 0.05"),
            "need 0 < marker_length < square_length",
        ),
        (BOARD_YAML.replace("0.04", "40"), "square_length is in metres, got 40"),
        (BOARD_YAML.replace("charuco", "chessboard"), "'chessboard' is not one of \\['charuco'\\]"),
        (BOARD_YAML + "rows: 5\n", r"unknown field\(s\) \['rows'\]"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_board(bad)
    with pytest.raises(ConfigError, match="unknown dictionary 'DICT_9X9_1'"):
        BoardDetector(BoardConfig(dictionary="DICT_9X9_1"))
    with pytest.raises(ConfigError, match="needs 60 markers but DICT_4X4_50 has 50; use a larger dictionary"):
        BoardDetector(BoardConfig(squares=[12, 10], dictionary="DICT_4X4_50"))


def test_board_png_is_at_true_scale_and_detectable(board_file, tmp_path):
    from PIL import Image

    out = tmp_path / "board.png"
    assert main(["calibrate", "board", "--board", str(board_file), "--out", str(out), "--dpi", "150"]) == 0
    img = Image.open(out)
    assert img.info["dpi"] == pytest.approx((150, 150), abs=0.05)  # PNG stores pixels per metre
    px_per_m = 150 / 0.0254
    margin = round(0.010 * px_per_m)
    assert img.size == (round(0.28 * px_per_m) + 2 * margin, round(0.20 * px_per_m) + 2 * margin)
    # Every inner corner is found, one square apart at the printed scale.
    det = BoardDetector(load_board(board_file)).detect(np.asarray(img.convert("RGB")), "board.png")
    assert det.ok and len(det.ids) == 24
    by_id = dict(zip(det.ids.tolist(), det.corners))
    assert np.linalg.norm(by_id[1] - by_id[0]) == pytest.approx(0.04 * px_per_m, rel=0.005)


def test_views_without_a_board_or_blurred_are_rejected_with_the_reason():
    board = BoardConfig()
    img = board_image(board, dpi=60)  # ~94 px squares
    view = cv2.cvtColor(
        cv2.copyMakeBorder(img, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=255), cv2.COLOR_GRAY2RGB
    )
    det = BoardDetector(board)
    sharp = det.detect(view, "sharp")
    assert sharp.ok and sharp.blur_px < 1.2
    blurred = det.detect(cv2.GaussianBlur(view, (0, 0), 3.0), "blurred")
    assert not blurred.ok and blurred.reason.startswith("blurred:") and blurred.blur_px > 2.0
    # The measure tracks the blur applied (a Gaussian of sigma s adds in quadrature).
    mild = det.detect(cv2.GaussianBlur(view, (0, 0), 1.5), "mild")
    assert sharp.blur_px < mild.blur_px < blurred.blur_px
    empty = det.detect(np.full_like(view, 128), "wall")
    assert not empty.ok and empty.reason == "board not found: 0 corners, need 6"


# -- latency -------------------------------------------------------------------------------------
def sines(t: np.ndarray, n_joints: int = 3) -> np.ndarray:
    """Commanded joint motion with several frequencies (a clean correlation peak)."""
    freqs = [0.3, 0.7, 1.3, 2.1]
    q = np.zeros((len(t), n_joints))
    for j in range(n_joints):
        for k, f in enumerate(freqs):
            q[:, j] += 0.1 / (k + 1) * np.sin(2 * np.pi * f * t + 0.7 * j + k)
    q[:, -1] = 0.3  # a joint that does not move is ignored
    return q


def test_arm_latency_recovers_a_known_shift_from_jittered_traces():
    rng = np.random.default_rng(0)
    true_latency = 0.037
    t_cmd = np.cumsum(rng.uniform(0.008, 0.012, 800))  # ~100 Hz commands, jittered
    t_meas = np.cumsum(rng.uniform(0.0015, 0.0025, 4000))  # ~500 Hz joint states, jittered
    q_cmd = sines(t_cmd)
    q_meas = sines(t_meas - true_latency) + rng.normal(0, 2e-4, (len(t_meas), 3)) + [0.01, -0.02, 0.0]
    r = arm_latency(t_cmd, q_cmd, t_meas, q_meas)
    assert r.latency_s == pytest.approx(true_latency, abs=0.005)
    assert r.details["joints_used"] == [0, 1] and r.details["peak_correlation"] > 0.95
    # Stamps on different clocks show up as an impossible negative latency, flagged.
    r = arm_latency(t_cmd, q_cmd, t_meas - 0.1, q_meas)
    assert r.latency_s < 0 and "not on one clock" in r.details["warning"]


def mujoco_arm_response(delay_s: float, duration_s: float = 6.0):
    """The tabletop Panda's position servos (real MuJoCo physics) following a commanded motion
    that reaches them ``delay_s`` late; returns commanded and measured traces (100 / 500 Hz)."""
    import mujoco

    from robot_policy import resources

    model = mujoco.MjModel.from_xml_path(str(resources.shipped_file("sim/tabletop.xml")))
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, 0)
    home = data.qpos[:7].copy()
    dt = model.opt.timestep

    def command(t):
        return home + np.r_[sines(np.atleast_1d(t), 3)[0, :2], 0.0, 0.0, 0.0, 0.0, 0.0] * [
            1,
            1,
            0,
            0,
            0,
            0,
            0,
        ]

    data.ctrl[:7] = home
    t_cmd, q_cmd, t_meas, q_meas = [], [], [], []
    for k in range(int(duration_s / dt)):
        t = k * dt
        if k % 5 == 0:  # the controller sends a command every 10 ms ...
            t_cmd.append(t)
            q_cmd.append(command(t))
        data.ctrl[:7] = command(t - delay_s)  # ... which reaches the servos delay_s later
        mujoco.mj_step(model, data)
        t_meas.append(t + dt)
        q_meas.append(data.qpos[:7].copy())
    return np.array(t_cmd), np.array(q_cmd), np.array(t_meas), np.array(q_meas)


def test_arm_latency_of_a_simulated_arm_moves_by_the_injected_delay():
    base = arm_latency(*mujoco_arm_response(0.0))
    delayed = arm_latency(*mujoco_arm_response(0.040))
    # The servo's own tracking lag is part of the arm's latency; the injected delay adds to it.
    assert 0.0 <= base.latency_s < 0.2  # ~90 ms: kp 2000 / kv 200 servos on the Panda's links
    assert delayed.latency_s - base.latency_s == pytest.approx(0.040, abs=0.005)
    assert base.details["joints_used"] == [0, 1]


def test_camera_latency_from_filmed_qr_timestamps():
    rng = np.random.default_rng(1)
    display_hz, true_latency = 60.0, 0.052
    shown, stamps = [], []
    for k in range(60):
        # A 30 fps camera, its clock unrelated to the display's: any phase against the refresh.
        t_capture = 100.0 + k / 30.0 + rng.uniform(0, 1 / 30)
        displayed = np.floor(t_capture * display_hz) / display_hz  # the frame on screen at that instant
        img = timestamp_image(displayed)
        # What the camera sees: the screen, smaller, slightly blurred, in colour.
        img = cv2.GaussianBlur(
            cv2.resize(img, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA), (0, 0), 0.6
        )
        shown.append(decode_timestamp(cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)))
        stamps.append(t_capture + true_latency + rng.normal(0, 0.002))  # the pipeline's arrival stamp
    assert all(s is not None for s in shown)
    r = camera_latency(shown, stamps, display_hz)
    assert r.latency_s == pytest.approx(true_latency, abs=0.005)
    assert r.samples == 60 and r.details["display_age_s"] == pytest.approx(0.5 / 60)


def test_latency_cli_merges_arm_and_camera_results(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    t = np.arange(0, 6, 0.002)
    traces = tmp_path / "traces.json"
    save_traces(traces, t, sines(t), t, sines(t - 0.025))
    frames = tmp_path / "qr"
    frames.mkdir()
    stamps = {}
    for k in range(8):
        shown = 50.0 + k * 0.1
        cv2.imwrite(str(frames / f"f{k}.png"), timestamp_image(shown))
        stamps[f"f{k}.png"] = shown + 0.030 + 1 / 120 + rng.normal(0, 1e-4)
    (frames / "stamps.json").write_text(json.dumps(stamps))
    monkeypatch.chdir(tmp_path)  # --setup writes under ./calibration/<setup>/
    assert main(["calibrate", "latency", "--arm", str(traces), "--setup", "bench"]) == 0
    assert (
        main(
            ["calibrate", "latency", "--camera-frames", str(frames), "--camera", "wrist", "--setup", "bench"]
        )
        == 0
    )
    out = tmp_path / "calibration" / "bench" / "latency.json"
    doc = read_result(out, "latency")
    assert doc["arm"]["latency_s"] == pytest.approx(0.025, abs=0.002)
    assert doc["cameras"]["wrist"]["latency_s"] == pytest.approx(0.030, abs=0.002)
    assert doc["date"] and doc["software"]["opencv"].startswith("4.")


def test_result_files_are_written_atomically_with_their_kind(tmp_path):
    p = write_result(
        tmp_path / "x" / "wrist_intrinsics.json", "intrinsics", {"K": np.eye(3), "rms": np.float32(0.1)}
    )
    doc = read_result(p, "intrinsics")
    assert doc["K"] == np.eye(3).tolist() and doc["rms"] == pytest.approx(0.1)
    assert not list(p.parent.glob("*.tmp"))
    with pytest.raises(ValueError, match="kind is 'intrinsics', expected 'hand_eye'"):
        read_result(p, "hand_eye")
    assert str(default_path("panda", "hand_eye", "wrist")) == "calibration/panda/wrist_hand_eye.json"
    assert str(default_path("panda", "latency")) == "calibration/panda/latency.json"
