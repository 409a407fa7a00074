"""TRANSIC: residual bounds, two-stage freezing, class balancing, gating, checkpoints, the ROS graph."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from robot_policy import conventions as conv
from robot_policy.hil.transic import (
    BaseMismatchError,
    GatedPolicy,
    ResidualGate,
    TransicConfig,
    balanced_indices,
    compose,
    is_transic_checkpoint,
    load_gated,
    save_transic,
)
from robot_policy.hil.transic.train import train_stage_one, train_stage_two

KEYS = {"joint_pos": 7, "gripper": 1, "object": 7}


def tiny_base(path, seed=0):
    from robot_policy.policies import POLICIES, PolicyConfig, save_policy

    torch.manual_seed(seed)
    stats = {
        k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}
        for k, d in KEYS.items()
    }
    stats["action"] = {"min": -np.ones(8) * 3, "max": np.ones(8) * 3, "mean": np.zeros(8), "std": np.ones(8)}
    pcfg = PolicyConfig(
        family="flow",
        obs_keys=list(KEYS),
        obs_shapes={k: [d] for k, d in KEYS.items()},
        action_dim=8,
        down_dims=[16, 32],
        step_embed_dim=16,
        obs_mlp_dims=[32],
    )
    return save_policy(POLICIES.get("flow")(pcfg, stats), path)


def synthetic(n=400, c=32, seed=0):
    rng = np.random.default_rng(seed)
    iv = rng.random(n) < 0.2
    pre = rng.normal(0, 1, (n, 8)).astype(np.float32)
    post = pre.copy()
    post[iv, :7] += 0.05
    return {
        "features": rng.normal(0, 1, (n, c)).astype(np.float32),
        "base_naction": pre / 3,
        "pre": pre,
        "post": post,
        "intervention": iv,
        "episode": np.arange(n) // 100,
    }


def test_residual_is_bounded_per_joint_whatever_the_weights():
    bounds = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.5], np.float32)
    head = ResidualGate(32, 8, bounds, TransicConfig())
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 50.0)  # saturate every unit
        out = head(torch.randn(256, 32) * 100, torch.randn(256, 8) * 100)["residual"].numpy()
    assert np.all(np.abs(out) <= bounds + 1e-6)
    assert np.allclose(np.abs(out).max(0), bounds, rtol=1e-3)  # the bound is reached, per joint
    with pytest.raises(ValueError, match="one value per joint"):
        TransicConfig(residual_bound=[0.1, 0.2]).bounds(7)
    assert np.all(TransicConfig(residual_bound=[0.2]).bounds(7) == np.float32(0.2))


def test_two_stage_schedule_freezes_what_it_should():
    cfg = TransicConfig(hidden_dims=[32], residual_steps=30, gate_steps=30, batch_size=64)
    data = synthetic()
    bounds = cfg.bounds(7)
    head = ResidualGate(32, 8, bounds, cfg)
    nres = np.clip((data["post"] - data["pre"])[:, :7] / bounds, -0.97, 0.97).astype(np.float32)
    flip = np.zeros(len(nres), bool)
    gate0 = {k: v.clone() for k, v in head.gate.state_dict().items()}
    rng = np.random.default_rng(0)
    train_stage_one(head, data, nres, flip, np.flatnonzero(data["intervention"]), cfg, rng)
    # stage 1 trained the trunk + residual and never touched the gate
    assert all(torch.equal(gate0[k], v) for k, v in head.gate.state_dict().items())
    after1 = {k: v.clone() for k, v in head.state_dict().items() if not k.startswith("gate.")}
    train_stage_two(head, data, np.arange(len(nres)), cfg, rng)
    for k, v in head.state_dict().items():
        if k.startswith("gate."):
            assert not torch.equal(gate0[k[len("gate.") :]], v), f"stage 2 did not train {k}"
        else:
            assert torch.equal(after1[k], v), f"stage 2 changed the frozen {k}"
    assert all(p.requires_grad for p in head.residual_parameters())  # unfrozen again afterwards


def test_class_balancing_subsamples_the_majority():
    labels = np.zeros(1000, bool)
    labels[:37] = True
    idx = balanced_indices(labels, np.random.default_rng(0))
    assert len(idx) == 74 and labels[idx].sum() == 37 and len(set(idx.tolist())) == 74
    assert set(np.flatnonzero(labels)) <= set(idx.tolist())  # every minority sample kept
    other = balanced_indices(labels, np.random.default_rng(1))
    assert set(other[~labels[other]]) != set(idx[~labels[idx]])  # a fresh subsample per draw
    assert len(balanced_indices(np.ones(10, bool), np.random.default_rng(0))) == 0


def test_gate_on_off_changes_the_command_exactly_as_specified():
    base = np.arange(24, dtype=np.float32).reshape(3, 8) / 10
    base[:, 7] = [1.0, -1.0, 1.0]
    res = np.full((3, 7), 0.05, np.float32)
    flip = np.array([True, True, False])
    gate = np.array([True, False, True])
    g = compose(base, res, flip, gate, "gated")
    assert np.allclose(g[0, :7], base[0, :7] + 0.05) and g[0, 7] == -1.0  # fired: residual + flip
    assert np.array_equal(g[1], base[1])  # not fired: the base action bit for bit
    assert np.allclose(g[2, :7], base[2, :7] + 0.05) and g[2, 7] == 1.0  # fired, no flip
    a = compose(base, res, flip, gate, "always")
    assert np.allclose(a[:, :7], base[:, :7] + 0.05) and list(a[:, 7]) == [-1.0, 1.0, 1.0]
    assert np.array_equal(compose(base, res, flip, gate, "off"), base)


def _head_with_bias(gate_bias: float, residual_bias: float, cfg: TransicConfig) -> ResidualGate:
    head = ResidualGate(32, 8, cfg.bounds(7), cfg)
    with torch.no_grad():
        head.gate.weight.zero_()
        head.gate.bias.fill_(gate_bias)
        head.residual.bias.fill_(residual_bias)
        head.flip.weight.zero_()
        head.flip.bias.fill_(-10.0)
    return head


def test_gated_policy_applies_the_residual_only_where_the_gate_fires(tmp_path):
    from robot_policy.policies import load

    base = load(tiny_base(tmp_path / "base"))
    cfg = TransicConfig(hidden_dims=[16], residual_bound=[0.1])
    obs = {k: np.zeros((2, d), np.float32) for k, d in KEYS.items()}
    outs = {}
    for name, gate_bias in (("fires", 10.0), ("silent", -10.0)):
        p = GatedPolicy(base, _head_with_bias(gate_bias, 1.0, cfg), cfg)
        torch.manual_seed(3)
        outs[name] = p.predict(obs).actions
        outs[name + "_diag"] = p.diagnostics()
    torch.manual_seed(3)
    plain = base.predict(obs).actions
    expected = np.tanh(1.0) * 0.1
    assert np.allclose(outs["fires"][:, :7] - plain[:, :7], expected, atol=1e-5)
    assert np.array_equal(outs["silent"], plain)
    assert outs["fires_diag"]["transic_gate"] == "1" and outs["silent_diag"]["transic_gate"] == "0"
    assert float(outs["fires_diag"]["transic_residual_norm_rad"]) == pytest.approx(
        expected * np.sqrt(7), 1e-3
    )
    always = GatedPolicy(base, _head_with_bias(-10.0, 1.0, cfg), cfg, mode="always")
    torch.manual_seed(3)
    assert np.allclose(always.predict(obs).actions[:, :7] - plain[:, :7], expected, atol=1e-5)


def test_checkpoint_round_trip_and_wrong_base_hash_rejected(tmp_path):
    from robot_policy.policies import load

    base_dir = tiny_base(tmp_path / "base")
    cfg = TransicConfig(hidden_dims=[16], residual_bound=[0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2], mode="always")
    head = _head_with_bias(2.0, 0.5, cfg)
    save_transic(head, cfg, base_dir, tmp_path / "tr", report={"ok": 1})
    assert is_transic_checkpoint(tmp_path / "tr") and not is_transic_checkpoint(base_dir)
    meta = json.loads((tmp_path / "tr" / "config.json").read_text())
    assert meta["base"]["path"] == str(base_dir.resolve()) and len(meta["base"]["sha256"]) == 64
    g = load_gated(tmp_path / "tr")
    assert g.mode == "always" and g.transic == cfg
    for k, v in head.state_dict().items():
        assert torch.equal(g.head.state_dict()[k], v)
    # robot_policy.policies.load recognizes the folder too (eval, policy node, sessions)
    assert isinstance(load(tmp_path / "tr"), GatedPolicy)
    # another base in the recorded place: refused, naming both hashes and the fix
    tiny_base(base_dir, seed=1)
    with pytest.raises(BaseMismatchError, match="transic train"):
        load_gated(tmp_path / "tr")


def test_train_from_corrections_collected_in_the_target_world(tmp_path):
    """collect (real sim, the scripted human) -> two-stage train -> report -> gated eval."""
    from robot_policy.evaluation.rollout import evaluate
    from robot_policy.hil.transic.collect import CollectConfig, collect_corrections
    from robot_policy.hil.transic.train import train_transic
    from robot_policy.policies import load

    base_dir = tiny_base(tmp_path / "base")
    with torch.no_grad():
        stats = collect_corrections(load(base_dir), CollectConfig(episodes=2), tmp_path / "c.zarr")
    assert stats["episodes"] == 2 and 0 < stats["intervention_frames"] < stats["frames"]
    cfg = TransicConfig(hidden_dims=[32], residual_steps=40, gate_steps=20, val_episodes=1)
    report = train_transic(base_dir, tmp_path / "c.zarr", tmp_path / "tr", cfg, log=lambda s: None)
    assert report["held_out"]["steps"] > 0 and "gate_recall" in report["held_out"]
    assert "residual_mae_rad" in report["train"]
    g = load_gated(tmp_path / "tr")
    with torch.no_grad():
        r = evaluate(g, "tabletop", 1, randomization="target_world", progress=False, predictor=g)
    assert r["episodes"] == 1 and g.totals["actions"] > 0


def test_target_world_lies_outside_the_training_randomization():
    from robot_policy.sim.randomization import load_randomization

    src, tgt = load_randomization("default"), load_randomization("target_world")
    assert tgt.dynamics.object_mass_scale[0] > src.dynamics.object_mass_scale[1]
    assert tgt.dynamics.friction_scale[1] < src.dynamics.friction_scale[0]
    assert tgt.control.action_latency_steps[0] > src.control.action_latency_steps[1]
    assert tgt.dynamics.actuator_gain_scale[1] < src.dynamics.actuator_gain_scale[0]


@pytest.mark.ros
def test_gated_policy_runs_through_the_ros_graph(tmp_path):
    pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_graph import Graph, diagnostics, private_domain, wait_until
    from sensor_msgs.msg import JointState

    base_dir = tiny_base(tmp_path / "base")
    cfg = TransicConfig(hidden_dims=[16], residual_bound=[0.05])
    save_transic(_head_with_bias(10.0, 1.0, cfg), replace(cfg, mode="gated"), base_dir, tmp_path / "tr")
    private_domain()
    g = Graph(
        "sim.launch.xml",
        {"checkpoint": str(tmp_path / "tr"), "record": "false"},
        tmp_path / "graph.log",
    )
    try:
        c = g.client
        c.subscribe("/joint_states", JointState, keep=5)
        c.subscribe("/joint_commands", JointState, keep=50)
        c.subscribe("/diagnostics", DiagnosticArray, keep=50, sensor=False)
        c.latest("/joint_states", timeout=60)

        def gated():
            d = c.diagnostics("policy: inference")
            return d if d and d.get("transic_gate") == "1" and int(d.get("inferences", "0")) > 0 else None

        d = wait_until(gated, 60, "a gated inference on /diagnostics")
        assert d["transic_mode"] == "gated"
        assert float(d["transic_residual_norm_rad"]) == pytest.approx(np.tanh(1.0) * 0.05 * np.sqrt(7), 1e-3)
        wait_until(lambda: c.count("/joint_commands") > 5, 30, "commands executed by the sim robot")
        assert diagnostics(c, "sim: safety")["rejected"] == "0"
    except BaseException:
        print(g.log())
        raise
    finally:
        g.close()


@pytest.mark.ros
def test_recorded_episodes_carry_the_gate_decision_of_each_executed_action(tmp_path):
    """The policy node publishes each plan's decisions under the plan's tag; the recorder files
    them with the executed action the robot reports under that tag."""
    pytest.importorskip("rclpy")
    from ros_graph import Graph, private_domain, wait_until
    from sensor_msgs.msg import JointState

    from robot_policy.data import EpisodeStore

    base_dir = tiny_base(tmp_path / "base")
    cfg = TransicConfig(hidden_dims=[16], residual_bound=[0.05])
    head = _head_with_bias(-1.0, 1.0, cfg)
    with torch.no_grad():  # a gate that fires where the base's joint-0 action is positive
        head.trunk[0].weight.zero_()
        head.trunk[0].bias.zero_()
        head.trunk[0].weight[0, head.feature_dim] = 10.0
        head.gate.weight[0, 0] = 10.0
    save_transic(head, cfg, base_dir, tmp_path / "tr")
    private_domain()
    dataset = tmp_path / "rec.zarr"
    g = Graph(
        "sim.launch.xml",
        {"checkpoint": str(tmp_path / "tr"), "dataset": str(dataset), "record_transic": "true"},
        tmp_path / "graph.log",
    )
    try:
        c = g.client
        c.subscribe("/joint_commands", JointState, keep=200)
        # The robot holds (untagged commands) until the first plan lands; record from there on.
        wait_until(
            lambda: any(m.header.frame_id.startswith("/policy:") for m in c.messages("/joint_commands")),
            60,
            "a plan of the policy executed by the sim robot",
        )
        assert c.call("/recorder/start").success
        n0 = c.count("/joint_commands")
        wait_until(lambda: c.count("/joint_commands") > n0 + 60, 60, "60 executed actions")
        r = c.call("/recorder/stop")
        assert r.success, r.message
    except BaseException:
        print(g.log())
        raise
    finally:
        g.close()
    with EpisodeStore.open(dataset) as store:
        ep = store.get_episode(0, ["action", *conv.TRANSIC_KEYS])
    gate, prob, norm = (ep[k].reshape(-1) for k in conv.TRANSIC_KEYS)
    decided = prob >= 0
    assert decided.mean() > 0.9  # the policy's plans commanded (nearly) every step
    # both decisions occur, and each frame's values come from one and the same action
    assert 0 < gate[decided].mean() < 1
    assert np.array_equal(gate[decided] == 1, prob[decided] > cfg.gate_threshold)
    expected = np.tanh(1.0) * 0.05 * np.sqrt(7)
    assert np.allclose(norm[gate == 1], expected, atol=1e-4) and np.all(norm[gate == 0] == 0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_eval_cli_serves_a_transic_checkpoint_through_the_engine(tmp_path, precision):
    """bf16: the engine casts the base's networks; the gate's features must still compute
    (``precision auto`` picks bf16 on CPUs where it is faster, so both must work)."""
    from robot_policy.cli.main import main

    cfg = TransicConfig(hidden_dims=[16], residual_bound=[0.05])
    save_transic(_head_with_bias(10.0, 1.0, cfg), cfg, tiny_base(tmp_path / "base"), tmp_path / "tr")
    out = tmp_path / "ev.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "tr"), "--task", "tabletop", "--episodes", "1"]
    argv += ["--precision", precision]
    assert main([*argv, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["inference"]["engine"] and res["transic"]["mode"] == "gated"
    assert res["inference"]["engine_report"]["precision"] == precision
    assert res["transic"]["gate_fire_rate"] == 1.0 and res["transic"]["mean_residual_norm_rad"] > 0
    assert main([*argv, "--json", str(out), "--transic-mode", "off"]) == 0
    assert json.loads(out.read_text())["transic"]["gate_fire_rate"] == 0.0


def test_evaluation_draws_the_same_sampler_noise_per_episode_seed(tmp_path):
    """Common random numbers: the same checkpoint evaluated twice on the same seeds (eager and
    through the engine, with other draws in between) plans the same chunks, so an A/B difference
    in a benchmark is the policies', not the noise's; other seeds give other noise."""
    from robot_policy.evaluation.rollout import evaluate
    from robot_policy.inference import EngineConfig
    from robot_policy.inference.engine import InferenceEngine
    from robot_policy.policies import load

    policy = load(tiny_base(tmp_path / "base"))
    engine = InferenceEngine(policy, EngineConfig(device="cpu", precision="fp32"))

    def planned(served, seed):
        seen, inner = [], served.predict

        def recording(*a, **k):
            chunk = inner(*a, **k)
            seen.append(np.array(chunk.actions))
            return chunk

        served.predict = recording
        try:
            torch.randn(7)  # other draws before the evaluation must not matter
            with torch.no_grad():
                evaluate(policy, "tabletop", 2, seed=seed, progress=False, predictor=served)
        finally:
            del served.predict
        return seen

    for served in (policy, engine):
        a, b, c = planned(served, 5), planned(served, 5), planned(served, 6)
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not np.allclose(a[0], c[0])


def test_benchmark_runs_every_row_and_pairs_the_episodes(tmp_path):
    """The whole protocol on a tiny base: every row, Wilson intervals, per-episode outcomes."""
    from robot_policy.hil.transic.benchmark import ROWS, BenchmarkConfig, run_benchmark, table
    from robot_policy.pipelines.collect import collect

    base_dir = tiny_base(tmp_path / "base")
    collect("tabletop", 2, tmp_path / "source_demos.zarr", randomization="default", overwrite=True)
    cfg = BenchmarkConfig(
        out=str(tmp_path / "bench"),
        base=str(base_dir),
        episodes=2,
        corrections=2,
        finetune_steps=2,
        transic=TransicConfig(hidden_dims=[16], residual_steps=20, gate_steps=10, val_episodes=1),
    )
    res = run_benchmark(cfg, log=lambda s: None)
    assert set(res["results"]) == {key for key, _, _ in ROWS}
    for row in res["results"].values():
        assert len(row["per_episode_success"]) == 2 and row["successes"] == sum(row["per_episode_success"])
        assert 0.0 <= row["ci95"][0] <= row["success_rate"] <= row["ci95"][1] <= 1.0
    assert res["corrections"]["episodes"] == 2
    saved = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert saved["results"] == res["results"] and (tmp_path / "bench" / "benchmark.png").is_file()
    assert len(table(res)) == 2 + len(ROWS)
