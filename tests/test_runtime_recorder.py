"""Recorder core: timestamp alignment, missing-frame refusal naming the stream, atomic discard."""

from __future__ import annotations

import numpy as np
import pytest

from robot_policy.data import EpisodeStore
from robot_policy.runtime.recorder import EpisodeRecorder, RecorderError, Stream, count_missing


def _recorder(path, max_missing=2, strict=False):
    return EpisodeRecorder(
        path,
        [
            Stream("/joint_states", ["joint_pos"], rate=10.0),
            Stream("/cam/color/image_raw", ["cam_rgb"], rate=10.0),
            Stream("/joint_commands", ["action"], rate=10.0, mode="next"),
        ],
        master="/joint_states",
        fps=10.0,
        robot="test",
        max_missing=max_missing,
        strict=strict,
    )


def _feed(rec, n=20, drop_cam=(), cam_delay=0.03):
    for k in range(n):
        t = 100.0 + 0.1 * k
        rec.add("/joint_commands", t - 0.05, {"action": np.full(2, k, np.float32)})
        rec.add("/joint_states", t, {"joint_pos": np.full(2, k, np.float32)})
        if k not in drop_cam:
            # Camera frames arrive in another order and are captured slightly before the joints.
            rec.add("/cam/color/image_raw", t - cam_delay, {"cam_rgb": np.full((4, 4, 3), k, np.uint8)})
    rec.add("/joint_commands", 100.0 + 0.1 * n - 0.05, {"action": np.full(2, n, np.float32)})


def test_samples_captured_before_start_never_leak_into_the_episode(tmp_path):
    rec = _recorder(tmp_path / "d.zarr")
    # Frames 0-4 were captured before the start request (still in flight, e.g. before a reset).
    rec.start({}, t_start=100.0 + 0.1 * 5 - 0.06)
    _feed(rec)
    rec.stop({"success": True})
    ep = EpisodeStore.open(tmp_path / "d.zarr").get_episode(0)
    assert ep["joint_pos"][0, 0] == 5 and len(ep["joint_pos"]) == 15
    np.testing.assert_array_equal(ep["cam_rgb"][:, 0, 0, 0], np.arange(5, 20))


def test_count_missing():
    st = np.array([0.0, 0.1, 0.2, 0.5, 0.6])
    assert count_missing(st, 10.0, 0.0, 0.6) == 2
    assert count_missing(st, 10.0, 0.0, 0.8) == 4
    assert count_missing(np.array([]), 10.0, 0.0, 0.9) == 10


def test_aligns_by_capture_stamp_and_commits(tmp_path):
    rec = _recorder(tmp_path / "d.zarr")
    rec.start({"operator": "test"})
    _feed(rec)
    idx, report = rec.stop({"success": True})
    assert idx == 0 and report["missing"]["/cam/color/image_raw"] == 0
    store = EpisodeStore.open(tmp_path / "d.zarr")
    ep = store.get_episode(0)
    assert len(ep["joint_pos"]) == 20
    # Frame k: camera frame k (captured just before), action k+1 (the command after the obs).
    np.testing.assert_array_equal(ep["cam_rgb"][:, 0, 0, 0], np.arange(20))
    np.testing.assert_array_equal(ep["action"][:, 0], np.arange(1, 21))
    meta = store.episode_meta(0)
    assert meta["success"] is True and meta["operator"] == "test"


def test_strict_refuses_episode_with_dropped_camera_frames_naming_stream(tmp_path):
    rec = _recorder(tmp_path / "d.zarr", max_missing=2, strict=True)
    rec.start()
    _feed(rec, drop_cam=(5, 6, 7, 9))
    with pytest.raises(RecorderError, match="cam/color/image_raw.*missing 4 frames"):
        rec.stop()
    assert not (tmp_path / "d.zarr").exists()
    rec.discard()
    with pytest.raises(RecorderError, match="0 samples"):
        rec.stop()


