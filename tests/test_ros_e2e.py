"""End to end: `robot-policy demo` with tiny budgets. Scripted demos -> a tiny trained policy ->
sim graph (sim_node, policy_node, recorder_node in separate processes over DDS) -> one recorded
evaluation episode through JointTrajectory chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rclpy")

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_runs_one_episode_through_the_graph(tmp_path, capsys):
    from ros_graph import private_domain

    private_domain()
    from robot_policy.cli.main import main
    from robot_policy.data import EpisodeStore
    from robot_policy.hardware.config import load_hardware_config

    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--demos",
            "4",
            "--train-steps",
            "20",
            "--batch-size",
            "16",
            "--episodes",
            "1",
            "--episode-seconds",
            "4",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "success rate: " in printed and "evaluated ros" in printed and "report.md" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["episodes"] == 1 and report["eval"]["mode"] == "ros"
    diag = report["eval"]["policy_diagnostics"]
    assert int(diag["inferences"]) > 0 and int(diag["chunks_published"]) > 0 and int(diag["errors"]) == 0
    assert float(diag["inference_ms_p50"]) > 0
    # Every published chunk was traced from the camera to the arm (the robot reported it back),
    # its stage stamps in order, each stage measured.
    published = int(diag["chunks_published"])
    assert int(diag["traced_chunks"]) + int(diag["pending_chunks"]) == published
    # A chunk superseded by the next before the robot's next tick is never executed and counted
    # as untraced: on a loaded machine two chunks can land within one 50 ms tick.
    assert int(diag["traced_chunks"]) >= published - 2 and int(diag["untraced_chunks"]) <= 2
    assert int(diag["nonmonotone_chunks"]) == 0, diag["last_nonmonotone"]
    from robot_policy.inference.trace import STAGES

    for stage in STAGES:
        assert float(diag[f"stage_ms/{stage}_p50"]) >= 0.0
    assert (out / "eval.png").stat().st_size > 0

    # The evaluation episode was recorded, and the policy's chunks reached the simulated arm.
    store = EpisodeStore.open(out / "eval.zarr")
    assert store.num_episodes == 1
    ep = store.get_episode(0)
    assert len(ep["action"]) >= 20  # ~4 s at 20 Hz, minus start-up frames
    hw = load_hardware_config("sim_tabletop")
    act = ep["action"]
    assert np.all(np.isfinite(act))
    assert np.all(act[:, :7] >= np.array(hw.position_lower) - 1e-6)
    assert np.all(act[:, :7] <= np.array(hw.position_upper) + 1e-6)
    assert np.ptp(act[:, :7], axis=0).max() > 0.01  # commands changed: not a held position
    assert np.ptp(ep["joint_pos"], axis=0).max() > 0.01  # and the arm moved
    assert store.episode_meta(0)["success"] in (True, False)
