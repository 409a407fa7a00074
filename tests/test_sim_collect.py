"""sim collect / replay / tasks: real MuJoCo rollouts written to real zarr stores on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from robot_policy.cli.main import main
from robot_policy.data import EpisodeStore
from robot_policy.pipelines import collect as collect_mod
from robot_policy.pipelines.collect import collect, parse_cameras, replay
from robot_policy.sim import make_env


def test_sim_tasks_json_lists_spaces(capsys):
    assert main(["sim", "tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {"tabletop", "lift", "stack"} <= set(by_name)
    for r in rows:
        assert r["action_dim"] == 8 and r["control_hz"] == 20.0
        assert r["observation"]["joint_pos"] == [7] and r["observation"]["ee_quat"] == [4]
    assert by_name["stack"]["observation"]["object"] == [14]


def test_parse_cameras():
    assert parse_cameras("agentview:84x84, wrist:48x64") == {"agentview": (84, 84), "wrist": (48, 64)}
    assert parse_cameras("default", task="lift") == {"agentview": (84, 84), "robot0_eye_in_hand": (84, 84)}
    with pytest.raises(ValueError, match="NAME:HxW"):
        parse_cameras("agentview84")


def test_collect_writes_valid_dataset_with_metadata(tmp_path, capsys):
    out = tmp_path / "tt.zarr"
    rc = main(
        ["sim", "collect", "--task", "tabletop", "--episodes", "2", "--out", str(out), "--seed", "5",
         "--cameras", "agentview:32x40"]
    )  # fmt: skip
    assert rc == 0
    assert "success 2/2" in capsys.readouterr().out
    store = EpisodeStore.open(out, "r")
    assert store.num_episodes == 2 and store.fps == 20.0 and store.robot == "sim_tabletop"
    schema = store.schema
    assert schema["agentview_rgb"].dtype == "uint8" and schema["agentview_rgb"].shape == (32, 40, 3)
    assert schema["joint_pos"].shape == (7,) and schema["joint_pos"].names[0] == "panda_joint1"
    assert schema["action"].shape == (8,) and schema["action"].names[-1] == "gripper"
    env = make_env("tabletop", randomization="default")
    for i, meta in enumerate(store.episodes_meta()):
        assert meta["success"] is True and meta["seed"] == 5 + i and meta["task"] == "tabletop"
        # The stored draw is the flat parameter -> value mapping the env draws from that seed.
        _, info = env.reset(seed=meta["seed"])
        assert meta["randomization"] == info["randomization"]
        ep = store.get_episode(i)
        n = len(ep["action"])
        assert 20 < n <= 200 and all(len(v) == n for v in ep.values())
        assert np.all(np.abs(ep["action"][:, -1]) <= 1.0)
        # Lifted by the end: the cube ends above where it started.
        assert ep["object"][-1, 2] > ep["object"][0, 2] + 0.04
    env.close()
    with pytest.raises(FileExistsError):
        collect("tabletop", 1, out, progress=False)


def test_collect_keeps_only_successes_unless_asked(tmp_path, monkeypatch):
    real = collect_mod.run_episode

    def odd_seeds_fail(env, expert, seed, **kw):
        frames, success, info = real(env, expert, seed, **kw)
        return frames, success and seed % 2 == 0, info

    monkeypatch.setattr(collect_mod, "run_episode", odd_seeds_fail)
    s = collect("tabletop", 2, tmp_path / "a.zarr", randomization="none", progress=False)
    assert s.kept == 2 and s.attempts == 3 and s.failed_seeds == [1]
    assert [m["seed"] for m in EpisodeStore.open(tmp_path / "a.zarr").episodes_meta()] == [0, 2]
    s = collect("tabletop", 2, tmp_path / "b.zarr", randomization="none", keep_failures=True, progress=False)
    assert s.kept == 2 and s.successes == 1
    metas = EpisodeStore.open(tmp_path / "b.zarr").episodes_meta()
    assert [m["success"] for m in metas] == [True, False]


def test_interrupted_collect_keeps_finished_episodes(tmp_path):
    out = tmp_path / "int.zarr"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "robot_policy.cli.main", "sim", "collect", "--task", "tabletop",
           "--episodes", "500", "--out", str(out)]  # fmt: skip
    # Default SIGINT in the child: a suite started in the background of a non-interactive shell
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = 0
    deadline = time.monotonic() + 120
    try:
        while seen < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if out.exists():
                try:
                    seen = EpisodeStore.open(out, "r").num_episodes
                except Exception:  # noqa: BLE001 - store still being created
                    seen = 0
        assert seen >= 2, "collect did not commit episodes in time"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in output
    store = EpisodeStore.open(out, "r")
    assert 2 <= store.num_episodes < 500
    for i, meta in enumerate(store.episodes_meta()):
        assert meta["seed"] == i and meta["success"] is True
        ep = store.get_episode(i)
        assert len(ep["joint_pos"]) == len(ep["action"]) > 0


def test_replay_reproduces_and_writes_video(tmp_path, capsys):
    out = tmp_path / "r.zarr"
    collect("tabletop", 1, out, seed=3, cameras=None, progress=False)
    gif = tmp_path / "ep0.gif"
    assert main(["sim", "replay", str(out), "--episode", "0", "--video", str(gif)]) == 0
    assert "REPRODUCED" in capsys.readouterr().out
    import imageio.v2 as imageio

    frames = imageio.mimread(gif)
    n = EpisodeStore.open(out).episode_lengths[0]
    # GIF encoders merge identical consecutive frames: the arm rests at the start and the end.
    assert n // 2 < len(frames) <= n + 1 and frames[0].shape[2] in (3, 4)
    with pytest.raises(IndexError, match="episode"):
        replay(out, 5)


def test_replay_detects_actions_that_do_not_reproduce(tmp_path):
    src = tmp_path / "src.zarr"
    collect("tabletop", 1, src, progress=False)
    store = EpisodeStore.open(src)
    ep = store.get_episode(0)
    meta = store.episode_meta(0)
    ep["action"] = np.tile(np.concatenate([ep["joint_pos"][0], [-1.0]]), (len(ep["action"]), 1)).astype(
        np.float32
    )
    bad = EpisodeStore.create(tmp_path / "bad.zarr", store.schema, fps=store.fps, robot=store.robot)
    bad.add_episode(ep, meta=meta)
    result = replay(tmp_path / "bad.zarr", 0)
    assert result.recorded_success and not result.replayed_success and not result.reproduced
    assert result.max_joint_error > 0.01


@pytest.mark.slow
def test_robosuite_lift_episode_replays_exactly(tmp_path):
    out = tmp_path / "lift.zarr"
    s = collect("lift", 1, out, seed=2, progress=False)
    assert s.kept == 1
    result = replay(out, 0, video=tmp_path / "lift.mp4")
    assert result.reproduced and result.max_joint_error < 1e-6
    assert (tmp_path / "lift.mp4").stat().st_size > 1000


def _first_success_step(task, seed, actions):
    """Replays ``actions`` in a fresh env: 1-based step at which success is first reported."""
    env = make_env(task)
    env.reset(seed=seed)
    try:
        for t, action in enumerate(actions, start=1):
            if env.step(action)[4]["success"]:
                return t
        return None
    finally:
        env.close()


def test_stop_after_success_cuts_k_steps_after_first_success(tmp_path, capsys):
    def run(name, k, episodes=2):
        return main(
            ["sim", "collect", "--task", "tabletop", "--episodes", str(episodes), "--seed", "4",
             "--randomization", "none", "--stop-after-success", k, "--out", str(tmp_path / name)]
        )  # fmt: skip

    out = tmp_path / "k3.zarr"
    assert run("k3.zarr", "3") == 0
    store = EpisodeStore.open(out, "r")
    import zarr

    sim_attrs = zarr.open_group(str(out), mode="r").attrs["robot_policy"]["attrs"]["sim"]
    assert sim_attrs["stop_after_success"] == 3 and sim_attrs["randomization"] is None
    k3 = []
    for i, meta in enumerate(store.episodes_meta()):
        ep = store.get_episode(i)
        assert meta["stop_after_success"] == 3 and meta["randomization"] == {}
        # The recorded success step is where the env really first reports success, checked by replay.
        first = _first_success_step("tabletop", meta["seed"], ep["action"])
        assert first is not None and meta["success_step"] == first
        assert len(ep["action"]) == first + 3 and all(len(v) == first + 3 for v in ep.values())
        k3.append(ep)

    # K=0 ends on the success step itself; the frames are the same rollout, 3 steps shorter.
    assert run("k0.zarr", "0") == 0
    store0 = EpisodeStore.open(tmp_path / "k0.zarr", "r")
    for i, meta in enumerate(store0.episodes_meta()):
        ep = store0.get_episode(i)
        assert meta["stop_after_success"] == 0 and len(ep["action"]) == meta["success_step"]
        for key, value in ep.items():
            np.testing.assert_array_equal(value, k3[i][key][: len(value)])

    # 'never' keeps the whole episode up to the task's step limit.
    assert run("never.zarr", "never", episodes=1) == 0
    store_n = EpisodeStore.open(tmp_path / "never.zarr", "r")
    meta = store_n.episode_meta(0)
    assert (
        meta["stop_after_success"] is None and meta["success_step"] == store0.episode_meta(0)["success_step"]
    )
    assert store_n.episode_lengths[0] == make_env("tabletop").unwrapped.max_episode_steps

    capsys.readouterr()
    with pytest.raises(SystemExit):
        run("bad.zarr", "-1")
    assert "integer >= 0 or 'never'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="stop-after-success"):
        collect("tabletop", 1, tmp_path / "bad.zarr", stop_after_success=-2, progress=False)