def test_a_gapped_episode_is_committed_with_its_gaps_flagged_and_listed(tmp_path):
    from robot_policy.data import SequenceDataset

    rec = _recorder(tmp_path / "d.zarr", max_missing=2)  # not strict: the default
    rec.start()
    _feed(rec, drop_cam=(5, 6, 7, 9))
    idx, report = rec.stop()
    assert idx == 0 and report["missing"]["/cam/color/image_raw"] == 4
    store = EpisodeStore.open(tmp_path / "d.zarr")
    assert store.schema["valid"].names == ["/joint_states", "/cam/color/image_raw", "/joint_commands"]
    valid = store.get_episode(0)["valid"]
    # Frames 5-7 and 9 show an older camera frame: flagged in the camera's column only.
    np.testing.assert_array_equal(np.nonzero(~valid[:, 1])[0], [5, 6, 7, 9])
    assert valid[:, [0, 2]].all()
    meta = store.episode_meta(0)
    assert meta["frames_missing"]["/cam/color/image_raw"] == 4
    assert [(g["stream"], g["frame"], g["frames"]) for g in meta["gaps"]] == [
        ("/cam/color/image_raw", 5, 3),
        ("/cam/color/image_raw", 9, 1),
    ]
    # Training never reads a flagged frame.
    ds = SequenceDataset(store, ["cam_rgb"], n_obs_steps=1, horizon=2)
    for i in range(len(ds)):
        _, t = ds.locate(i)
        assert not {t, t + 1} & {5, 6, 7, 9}


def test_a_master_stream_gap_flags_the_frame_after_it(tmp_path):
    rec = _recorder(tmp_path / "d.zarr")
    rec.start()
    for k in range(20):
        t = 100.0 + 0.1 * k
        rec.add("/joint_commands", t - 0.05, {"action": np.full(2, k, np.float32)})
        if k not in (8, 9, 10):  # the robot's control loop stalled for three ticks
            rec.add("/joint_states", t, {"joint_pos": np.full(2, k, np.float32)})
        rec.add("/cam/color/image_raw", t - 0.03, {"cam_rgb": np.full((4, 4, 3), k, np.uint8)})
    rec.add("/joint_commands", 102.0 - 0.05, {"action": np.full(2, 20, np.float32)})
    _, report = rec.stop()
    assert report["missing"]["/joint_states"] == 3
    store = EpisodeStore.open(tmp_path / "d.zarr")
    ep = store.get_episode(0)
    assert len(ep["joint_pos"]) == 17
    np.testing.assert_array_equal(np.nonzero(~ep["valid"][:, 0])[0], [8])  # joint state 11
    (gap,) = store.episode_meta(0)["gaps"]
    assert gap["stream"] == "/joint_states" and gap["frame"] == 8 and gap["missing"] == 3


def test_discard_writes_nothing_and_second_episode_appends(tmp_path):
    path = tmp_path / "d.zarr"
    rec = _recorder(path)
    rec.start()
    _feed(rec)
    rec.stop()
    rec.start()
    _feed(rec, n=10)
    rec.discard()
    rec.start()
    _feed(rec, n=7)
    assert rec.stop()[0] == 1
    store = EpisodeStore.open(path)
    assert store.num_episodes == 2 and store.num_frames == 27


