"""``launch/real.launch.xml`` against franky-sim: the real-robot graph with the franka backend.

robot_node (arm: franka, which starts franky-sim on a free loopback address), camera_node (no
driver cameras in this setup: it says so and exits 0) and recorder_node run as separate processes
over DDS; a client here sends a JointTrajectory and records an episode. Nothing in this graph
publishes /sim/* topics, and nothing waits for them. franky-sim may run well below real time on a
loaded machine, so the test waits for outcomes and asserts no durations.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("franky", reason="needs robot_policy[franka] (franky-control)")
pytest.importorskip("franky_sim", reason="needs robot_policy[franka] (franky-sim)")

from ros_graph import Graph, private_domain, wait_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WAIT = 120.0


def test_real_launch_moves_the_franky_sim_arm_and_records(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_srvs.srv import SetBool
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from robot_policy.data import EpisodeStore
    from robot_policy.hardware.config import resolve_hardware_path
    from robot_policy.robots.franka import free_loopback_address
    from robot_policy.ros.convert import to_duration

    private_domain()
    hw = yaml.safe_load(resolve_hardware_path("fr3_sim").read_text())
    hw["arm_config"]["hostname"] = free_loopback_address()  # parallel runs never share a server
    hw["watchdog_timeout"] = 60.0  # hold the last point however slowly franky-sim runs
    (tmp_path / "fr3_sim.yaml").write_text(yaml.safe_dump(hw))
    dataset = tmp_path / "rec.zarr"
    g = Graph(
        "real.launch.xml",
        {"hardware": str(tmp_path / "fr3_sim.yaml"), "dataset": str(dataset)},
        tmp_path / "graph.log",
    )
    c = g.client
    try:
        assert sorted(p.spec.name for p in g.launcher.procs) == ["cameras", "recorder", "robot"]
        c.subscribe("/joint_states", JointState, keep=400)
        c.subscribe("/joint_commands", JointState, keep=5)
        c.subscribe("/diagnostics", DiagnosticArray, keep=50, sensor=False)
        try:
            c.latest("/joint_states", timeout=WAIT)
            c.call("/recorder/discard", timeout=60)
        except TimeoutError:
            raise AssertionError(g.log()) from None
        js = c.latest("/joint_states")
        assert list(js.name) == hw["joint_names"] + [hw["gripper_joint"]]
        arm = wait_until(lambda: c.diagnostics("robot: arm"), 20, "the arm's diagnostics")
        assert arm["backend"] == "franka" and arm["connected"] == "True" and arm["faults"] == ""
        loop = wait_until(lambda: c.diagnostics("robot: control loop"), 20, "loop diagnostics")
        assert float(loop["loop_hz_target"]) == 50.0  # franky's targets at the arm's rate...
        n0 = c.count("/joint_states")
        wait_until(lambda: c.count("/joint_states") >= n0 + 20, WAIT, "20 joint states")
        stamps = [
            m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in c.messages("/joint_states")[-20:]
        ]
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        assert 10.0 < rate < 30.0  # ...and /joint_states at the setup's control_hz (20)
        assert not any(t.startswith("/sim/") for t, _ in c.node.get_topic_names_and_types())

        assert c.call("/recorder/start").success
        q0 = np.asarray(c.latest("/joint_states").position)
        target = q0.copy()
        target[0] += 0.2
        target[3] -= 0.15
        msg = JointTrajectory(joint_names=list(js.name))
        for i, p in enumerate([(q0 + target) / 2, target]):
            msg.points.append(
                JointTrajectoryPoint(positions=p.tolist(), time_from_start=to_duration(1.0 * (i + 1)))
            )
        c.publish("/joint_trajectory_controller/joint_trajectory", msg)

        def q():
            return np.asarray(c.latest("/joint_states").position)

        wait_until(lambda: bool(np.abs(q()[:7] - target[:7]).max() < 0.01), WAIT, "the FR3 at the target")
        moved = np.array([m.position[0] for m in c.messages("/joint_states")])
        moved = moved[moved > q0[0] + 0.005]
        assert np.all(np.diff(moved) > -1e-3)  # monotone progress toward the target
        c.call("/recorder/mark_success", SetBool, data=True)
        r = c.call("/recorder/stop", timeout=60)
        assert r.success, r.message + g.log()[-3000:]
        ep = EpisodeStore.open(dataset).get_episode(0)
        assert set(ep) >= {"joint_pos", "joint_vel", "gripper", "action"} and "object" not in ep
        assert ep["joint_pos"][-1, 0] > ep["joint_pos"][0, 0] + 0.1
        assert np.all(np.isfinite(ep["action"])) and ep["action"].shape[1] == 8
        assert g.alive()["robot"] and g.alive()["recorder"]
    finally:
        g.close()
