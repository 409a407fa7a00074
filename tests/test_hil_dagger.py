"""HG-DAgger in simulation, at a tiny budget: corrected rollouts record flags and both actions,
only expert-labelled segments join the data, every round is trained, evaluated and reported."""

from __future__ import annotations

import json

import numpy as np

from robot_policy.hil.dagger import DaggerConfig, round_train_steps, run_dagger, segments


def test_segments_are_the_runs_of_intervention():
    flags = np.array([0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1], bool)
    assert segments(flags, 1) == [(1, 4), (6, 7), (8, 12)]
    assert segments(flags, 3) == [(1, 4), (8, 12)]
    assert segments(np.zeros(5, bool), 1) == []


def test_every_round_makes_the_same_passes_over_its_data():
    cfg = DaggerConfig(train_steps=2500, batch_size=64, min_epochs=100)
    assert round_train_steps(cfg, 602) == 2500  # the floor
    assert round_train_steps(cfg, 3319) == 5186  # a 5x larger aggregate is not under-trained
    assert round_train_steps(DaggerConfig(train_steps=2500, min_epochs=0), 3319) == 2500


def test_dagger_smoke_round_trains_on_demos_plus_corrections(tmp_path):
    from robot_policy.data import EpisodeStore

    cfg = DaggerConfig(
        out=str(tmp_path / "dg"),
        demos=2,
        rounds=1,
        corrections=2,
        eval_episodes=1,
        train_steps=10,
        min_epochs=0.0,
        batch_size=16,
    )
    lines: list[str] = []
    results = run_dagger(cfg, log=lines.append)
    assert [r.round for r in results] == [0, 1] and [r.train_steps for r in results] == [10, 10]
    summary = json.loads((tmp_path / "dg" / "dagger.json").read_text())
    assert len(summary["rounds"]) == 2 and summary["rounds"][1]["ci95"][0] <= summary["rounds"][1]["ci95"][1]
    assert any(line.startswith("round 1: success") and "interventions per rollout" in line for line in lines)

    corr = EpisodeStore.open(tmp_path / "dg" / "round_1" / "corrections.zarr")
    assert corr.num_episodes == 2
    ep, meta = corr.get_episode(0), corr.episode_meta(0)
    flags = ep["intervention"][:, 0]
    assert ep["policy_action"].shape == ep["action"].shape and np.isfinite(ep["policy_action"]).all()
    assert meta["interventions"] == len(segments(flags, 1)) and meta["operator"] == "scripted-corrector"
    # A barely trained policy strays: the expert corrects it, and only its segments are new data.
    assert flags.any()
    data = EpisodeStore.open(tmp_path / "dg" / "round_1" / "data.zarr")
    metas = data.episodes_meta()
    assert [m["source"] for m in metas[:2]] == ["demo", "demo"]
    added = [m for m in metas if m["source"] == "correction"]
    assert added and results[1].correction_frames_in_data == data.num_frames - sum(data.episode_lengths[:2])
    # The first added episode is the first segment of the first rollout: its actions are the
    # executed (expert, safety-limited) actions of those steps.
    a, b = segments(flags, cfg.min_segment)[0]
    assert added[0]["seed"] == meta["seed"] and added[0]["start"] == a
    np.testing.assert_array_equal(data.get_episode(2)["action"], ep["action"][a:b])
    # The velocity limits held on every executed step, takeovers and handbacks included.
    from robot_policy.hardware.config import load_hardware_config

    hw = load_hardware_config("sim_tabletop")
    vmax = np.asarray(hw.velocity_limits) / hw.control_hz
    assert np.all(np.abs(np.diff(ep["action"][:, :7], axis=0)) <= vmax + 1e-5)
