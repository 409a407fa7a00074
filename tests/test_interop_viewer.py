"""`dataset view`: an episode to Rerun (.rrd when no viewer can be spawned) and to mp4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rerun")
av = pytest.importorskip("av")

from robot_policy.data import EpisodeStore, KeySpec  # noqa: E402


def make_store(path: Path) -> EpisodeStore:
    schema = {
        "agentview_rgb": KeySpec("uint8", (24, 32, 3)),
        "wrist_rgb": KeySpec("uint8", (16, 16)),
        "joint_pos": KeySpec("float32", (7,), names=[f"panda_joint{i}" for i in range(1, 8)]),
        "action": KeySpec("float32", (8,)),
        "intervention": KeySpec("bool", (1,)),
        "valid": KeySpec("bool", (2,), names=["/joint_states", "/agentview/color/image_raw"]),
    }
    store = EpisodeStore.create(path, schema, fps=10.0, robot="sim_tabletop")
    rng = np.random.default_rng(0)
    for n in (6, 10):
        yy, xx = np.mgrid[0:24, 0:32]
        img = np.stack(
            [np.stack([(xx * 8 + i * 9) % 256, yy * 10, np.full_like(xx, 128)], -1) for i in range(n)]
        ).astype(np.uint8)
        flag = np.zeros((n, 1), bool)
        flag[3:5] = True
        store.add_episode(
            {
                "agentview_rgb": img,
                "wrist_rgb": rng.integers(0, 255, (n, 16, 16), dtype=np.uint8),
                "joint_pos": rng.normal(size=(n, 7)).astype(np.float32),
                "action": rng.normal(size=(n, 8)).astype(np.float32),
                "intervention": flag,
                "valid": np.ones((n, 2), bool),
            },
            meta={
                "success": n == 10,
                "gaps": [{"stream": "/agentview/color/image_raw", "frame": 2, "frames": 1}],
            },
        )
    store.close()
    return EpisodeStore.open(path)


def rerun_cli() -> str | None:
    exe = Path(sys.executable).parent / "rerun"
    return str(exe) if exe.exists() else None


def test_view_saves_rrd_without_a_display(tmp_path, monkeypatch):
    from robot_policy.interop.viewer import view_episode

    store = make_store(tmp_path / "s.zarr")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    msg = view_episode(store.path, -1)
    rrd = tmp_path / "s_episode1.rrd"
    assert rrd.exists() and rrd.stat().st_size > 1000
    assert "20 images" in msg and "4 events" in msg  # gap, intervention on and off, outcome
    assert f"rerun {rrd.name}" in msg and "no display" in msg
    cli = rerun_cli()
    if cli is None:
        return
    r = subprocess.run([cli, "rrd", "verify", str(rrd)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    printed = subprocess.run(
        [cli, "rrd", "print", str(rrd)], capture_output=True, text=True, timeout=120
    ).stdout
    for entity in (
        "/cameras/agentview",
        "/cameras/wrist",
        "/robot/joint_pos",
        "/robot/action",
        "/data/intervention",
        "/data/valid",
        "/events",
        "/meta",
    ):
        assert entity in printed, entity


def test_view_cli_save_and_mp4(tmp_path, capsys):
    from robot_policy.cli.main import main

    store = make_store(tmp_path / "s.zarr")
    assert main(["dataset", "view", store.path, "--episode", "0", "--save", str(tmp_path / "e0.rrd")]) == 0
    assert (tmp_path / "e0.rrd").exists() and "rerun " in capsys.readouterr().out
    assert main(["dataset", "view", store.path, "--episode", "1", "--mp4", str(tmp_path / "e1.mp4")]) == 0
    with av.open(str(tmp_path / "e1.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (24, 48, 3)  # cameras side by side
    ref = store.get_episode(1)
    for i in (0, 9):
        a = frames[i][:, :32].astype(float)
        mse = np.mean((a - ref["agentview_rgb"][i]) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30
        np.testing.assert_allclose(frames[i][:16, 32:48, 0], ref["wrist_rgb"][i], atol=60)
    assert main(["dataset", "view", store.path, "--episode", "5"]) == 1
    assert "out of range" in capsys.readouterr().err
