"""``robot-policy dataset info`` / ``validate`` on good and broken stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from robot_policy.cli.main import main
from robot_policy.data import EpisodeStore, KeySpec, StoreError


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.zarr"
    schema = {
        "joint_pos": KeySpec("float32", (3,), names=["a", "b", "c"], units="rad"),
        "cam": KeySpec("uint8", (4, 4, 3)),
    }
    s = EpisodeStore.create(path, schema, fps=20.0, robot="sim_panda")
    for e, T in enumerate([3, 5]):
        s.add_episode(
            {"joint_pos": np.zeros((T, 3), np.float32), "cam": np.zeros((T, 4, 4, 3), np.uint8)},
            meta={"success": e == 1, "seed": e, "randomization": {"friction": 0.5}},
        )
    return path


def hand_made(path, lengths: dict[str, int], ends: list[int], fmt: int = 2):
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    for k, n in lengths.items():
        root.create_array(f"data/{k}", shape=(n, 2), dtype="float32", chunks=(max(n, 1), 2))[:] = 1.0
    root.create_array("meta/episode_ends", shape=(len(ends),), dtype="int64", chunks=(max(len(ends), 1),))[
        :
    ] = ends
    return path


def test_info_json(good, capsys):
    assert main(["dataset", "info", str(good), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["episodes"] == 2 and info["frames"] == 8 and info["fps"] == 20.0 and info["robot"] == "sim_panda"
    )
    assert info["keys"]["joint_pos"]["shape"] == [3] and info["keys"]["joint_pos"]["dtype"] == "float32"
    assert info["keys"]["cam"] == {
        **info["keys"]["cam"],
        "shape": [4, 4, 3],
        "dtype": "uint8",
        "codec": "jpegxl",
    }
    assert [e["length"] for e in info["episodes_meta"]] == [3, 5]
    assert info["episodes_meta"][1]["success"] is True and info["episodes_meta"][1]["randomization"] == {
        "friction": 0.5
    }


def test_info_table(good, capsys):
    assert main(["dataset", "info", str(good)]) == 0
    out = capsys.readouterr().out
    assert "episodes: 2" in out and "frames: 8" in out and "sim_panda" in out
    assert "joint_pos" in out and "4x4x3" in out and '"success":true' in out


def test_info_on_missing_store(tmp_path, capsys):
    assert main(["dataset", "info", str(tmp_path / "nope.zarr")]) == 1
    assert "cannot open" in capsys.readouterr().err


def test_validate_ok(good, capsys):
    assert main(["dataset", "validate", str(good), "--deep"]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    "lengths,ends,message",
    [
        ({"a": 10, "b": 10}, [4, 12], "episode_ends[-1] = 12 is past the length of data/a (10 frames)"),
        ({"a": 10, "b": 8}, [4, 8], "keys of unequal length"),
        ({"a": 10, "b": 10}, [6, 4, 10], "decreases at index 1: 6 then 4"),
        ({"a": 10, "b": 10}, [4, 7], "3 frames past meta/episode_ends[-1] = 7"),
    ],
)
def test_validate_reports_inconsistencies(tmp_path, capsys, lengths, ends, message):
    path = hand_made(tmp_path / "bad.zarr", lengths, ends)
    assert main(["dataset", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "INVALID" in err


def test_validate_schema_mismatch_and_not_a_store(good, tmp_path, capsys):
    g = zarr.open_group(str(good), mode="r+")
    info = dict(g.attrs["robot_policy"])
    info["schema"]["joint_pos"]["shape"] = [4]
    g.attrs["robot_policy"] = info
    assert main(["dataset", "validate", str(good)]) == 1
    assert "the schema says float32 (4,)" in capsys.readouterr().err
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    assert main(["dataset", "validate", str(tmp_path / "empty.zarr")]) == 1
    assert "no 'data' group" in capsys.readouterr().err


def test_entry_point_subprocess(good):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run(
        [sys.executable, "-m", "robot_policy.cli.main", "dataset", "validate", str(good)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "robot_policy.cli.main", "dataset", "info", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 0 and "example" in p.stdout


def test_bench_store_smoke(tmp_path, capsys):
    pytest.importorskip("mujoco")
    out = tmp_path / "store.json"
    argv = [
        "bench",
        "store",
        "--seconds",
        "0.2",
        "--unique-frames",
        "2",
        "--windows",
        "5",
        "--codecs",
        "jpegxl,blosc",
        "--codec-frames",
        "2",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert [r["codec"] for r in res["write"]] == ["jpegxl", "blosc"]
    assert all(r["frames"] == 6 and r["size_ratio"] > 1 and r["frames_per_s"] > 0 for r in res["write"])
    assert {r["codec"] for r in res["codecs"]} >= {"blosc", "jpegxl", "jpeg2k"}
    assert res["windows"]["windows"] == 5
    assert "realtime_ratio" in capsys.readouterr().out


def test_convert_codec_and_format(good, tmp_path, capsys):
    dst = tmp_path / "v2.zarr"
    assert (
        main(["dataset", "convert", str(good), str(dst), "--zarr-format", "2", "--image-codec", "blosc"]) == 0
    )
    src, out = EpisodeStore.open(good), EpisodeStore.open(dst)
    assert (out.zarr_format, out.schema["cam"].codec, out.fps, out.robot) == (2, "blosc", 20.0, "sim_panda")
    assert out.episodes_meta() == src.episodes_meta()
    for i in range(src.num_episodes):
        for k, v in src.get_episode(i).items():
            np.testing.assert_array_equal(out.get_episode(i)[k], v)
    assert main(["dataset", "convert", str(good), str(dst)]) == 1
    assert "overwrite" in capsys.readouterr().err
    foreign = hand_made(tmp_path / "dp.zarr", {"a": 4}, [1, 4])
    assert main(["dataset", "convert", str(foreign), str(tmp_path / "f.zarr")]) == 1
    assert "fps" in capsys.readouterr().err
    assert main(["dataset", "convert", str(foreign), str(tmp_path / "f.zarr"), "--fps", "15"]) == 0
    assert EpisodeStore.open(tmp_path / "f.zarr").episode_lengths.tolist() == [1, 3]


def test_foreign_tail_is_kept_until_dropped_explicitly(tmp_path):
    path = hand_made(tmp_path / "tail.zarr", {"a": 10, "b": 10}, [4, 7])
    s = EpisodeStore.open(path, "a")  # warns, keeps the 3 extra frames
    assert s.array("a").shape[0] == 10
    with pytest.raises(StoreError, match="drop_uncommitted"):
        s.add_episode({"a": np.ones((2, 2), np.float32), "b": np.ones((2, 2), np.float32)})
    assert s.array("a").shape[0] == 10
    s.drop_uncommitted()
    assert s.add_episode({"a": np.ones((2, 2), np.float32), "b": np.ones((2, 2), np.float32)}) == 2
    assert main(["dataset", "validate", str(path)]) == 0


def test_info_and_validate_show_recorded_gaps(tmp_path, capsys):
    path = tmp_path / "gaps.zarr"
    schema = {
        "x": KeySpec("float32", (1,)),
        "valid": KeySpec("bool", (2,), names=["/joint_states", "/cam/color/image_raw"]),
    }
    s = EpisodeStore.create(path, schema, fps=20.0)
    valid = np.ones((6, 2), bool)
    valid[3, 1] = False
    gap = {"stream": "/cam/color/image_raw", "frame": 3, "frames": 1}
    s.add_episode({"x": np.zeros((6, 1), np.float32), "valid": valid}, meta={"gaps": [gap]})
    s.add_episode({"x": np.zeros((4, 1), np.float32), "valid": np.ones((4, 2), bool)}, meta={"gaps": []})
    # An episode whose mask flags a frame its metadata does not list is reported too.
    odd = np.ones((4, 2), bool)
    odd[1, 0] = False
    s.add_episode({"x": np.zeros((4, 1), np.float32), "valid": odd}, meta={})
    s.close()
    assert main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "/cam/color/image_raw@3(1)" in out and "1 of 3 episodes have stream gaps" in out
    assert main(["dataset", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "gap: episode 0: stream '/cam/color/image_raw' gap at frame 3" in out
    assert "gap: episode 2: 1 frame(s) flagged in data/valid, no gaps in its metadata" in out
    assert main(["dataset", "validate", str(path), "--fail-on-gaps"]) == 1
    assert "GAPS" in capsys.readouterr().err
