"""Recorder streaming: frames reach the store while recording, memory stays a small window,
a killed recorder leaves the committed episodes intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from robot_policy.data import EpisodeStore
from robot_policy.data import writer as writer_mod
from robot_policy.data.validate import validate_store
from robot_policy.runtime.recorder import EpisodeRecorder, RecorderError, Stream

RATE = 30.0
LOOKAHEAD = 0.2


def _recorder(path, max_missing=2, **kw):
    return EpisodeRecorder(
        path,
        [
            Stream("/joint_states", ["joint_pos"], rate=RATE),
            Stream("/cam/color/image_raw", ["cam_rgb"], rate=RATE),
            Stream("/joint_commands", ["action"], rate=RATE, mode="next"),
        ],
        master="/joint_states",
        fps=RATE,
        robot="test",
        max_missing=max_missing,
        lookahead_s=LOOKAHEAD,
        **kw,
    )


def _samples(n, seed=0, t0=100.0):
    """Frame k: joints at t, camera captured 10 ms before, command 15 ms before (it answers
    frame k-1). Each sample arrives after a random transport delay below the look-ahead, so
    streams interleave out of stamp order."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n + 1):
        t = t0 + k / RATE
        out.append((t, "/joint_states", t, {"joint_pos": np.full(2, k, np.float32)}))
        img = np.full((8, 8, 3), k % 251, np.uint8)
        out.append((t - 0.01, "/cam/color/image_raw", t - 0.01, {"cam_rgb": img}))
        out.append((t - 0.015, "/joint_commands", t - 0.015, {"action": np.full(2, k, np.float32)}))
    arrival = [s + rng.uniform(0, 0.9 * LOOKAHEAD) for s, *_ in out]
    return [out[i][1:] for i in np.argsort(arrival, kind="stable")]


def test_long_episode_streams_to_store_with_bounded_buffer(tmp_path, monkeypatch):
    # Small flush blocks, so streamed images reach disk during the episode.
    monkeypatch.setattr(writer_mod, "FLUSH_BYTES", 50 * 8 * 8 * 3)
    path = tmp_path / "d.zarr"
    n = 3000  # 100 s at 30 Hz
    rec = _recorder(path)
    rec.start({"operator": "test"})
    peak = {}
    on_disk_mid = None
    for i, (name, stamp, values) in enumerate(_samples(n)):
        rec.add(name, stamp, values)
        for k, v in rec.buffered().items():
            peak[k] = max(peak.get(k, 0), v)
        if i == 6000:  # two thirds through: most frames already handed to the store
            written = rec.frames_written
            on_disk_mid = EpisodeStore.open(path).array("cam_rgb").shape[0]
    # Window: look-ahead plus the wait for a command, a few samples per stream, not the episode.
    window = int((LOOKAHEAD + (2 + 2) / RATE) * RATE) + 2
    assert max(peak.values()) <= window, peak
    assert written >= 2000 - window
    # Blocks of 50 frames; at most 4 in flight plus one being buffered.
    assert on_disk_mid >= written - 5 * 50
    idx, report = rec.stop({"success": True})
    assert idx == 0 and report["frames"] == n and report["missing"]["/cam/color/image_raw"] == 0
    store = EpisodeStore.open(path)
    ep = store.get_episode(0)
    k = np.arange(n)
    np.testing.assert_array_equal(ep["joint_pos"][:, 0], k)
    np.testing.assert_array_equal(ep["cam_rgb"][:, 0, 0, 0], k % 251)
    np.testing.assert_array_equal(ep["action"][:, 0], k + 1)  # the command after the frame
    assert store.episode_meta(0)["success"] is True
    assert rec.buffered() == dict.fromkeys(rec.streams, 0)


def test_doomed_episode_is_dropped_before_stop_and_refused(tmp_path):
    path = tmp_path / "d.zarr"
    told = []
    rec = _recorder(path, on_problem=told.append, strict=True)
    rec.start()
    samples = _samples(200)
    for name, stamp, values in samples[:150]:
        rec.add(name, stamp, values)
    first = EpisodeStore.open(path)
    assert first.num_episodes == 0  # created, frames streaming, nothing visible
    for name, stamp, values in samples[150:]:
        # The camera dies for 10 frames around frame 100.
        if name == "/cam/color/image_raw" and 100 / RATE < stamp - 100.0 < 110 / RATE:
            continue
        rec.add(name, stamp, values)
    # Refused whatever follows, so the partial episode is already gone from disk.
    assert not path.exists()
    assert len(told) == 1 and "will be refused: stream '/cam/color/image_raw'" in told[0]
    with pytest.raises(RecorderError, match="cam/color/image_raw.*missing 10 frames"):
        rec.stop()
    assert not path.exists()


def test_late_master_sample_is_dropped_and_named(tmp_path):
    rec = _recorder(tmp_path / "d.zarr")
    rec.start()
    samples = _samples(60)
    late = [s for s in samples if s[0] == "/joint_states" and abs(s[1] - (100.0 + 30 / RATE)) < 1e-9]
    for s in samples:
        if s is not late[0]:
            rec.add(*s)
    rec.add(*late[0])  # arrives after everything: far beyond the look-ahead
    assert rec.aligner.late["/joint_states"] == 1
    idx, report = rec.stop()  # one missing frame is within the limit of 2
    assert report["missing"]["/joint_states"] == 1 and report["late"] == {"/joint_states": 1}
    ep = EpisodeStore.open(tmp_path / "d.zarr").get_episode(0)
    assert 30 not in ep["joint_pos"][:, 0] and len(ep["joint_pos"]) == 59


