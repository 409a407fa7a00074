"""Inference engine: parity with the eager policy pipeline, warm start, RTC prefix, bf16, CUDA graphs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from robot_policy.config import from_dict
from robot_policy.inference import ChunkScheduler, SchedulerConfig
from robot_policy.inference.engine import EngineConfig, InferenceEngine
from robot_policy.inference.warmstart import WarmStartConfig, warm_steps
from robot_policy.policies import POLICIES, PolicyConfig

FAMILIES = ["diffusion", "flow", "consistency"]


def tiny_policy(family: str, images: bool = False, seed: int = 0):
    d = {
        "family": family,
        "obs_keys": ["joint_pos"],
        "obs_shapes": {"joint_pos": [7]},
        "action_dim": 4,
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "fps": 10.0,
        "down_dims": [16, 32],
        "obs_mlp_dims": [32],
        "step_embed_dim": 16,
        "diffusion": {"num_train_timesteps": 20, "num_inference_steps": 20},
    }
    if images:
        d["image_keys"] = ["cam_rgb"]
        d["obs_shapes"]["cam_rgb"] = [16, 16, 3]
        d["image_width"] = 8
        d["image_feature_dim"] = 8
    stats = {
        "joint_pos": {"min": -np.ones(7), "max": np.ones(7), "mean": np.zeros(7), "std": np.ones(7)},
        "action": {"min": -2 * np.ones(4), "max": 3 * np.ones(4), "mean": np.zeros(4), "std": np.ones(4)},
    }
    torch.manual_seed(seed)
    return POLICIES.get(family)(from_dict(PolicyConfig, d), stats)


def engine(policy, **kw) -> InferenceEngine:
    kw.setdefault("warmup", 1)
    kw.setdefault("device", "cpu")
    # 'auto' would pick bf16 on CPUs where a timing probe says it is faster: not deterministic.
    kw.setdefault("precision", "fp32")
    return InferenceEngine(policy, EngineConfig(**kw))


def eager_reference(policy, batch, steps, noise, sampler=None, seed=3):
    with torch.no_grad():
        cond = policy.encode(policy.normalize_obs(batch))
        torch.manual_seed(seed)
        n = policy.sample(cond, steps, noise=torch.from_numpy(noise), sampler=sampler)
        return policy.unnormalize_action(n).numpy()


def count_calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda *_: calls.append(1))


@pytest.mark.parametrize(
    "family, steps, sampler, images",
    [
        ("diffusion", 20, "ddpm", False),
        ("diffusion", 5, "ddim", True),
        ("flow", 1, None, False),
        ("flow", 4, "midpoint", True),
        ("consistency", 1, None, True),
        ("consistency", 3, None, False),
    ],
)
def test_engine_matches_eager_policy(family, steps, sampler, images):
    policy = tiny_policy(family, images)
    ref_policy = copy.deepcopy(policy)  # the engine converts its copy (channels-last, eval)
    eng = engine(policy, sampler=sampler or "", num_steps=steps, threads=1)
    obs = eng.dummy_obs(seed=4)
    batch = eng._batch(obs)
    noise = eng._fixed_noise(1, seed=5)
    torch.manual_seed(3)  # DDPM draws per-step noise from the global RNG in both paths
    out = eng.predict_batch(batch, noise=noise)
    ref = eager_reference(ref_policy.eval(), batch, steps, noise, sampler)
    assert out.shape == (1, 8, 4)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    # A different observation gives a different plan: the engine really reads its input.
    other = eng.predict_batch(eng._batch(eng.dummy_obs(seed=9)), noise=noise)
    assert np.abs(other - out).max() > 1e-3


def test_predict_returns_timed_chunk_from_current_step():
    eng = engine(tiny_policy("flow"), num_steps=2)
    chunk = eng.predict(eng.dummy_obs(), start_time=12.5)
    assert chunk.actions.shape == (8 - 2 + 1, 4) and chunk.actions.dtype == np.float32
    assert chunk.start_time == 12.5 and chunk.dt == pytest.approx(0.1)
    with pytest.raises(KeyError, match="joint_pos"):
        eng.predict({"other": np.zeros((2, 7))})
    with pytest.raises(ValueError, match="n_obs_steps"):
        eng.predict({"joint_pos": np.zeros((3, 7), np.float32)})


def test_cpu_call_is_split_into_encode_and_denoise():
    """The policy node reports these parts on /diagnostics: they must account for the call."""
    import time

    eng = engine(tiny_policy("flow", images=True), num_steps=4)
    obs = eng.dummy_obs()
    encoder_calls, hook = count_calls(eng.policy.obs_encoder)
    t0 = time.perf_counter()
    eng.predict(obs)
    total_ms = (time.perf_counter() - t0) * 1e3
    hook.remove()
    parts = eng.last_stages
    assert set(parts) == {"encode", "denoise"} and len(encoder_calls) == 1
    assert parts["encode"] > 0 and parts["denoise"] > 0
    assert parts["encode"] + parts["denoise"] <= total_ms


@pytest.mark.parametrize("family", FAMILIES)
def test_warm_start_keeps_shape_continuity_and_runs_only_k_steps(family):
    n_sched = 10 if family != "consistency" else 4
    policy = tiny_policy(family)
    cold = engine(policy, num_steps=n_sched, sampler="ddim" if family == "diffusion" else "", seed=0)
    warm = engine(
        policy,
        num_steps=n_sched,
        sampler="ddim" if family == "diffusion" else "",
        seed=0,
        warm_start=WarmStartConfig(schedule_steps=n_sched, run_steps=1),
    )
    obs = warm.dummy_obs(seed=2)
    prev = cold.predict(obs)
    # The plan as the scheduler would hand it after one executed step: shifted by one action.
    prior = np.concatenate([prev.actions[1:], prev.actions[-1:]])
    calls, hook = count_calls(policy.model)
    w = warm.predict(obs, prior=prior)
    n_warm = len(calls)
    c = cold.predict(obs)
    hook.remove()
    assert w.actions.shape == c.actions.shape == prev.actions.shape
    assert np.all(np.isfinite(w.actions))
    assert n_warm == 1 and len(calls) - n_warm == n_sched  # k network calls instead of N
    # Continuity: the warm-started plan stays near the shifted previous plan; a cold one does not.
    scale = 5.0  # raw action range (max - min)
    d_warm = np.abs(w.actions - prior).mean() / scale
    d_cold = np.abs(c.actions - prior).mean() / scale
    assert d_warm < 0.5 * d_cold, (d_warm, d_cold)


def test_rtc_prior_pins_the_prefix_that_runs_during_inference():
    eng = engine(tiny_policy("flow"), num_steps=2, seed=1)
    sched = ChunkScheduler(SchedulerConfig(mode="async", n_action_steps=4, rtc=True), dt=0.1)
    obs = eng.dummy_obs()
    req = sched.begin_inference(0.0)
    assert req.prior is None
    sched.add_chunk(eng.predict(obs, start_time=0.0), now=0.2)  # 2 ticks of latency
    req = sched.begin_inference(0.2, horizon=7)
    new = eng.predict(obs, prior=req.prior, start_time=req.time)
    d = req.prior.delay_steps
    assert d == 2
    np.testing.assert_allclose(new.actions[:d], req.prior.actions[:d], atol=1e-5)
    # Beyond the overlap the chunk is free (not a copy of the padded plan).
    assert np.abs(new.actions[-1] - req.prior.actions[-1]).max() > 1e-3


def test_bf16_is_validated_against_fp32_and_rejected_when_too_far():
    policy = tiny_policy("flow", images=True)
    eng = engine(policy, precision="bf16", num_steps=2, bf16_tolerance=1.0)
    assert eng.report["precision"] == "bf16" and eng.bf16
    err = eng.report["bf16_max_normalized_error"]
    assert 0.0 < err < 1.0
    strict = engine(tiny_policy("flow", images=True), precision="bf16", num_steps=2, bf16_tolerance=0.0)
    assert strict.report["precision"] == "fp32"
    assert next(strict.policy.model.parameters()).dtype == torch.float32


def test_warm_steps_validation_and_bad_config():
    assert warm_steps(WarmStartConfig(run_steps=3, schedule_steps=10), 4) == (10, 7)
    assert warm_steps(WarmStartConfig(run_steps=1, schedule_steps=0), 4) == (4, 3)
    with pytest.raises(ValueError, match="run_steps"):
        warm_steps(WarmStartConfig(run_steps=5, schedule_steps=4), 4)
    with pytest.raises(ValueError, match="precision"):
        InferenceEngine(tiny_policy("flow"), EngineConfig(precision="fp8"))


# --------------------------------------------------------------------------- CUDA (skipped here)
@pytest.mark.gpu
@pytest.mark.parametrize("family, sampler", [("diffusion", "ddim"), ("flow", ""), ("consistency", "")])
def test_cuda_graph_capture_and_replay_with_new_inputs(family, sampler):
    policy = tiny_policy(family, images=True)
    eager = engine(
        copy.deepcopy(policy), device="cuda", cuda_graph=False, precision="fp32", sampler=sampler, num_steps=3
    )
    graph = engine(policy, device="cuda", cuda_graph=True, precision="fp32", sampler=sampler, num_steps=3)
    assert graph.report.get("graphs", 0) >= 1 and "graph_failures" not in graph.report
    noise = graph._fixed_noise(1, seed=0)
    outs = []
    for seed in (1, 2, 3):  # replay the same graph with new observations and noise
        batch = graph._batch(graph.dummy_obs(seed=seed))
        g = graph.predict_batch(batch, noise=noise)
        e = eager.predict_batch(batch, noise=noise)
        np.testing.assert_allclose(g, e, atol=1e-3, rtol=1e-3)
        outs.append(g)
    assert np.abs(outs[0] - outs[1]).max() > 1e-3


@pytest.mark.gpu
def test_cuda_graph_warm_start_and_batch_configurations():
    eng = engine(
        tiny_policy("flow"),
        device="cuda",
        num_steps=4,
        warm_start=WarmStartConfig(schedule_steps=4, run_steps=1),
    )
    obs = eng.dummy_obs()
    prev = eng.predict(obs)
    w = eng.predict(obs, prior=prev.actions)
    assert w.actions.shape == prev.actions.shape and np.all(np.isfinite(w.actions))
    b4 = eng.predict_batch({k: np.repeat(v[None], 4, 0) for k, v in obs.items()})
    assert b4.shape == (4, 8, 4)
    assert eng.report["graphs"] >= 3  # cold b1, warm b1, cold b4
    assert "graph_failures" not in eng.report


@pytest.mark.gpu
def test_cuda_bf16_parity_with_fp32():
    policy = tiny_policy("flow", images=True)
    fp32 = engine(copy.deepcopy(policy), device="cuda", precision="fp32", num_steps=4)
    bf16 = engine(policy, device="cuda", precision="bf16", num_steps=4, bf16_tolerance=0.1)
    assert bf16.report["precision"] == "bf16"
    noise = fp32._fixed_noise(1, seed=0)
    batch = fp32._batch(fp32.dummy_obs(seed=3))
    a, b = fp32.predict_batch(batch, noise=noise), bf16.predict_batch(batch, noise=noise)
    assert np.abs(a - b).max() * 2 / 5 < 0.1  # normalized error within the accepted tolerance
