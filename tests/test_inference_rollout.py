"""Scheduler-driven episodes in the real MuJoCo tabletop task on a simulated clock."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_policy.config import from_dict
from robot_policy.evaluation.rollout import run_episode
from robot_policy.inference import SchedulerConfig
from robot_policy.inference.engine import EngineConfig, InferenceEngine
from robot_policy.inference.serving import ServingConfig
from robot_policy.inference.warmstart import WarmStartConfig
from robot_policy.policies import POLICIES, PolicyConfig

KEYS = ["joint_pos", "gripper"]


@pytest.fixture(scope="module")
def env():
    from robot_policy.sim import make_env

    e = make_env("tabletop")
    yield e
    e.close()


def make_engine(env, **kw) -> InferenceEngine:
    lo, hi = env.action_space.low, env.action_space.high
    d = {
        "family": "flow",
        "obs_keys": KEYS,
        "obs_shapes": {"joint_pos": [7], "gripper": [1]},
        "action_dim": 8,
        "horizon": 16,
        "n_obs_steps": 2,
        "n_action_steps": 8,
        "fps": float(env.unwrapped.control_hz),
        "down_dims": [16, 32],
        "obs_mlp_dims": [32],
        "step_embed_dim": 16,
    }
    # A narrow action range around the home pose keeps the random policy's arm motion small.
    home = np.clip((lo + hi) / 2, lo, hi)
    stats = {
        "joint_pos": {"min": lo[:7], "max": hi[:7]},
        "gripper": {"min": np.zeros(1), "max": np.full(1, 0.04)},
        "action": {"min": home - 0.1, "max": home + 0.1},
    }
    torch.manual_seed(0)
    policy = POLICIES.get("flow")(from_dict(PolicyConfig, d), stats)
    return InferenceEngine(policy, EngineConfig(device="cpu", precision="fp32", warmup=1, seed=0, **kw))


def episode(env, eng, serving: ServingConfig, max_steps=40):
    return run_episode(eng.predict, env, 0, KEYS, 2, 8, serving, max_steps=max_steps)


def test_sync_mode_is_receding_horizon(env):
    eng = make_engine(env, num_steps=1)
    r = episode(env, eng, ServingConfig(scheduler=SchedulerConfig(mode="sync")))
    assert r["steps"] == 40 or r["success"]
    assert r["inferences"] == -(-r["steps"] // 8)  # one inference per 8 executed actions
    assert r["dropped_actions"] == 0 and r["held_ticks"] == 0


def test_async_mode_drops_actions_eaten_by_latency_and_never_waits(env):
    eng = make_engine(env, num_steps=1)
    dt = 1.0 / env.unwrapped.control_hz
    r = episode(
        env, eng, ServingConfig(scheduler=SchedulerConfig(mode="async"), simulated_latency=str(2.5 * dt))
    )
    # Every chunk after the first lands 3 ticks after its observation: its first 3 actions are
    # stale and dropped; the old chunk covers those ticks, so the robot never holds.
    assert r["chunks_applied"] >= 4
    assert r["dropped_actions"] == 3 * (r["chunks_applied"] - 1)
    assert r["held_ticks"] == 0
    # Inference starts early (8 - 3 ticks after each chunk's observation), so it runs more often.
    assert r["inferences"] > -(-r["steps"] // 8)


def test_async_warm_start_with_rtc_runs_and_stays_finite(env):
    eng = make_engine(env, num_steps=4, warm_start=WarmStartConfig(schedule_steps=4, run_steps=1))
    serving = ServingConfig(scheduler=SchedulerConfig(mode="async", rtc=True), simulated_latency="0.1")
    r = episode(env, eng, serving, max_steps=30)
    assert r["steps"] == 30 or r["success"]
    assert r["held_ticks"] == 0
    with pytest.raises(ValueError, match="latency"):
        ServingConfig(simulated_latency="fast")


def test_eval_cli_runs_engine_and_scheduler(env, tmp_path):
    import json

    from robot_policy.cli.main import main
    from robot_policy.policies import save_policy

    ckpt = save_policy(make_engine(env, num_steps=2).policy.float(), tmp_path / "ckpt")
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(ckpt), "--task", "tabletop", "--episodes", "1", "--json", str(out)]
    argv += ["--mode", "async", "--latency", "0.1", "--warm-start", "1", "--warm-schedule", "2", "--rtc"]
    assert main([*argv, "--precision", "fp32"]) == 0
    res = json.loads(out.read_text())
    inf = res["inference"]
    assert inf["engine"] and inf["mode"] == "async" and inf["rtc"] and inf["warm_start"]["run_steps"] == 1
    ep = res["per_episode"][0]
    assert ep["inferences"] >= 2 and ep["dropped_actions"] > 0


def test_bench_inference_smoke(tmp_path):
    import json

    from robot_policy.cli.main import main

    out = tmp_path / "inf.json"
    argv = ["bench", "inference", "--preset", "tiny", "--device", "cpu", "--families", "flow", "--steps", "1"]
    assert main([*argv, "--reps", "2", "--budget", "0.05", "--precision", "fp32", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    modes = {(r["family"], r["mode"]) for r in rows}
    assert {("flow", "eager"), ("flow", "engine"), ("network", "eager")} <= modes
    for r in rows:
        assert {"family", "sampler", "steps", "mode", "device", "p50_ms", "p99_ms"} <= set(r)
        assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert "overhead_vs_forward" in next(r for r in rows if r["mode"] == "engine" and r["family"] == "flow")
    assert out.with_suffix(".png").stat().st_size > 1000
