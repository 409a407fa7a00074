"""Closed-loop evaluation: Wilson interval and an `eval` CLI smoke run in the real robosuite Lift."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_policy.evaluation.rollout import run_episode, wilson_interval
from robot_policy.policies import POLICIES, PolicyConfig, save_policy
from robot_policy.types import ActionChunk

LIFT_KEYS = {"joint_pos": 7, "gripper": 1, "object": 7}


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-3)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.2366, abs=1e-3)


class CountingEnv:
    """A minimal env: succeeds when the summed executed actions reach 10."""

    class unwrapped:  # noqa: N801 - mirrors gym's attribute
        max_episode_steps = 40
        control_hz = 10.0

    def reset(self, seed):
        self.total, self.t = 0.0, 0
        return {"x": np.zeros(1, np.float32)}, {}

    def step(self, action):
        self.total += float(action[0])
        self.t += 1
        obs = {"x": np.array([self.total], np.float32)}
        return obs, 0.0, False, False, {"success": self.total >= 10}


def test_receding_horizon_executes_n_action_steps_and_stops_at_success():
    calls = []

    def predict(hist, prior=None, start_time=0.0):
        calls.append(hist["x"].copy())
        return ActionChunk(actions=np.ones((7, 1), np.float32), start_time=start_time, dt=0.1)

    r = run_episode(predict, CountingEnv(), seed=0, obs_keys=["x"], n_obs_steps=2, n_action_steps=3)
    assert r["success"] and r["steps"] == 10
    assert len(calls) == 4 and len(r["latency_ms"]) == 4  # 3 + 3 + 3 + 1 steps
    assert np.array_equal(calls[0], [[0.0], [0.0]])  # history padded with the first observation
    assert np.array_equal(calls[1], [[2.0], [3.0]])


def test_sync_mode_executes_the_first_n_action_steps_of_each_chunk_in_order():
    """The scheduler-driven loop in sync mode is the classic receding-horizon loop, action for action."""
    executed, n_calls = [], []

    class RecordingEnv(CountingEnv):
        def step(self, action):
            executed.append(float(action[0]))
            return super().step(np.zeros(1, np.float32))  # never succeeds: runs to max_episode_steps

    def predict(hist, prior=None, start_time=0.0):
        n_calls.append(1)
        c = len(n_calls) - 1
        return ActionChunk(
            actions=(100.0 * c + np.arange(7, dtype=np.float32))[:, None], start_time=start_time
        )

    r = run_episode(predict, RecordingEnv(), seed=0, obs_keys=["x"], n_obs_steps=2, n_action_steps=3)
    expected = [100.0 * (t // 3) + t % 3 for t in range(40)]  # chunk t//3, its action t%3
    assert executed == expected and r["steps"] == 40 and r["inferences"] == 14
    assert r["dropped_actions"] == 0 and r["held_ticks"] == 0


@pytest.mark.slow
def test_eval_video_is_mp4_with_a_gif_fallback_at_the_policy_rate(tmp_path, monkeypatch):
    import imageio.v3 as iio
    from PIL import Image

    from robot_policy import video

    frames = [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(6)]
    mp4 = video.write_video_or_gif(frames, tmp_path / "ep", fps=20.0)
    assert mp4.suffix == ".mp4" and iio.imread(mp4).shape[0] == 6

    real = video.write_video

    def no_ffmpeg(path, frames, fps):
        if Path(path).suffix == ".mp4":
            raise RuntimeError("no ffmpeg plugin")
        real(path, frames, fps)

    monkeypatch.setattr(video, "write_video", no_ffmpeg)
    gif = video.write_video_or_gif(frames, tmp_path / "ep2", fps=20.0)
    assert gif.suffix == ".gif"
    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.info["duration"] == 50  # ms per frame at 20 Hz


def test_eval_cli_smoke_on_lift(tmp_path):
    stats = {
        k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}
        for k, d in LIFT_KEYS.items()
    }
    stats["action"] = {"min": -np.ones(8) * 2, "max": np.ones(8) * 2, "mean": np.zeros(8), "std": np.ones(8)}
    cfg = PolicyConfig(
        family="flow",
        obs_keys=list(LIFT_KEYS),
        obs_shapes={k: [d] for k, d in LIFT_KEYS.items()},
        action_dim=8,
        down_dims=[16, 32],
        step_embed_dim=16,
        obs_mlp_dims=[32],
    )
    save_policy(POLICIES.get("flow")(cfg, stats), tmp_path / "ck")
    out = tmp_path / "res.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "robot_policy.cli.main", "eval", "--checkpoint", str(tmp_path / "ck")]
    cmd += ["--task", "lift", "--episodes", "1", "--steps", "1", "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["episodes"] == 1 and data["success_rate"] in (0.0, 1.0)
    assert data["ci95"][0] <= data["success_rate"] <= data["ci95"][1]
    assert set(data["latency_ms"]) == {"p50", "p95", "p99"} and data["latency_ms"]["p50"] > 0
    assert "success_rate" in res.stdout and "lat_p95_ms" in res.stdout
