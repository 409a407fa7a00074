"""Domain randomization: validation naming the field, draws within ranges, model changes, seeding, schedule."""

from __future__ import annotations

import numpy as np
import pytest

from robot_policy.config import ConfigError, to_dict
from robot_policy.sim import make_env
from robot_policy.sim.randomization import (
    DEFAULT_RANDOMIZATION,
    AdaptiveSchedule,
    RandomizationConfig,
    Randomizer,
    load_randomization,
    scaled_config,
)


@pytest.fixture(scope="module")
def env():
    e = make_env("tabletop", randomization="default")
    yield e
    e.close()


def _write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "field", "why"),
    [
        ("dynamics:\n  friction_scale: [1.3, 0.7]\n", "dynamics.friction_scale", "greater than high"),
        ("dynamics:\n  frction_scale: [0.9, 1.1]\n", "frction_scale", "unknown field"),
        ("control:\n  action_latency_steps: [0, 1.5]\n", "control.action_latency_steps", "integer"),
        (
            "visuals:\n  camera_fovy_offset_deg: [-90, 3]\n",
            "visuals.camera_fovy_offset_deg",
            "allowed interval",
        ),
        ("dynamics:\n  object_mass_scale: 1.2\n", "dynamics.object_mass_scale", "list"),
        ("control:\n  obs_noise_std: [0.0, 0.1, 0.2]\n", "control.obs_noise_std", r"\[low, high\]"),
    ],
)
def test_malformed_files_are_rejected_naming_the_field(tmp_path, text, field, why):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=why) as exc:
        load_randomization(path)
    assert field in str(exc.value)
    assert str(path) in str(exc.value)


def test_shipped_configs_load_and_missing_file_is_explained():
    for name in ("default", "none", "wide"):
        assert isinstance(load_randomization(name), RandomizationConfig)
    with pytest.raises(ConfigError, match="shipped configs: .*default"):
        load_randomization("does_not_exist")


def test_draws_stay_within_ranges():
    cfg = load_randomization(DEFAULT_RANDOMIZATION)
    r = Randomizer(cfg)
    rng = np.random.default_rng(0)
    for _ in range(200):
        draw = r.draw(rng)
        for key, value in draw.items():
            group, name = key.split(".")[:2]
            lo, hi = getattr(getattr(cfg, group), name)
            assert lo <= value <= hi, key
        assert isinstance(draw["control.action_latency_steps"], int)
    assert all(isinstance(v, (int, float)) for v in draw.values())  # flat, JSON-able


def test_randomization_changes_the_model_and_none_restores_it(env):
    u = env.unwrapped
    m = u.model
    cube = u.object_body_ids[0]
    table_geom = u.table_geom_ids[0]
    nominal = {
        "mass": m.body_mass[cube],
        "friction": m.geom_friction[table_geom, 0],
        "damping": m.dof_damping[u.dof_adr[0]],
        "rgba": m.geom_rgba[table_geom].copy(),
        "fovy": m.cam_fovy[0],
        "light": m.light_diffuse[0].copy(),
        "kp": m.actuator_gainprm[0, 0],
    }
    _, info = env.reset(seed=4)
    draw = info["randomization"]
    assert m.body_mass[cube] == pytest.approx(nominal["mass"] * draw["dynamics.object_mass_scale"])
    assert m.geom_friction[table_geom, 0] == pytest.approx(
        nominal["friction"] * draw["dynamics.friction_scale"]
    )
    assert m.dof_damping[u.dof_adr[0]] == pytest.approx(
        nominal["damping"] * draw["dynamics.joint_damping_scale"]
    )
    assert m.actuator_gainprm[0, 0] == pytest.approx(nominal["kp"] * draw["dynamics.actuator_gain_scale"])
    assert m.cam_fovy[0] == pytest.approx(nominal["fovy"] + draw["visuals.camera_fovy_offset_deg"])
    assert not np.allclose(m.geom_rgba[table_geom], nominal["rgba"])
    assert not np.allclose(m.light_diffuse[0], nominal["light"])
    # A second episode draws differently and does not compound the first draw.
    _, info2 = env.reset(seed=5)
    assert m.body_mass[cube] == pytest.approx(
        nominal["mass"] * info2["randomization"]["dynamics.object_mass_scale"]
    )
    assert info2["randomization"] != draw
    plain = make_env("tabletop", randomization=None)
    _, info3 = plain.reset(seed=4)
    assert info3["randomization"] == {}
    assert plain.unwrapped.model.body_mass[cube] == pytest.approx(nominal["mass"])
    plain.close()


def test_randomized_episode_is_reproducible_from_its_seed(env):
    other = make_env("tabletop", randomization="default")
    obs_a, info_a = env.reset(seed=21)
    obs_b, info_b = other.reset(seed=21)
    assert info_a["randomization"] == info_b["randomization"]
    action = np.concatenate([obs_a["joint_pos"] + 0.1, [1.0]]).astype(np.float32)
    for _ in range(5):
        obs_a, *_ = env.step(action)
        obs_b, *_ = other.step(action)
    for key in obs_a:
        np.testing.assert_array_equal(obs_a[key], obs_b[key])
    other.close()