def test_event_stream_fills_before_first_sample_and_never_counts_missing(tmp_path):
    no = {"intervention": np.zeros(1, dtype=np.bool_)}
    rec = EpisodeRecorder(
        tmp_path / "d.zarr",
        [
            Stream("/joint_states", ["joint_pos"], rate=10.0),
            Stream("/joint_commands", ["action"], rate=10.0, mode="next"),
            Stream("/teleop/intervention", ["intervention"], rate=10.0, required=False, fill=no),
        ],
        master="/joint_states",
        fps=10.0,
        robot="test",
        max_missing=0,
    )
    rec.start()
    _feed_states = [(100.0 + 0.1 * k) for k in range(10)]
    for k, t in enumerate(_feed_states):
        rec.add("/joint_commands", t - 0.05, {"action": np.full(2, k, np.float32)})
        rec.add("/joint_states", t, {"joint_pos": np.full(2, k, np.float32)})
    rec.add("/joint_commands", 101.0 - 0.05, {"action": np.full(2, 10, np.float32)})
    rec.add("/teleop/intervention", 100.45, {"intervention": np.ones(1, dtype=np.bool_)})
    rec.add("/teleop/intervention", 100.75, {"intervention": np.zeros(1, dtype=np.bool_)})
    rec.stop()
    flag = EpisodeStore.open(tmp_path / "d.zarr").get_episode(0)["intervention"][:, 0]
    np.testing.assert_array_equal(flag, [0, 0, 0, 0, 0, 1, 1, 1, 0, 0])


def test_stream_watch_reports_a_silent_stream_once_until_it_returns():
    from robot_policy.runtime.recorder import StreamWatch

    w = StreamWatch({"/joint_states": 20.0, "/cam": 10.0, "/opt": 20.0}, periods=3.0, optional={"/opt"})
    w.restart(0.0)
    for k in range(1, 5):  # joints keep coming every 50 ms, the camera never does
        w.seen("/joint_states", 0.05 * k)
    assert w.newly_stalled(0.2) == []  # 200 ms < 3 camera periods (300 ms)
    (stall,) = w.newly_stalled(0.31)
    assert stall[0] == "/cam" and stall[1] == pytest.approx(0.31)
    # Told once per stall: at 0.5 s only the joints are new (silent since 0.2 s).
    assert [n for n, _ in w.newly_stalled(0.5)] == ["/joint_states"]
    assert set(w.stalled(0.5)) == {"/cam", "/joint_states"}
    w.seen("/cam", 0.6)
    w.seen("/joint_states", 0.6)
    assert w.newly_stalled(0.65) == []
    assert sorted(n for n, _ in w.newly_stalled(1.0)) == ["/cam", "/joint_states"]  # ...and again later
    assert "/opt" not in w.stalled(10.0)  # optional and never seen: not watched
    assert w.stalls_total == 4
    with pytest.raises(ValueError, match="stall_warn_periods"):
        StreamWatch({"/x": 10.0}, periods=1.0)


def test_a_command_cut_by_the_start_request_is_not_counted_missing(tmp_path):
    # The start request falls between a tick's command (99.95) and its observation (100.0): the
    # first frame's action is the command after it, so nothing the episode uses is missing.
    rec = _recorder(tmp_path / "d.zarr")
    rec.start(t_start=99.98)
    _feed(rec)
    rec.add("/joint_commands", 102.0 - 0.05, {"action": np.full(2, 20, np.float32)})
    _, report = rec.stop()
    assert report["missing"] == {"/joint_states": 0, "/cam/color/image_raw": 0, "/joint_commands": 0}
    assert report["gaps"] == []


def test_a_command_missing_inside_the_episode_is_still_counted(tmp_path):
    rec = _recorder(tmp_path / "d.zarr")
    rec.start()
    for k in range(20):
        t = 100.0 + 0.1 * k
        if k != 7:
            rec.add("/joint_commands", t - 0.05, {"action": np.full(2, k, np.float32)})
        rec.add("/joint_states", t, {"joint_pos": np.full(2, k, np.float32)})
        rec.add("/cam/color/image_raw", t - 0.03, {"cam_rgb": np.full((4, 4, 3), k, np.uint8)})
    rec.add("/joint_commands", 102.0 - 0.05, {"action": np.full(2, 20, np.float32)})
    _, report = rec.stop()
    assert report["missing"]["/joint_commands"] == 1
    (gap,) = report["gaps"]
    assert gap["stream"] == "/joint_commands" and gap["frame"] == 6  # frame 6's action came late