_CHILD = """
import sys, time
import numpy as np
from robot_policy.data import writer
writer.FLUSH_BYTES = 4096  # stream to disk in small blocks
sys.path.insert(0, {tests!r})
from test_recorder_streaming import _recorder, _samples
rec = _recorder({path!r})
rec.start({{"operator": "kept"}})
for s in _samples(90):
    rec.add(*s)
rec.stop({{"success": True}})
rec.start({{"operator": "lost"}})
k = 0
while True:  # the second episode never ends: the parent kills us mid-stream
    for name, stamp, values in _samples(299, seed=k, t0=1000.0 + 10.0 * k):
        rec.add(name, stamp, values)
    k += 1
    print("streamed", rec.frames_written, flush=True)
"""


def test_killed_recorder_leaves_committed_episodes_intact(tmp_path):
    path = tmp_path / "d.zarr"
    code = textwrap.dedent(_CHILD.format(tests=os.path.dirname(__file__), path=str(path)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("streamed"), f"recorder subprocess failed (rc {proc.poll()})"
        # Kill it once the open episode has frames on disk past the committed one. Bounded by
        # how much the child streamed (batches of 299 frames), not by time: the writer keeps at
        # most a few blocks in flight, so 20 batches must have reached the disk.
        batches = 1
        while EpisodeStore.open(path).array("cam_rgb").shape[0] <= 90:
            assert batches < 20, "no streamed frames reached the disk after 20 batches"
            line = proc.stdout.readline()
            assert line, f"recorder subprocess ended early (rc {proc.poll()})"
            batches += line.startswith("streamed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = EpisodeStore.open(path)
    assert store.num_episodes == 1 and store.num_frames == 90
    assert store.array("cam_rgb").shape[0] > 90  # the partial episode is on disk, invisible
    ep = store.get_episode(0)
    np.testing.assert_array_equal(ep["joint_pos"][:, 0], np.arange(90))
    np.testing.assert_array_equal(ep["action"][:, 0], np.arange(1, 91))
    assert store.episode_meta(0)["operator"] == "kept" and store.episode_meta(0)["success"] is True
    assert validate_store(path).ok
    # The next recording appends after the committed episode; the partial one is truncated.
    rec = _recorder(path)
    rec.start()
    for s in _samples(40):
        rec.add(*s)
    assert rec.stop()[0] == 1
    store = EpisodeStore.open(path)
    assert store.num_frames == 130 and store.array("cam_rgb").shape[0] == 130
    np.testing.assert_array_equal(store.get_episode(1)["joint_pos"][:, 0], np.arange(40))


def test_stop_waits_for_frames_in_flight_and_ends_at_the_request(tmp_path):
    """The recorder runs behind the graph (a loaded machine): at the stop request, the last
    second of samples has not arrived yet. stop(t_end=...) waits for them, and leaves out what
    was captured after the request."""
    import threading

    rec = _recorder(tmp_path / "d.zarr")
    rec.start()
    samples = _samples(90)  # 3 s of samples, stamps 100.0 .. 103.0
    t_end = 100.0 + 60.5 / RATE  # the stop request: between frames 60 and 61
    for s in samples[:120]:  # about 40 frames received when stop is requested
        rec.add(*s)

    def late_delivery():
        time.sleep(0.3)
        for s in samples[120:]:
            rec.add(*s)

    feeder = threading.Thread(target=late_delivery)
    feeder.start()
    idx, report = rec.stop(t_end=t_end, wait_s=10.0)
    feeder.join()
    assert report["missing"]["/joint_states"] == 0
    ep = EpisodeStore.open(tmp_path / "d.zarr").get_episode(0)
    np.testing.assert_array_equal(ep["joint_pos"][:, 0], np.arange(61))  # frames 0..60, none after


def test_stop_counts_master_frames_that_never_came_as_missing(tmp_path):
    """The master stream stalls 20 frames before the stop request: stop waits ``wait_s``,
    then those frames count as missing (and refuse the episode in strict mode), instead of a
    silently truncated episode."""
    rec = _recorder(tmp_path / "d.zarr", max_missing=5, strict=True)
    rec.start()
    for s in _samples(40):
        rec.add(*s)
    with pytest.raises(RecorderError, match="'/joint_states' is missing 19 frames"):
        rec.stop(t_end=100.0 + 60 / RATE, wait_s=0.1)
    assert not (tmp_path / "d.zarr").exists()


def test_stop_when_not_recording_refuses_without_waiting(tmp_path):
    rec = _recorder(tmp_path / "d.zarr")
    waits = []
    rec._reached_end.wait = lambda timeout=None: waits.append(timeout)
    with pytest.raises(RecorderError, match="nothing to commit"):
        rec.stop(t_end=1e9, wait_s=30.0)
    assert waits == []  # no frames can come: it did not wait for them