def test_robosuite_gain_randomization_reaches_the_controller():
    env = make_env("lift", randomization={"dynamics": {"actuator_gain_scale": [1.5, 1.5]}})
    env.reset(seed=0)
    ctrl = env.unwrapped.robot.part_controllers["right"]
    assert np.allclose(ctrl.kp, 1.5 * 150.0)
    env.close()


def test_adaptive_schedule_widens_on_success_and_shrinks_on_failure(tmp_path):
    target = load_randomization("wide")
    sched = AdaptiveSchedule(target, threshold=0.8, scale=0.25, grow=2.0, shrink=0.5)
    first = sched.current().dynamics.object_mass_scale
    widened = sched.update(0.95).dynamics.object_mass_scale
    assert widened[1] - widened[0] > first[1] - first[0]
    sched.update(0.9)
    sched.update(0.9)  # capped at the target ranges
    assert sched.scale == 1.0
    assert sched.current().dynamics.object_mass_scale == target.dynamics.object_mass_scale
    shrunk = sched.update(0.3).dynamics.object_mass_scale
    assert shrunk[1] - shrunk[0] < target.dynamics.object_mass_scale[1] - target.dynamics.object_mass_scale[0]
    assert [h["success_rate"] for h in sched.history] == [0.95, 0.9, 0.9, 0.3]
    sched.save(tmp_path / "s.json")
    again = AdaptiveSchedule.load(tmp_path / "s.json")
    assert again.scale == sched.scale and again.history == sched.history
    # Shrinking all the way keeps every range valid (scales stay > 0, latency integer).
    tiny = scaled_config(target, 0.0)
    assert tiny.dynamics.friction_scale == [1.0, 1.0] and tiny.control.action_latency_steps == [0, 0]


def test_adaptive_schedule_driven_by_expert_evaluation():
    """The schedule runs off real evaluation results: the tabletop expert keeps widening it."""
    env = make_env("tabletop")
    from robot_policy.sim import make_expert

    expert = make_expert("tabletop", env)

    def evaluate(cfg):
        u = env.unwrapped
        u.randomizer = Randomizer(cfg)
        wins = 0
        for seed in range(2):
            obs, _ = env.reset(seed=seed)
            expert.reset(seed)
            for _ in range(u.max_episode_steps):
                obs, _, _, _, info = env.step(expert.act(obs))
                if info["success"]:
                    wins += 1
                    break
        return wins / 2

    sched = AdaptiveSchedule(load_randomization("default"), threshold=0.5, scale=0.25, grow=2.0)
    final = sched.run(evaluate, rounds=2)
    assert sched.scale == 1.0 and final.dynamics == load_randomization("default").dynamics
    env.close()


def test_sim_adapt_cli_runs_rounds_saves_and_resumes(tmp_path, capsys):
    from robot_policy.cli.main import main

    state, final = tmp_path / "s.json", tmp_path / "final.yaml"
    args = ["sim", "adapt", "--expert", "--task", "tabletop", "--target", "default", "--episodes", "2"]
    assert main([*args, "--rounds", "2", "--out", str(state), "--save-config", str(final)]) == 0
    assert "round 2/2" in capsys.readouterr().out
    sched = AdaptiveSchedule.load(state)
    assert len(sched.history) == 2 and sched.scale > 0.25  # the expert succeeds: ranges widened
    saved, current = to_dict(load_randomization(final)), to_dict(sched.current())
    for group in current:
        for name, rng in current[group].items():
            assert saved[group][name] == pytest.approx(rng, abs=1e-6), name
    assert main([*args, "--rounds", "1", "--resume", str(state), "--out", str(state)]) == 0
    assert len(AdaptiveSchedule.load(state).history) == 3
    no_source = [a for a in args if a != "--expert"]
    assert main([*no_source, "--rounds", "1", "--out", str(state)]) == 2  # neither policy nor expert


def test_policy_evaluator_shrinks_ranges_for_a_failing_policy(tmp_path):
    """An untrained policy checkpoint, evaluated through robot_policy.evaluation, never succeeds."""
    import torch

    from robot_policy.config import from_dict
    from robot_policy.pipelines.curriculum import policy_evaluator, run_schedule
    from robot_policy.policies import POLICIES, PolicyConfig, save_policy

    cfg = {
        "family": "flow",
        "obs_keys": ["joint_pos"],
        "obs_shapes": {"joint_pos": [7]},
        "action_dim": 8,
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "fps": 20.0,
        "down_dims": [16, 32],
        "obs_mlp_dims": [32],
        "step_embed_dim": 16,
    }
    stats = {
        "joint_pos": {"min": -np.ones(7), "max": np.ones(7), "mean": np.zeros(7), "std": np.ones(7)},
        "action": {"min": -np.ones(8), "max": np.ones(8), "mean": np.zeros(8), "std": np.ones(8)},
    }
    torch.manual_seed(0)
    save_policy(POLICIES.get("flow")(from_dict(PolicyConfig, cfg), stats), tmp_path / "run")
    sched = AdaptiveSchedule(load_randomization("default"), threshold=0.5, scale=0.5, shrink=0.5)
    # One intra-op thread: tiny networks on a shared 2-core machine are ~15x slower with two.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluate = policy_evaluator(str(tmp_path / "run"), "tabletop", episodes=1)
        run_schedule(sched, evaluate, rounds=1, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert sched.history[0]["success_rate"] == 0.0 and sched.scale == 0.25
