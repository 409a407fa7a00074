"""policy_node with ``server:=ws://...``: the sim graph (sim_node, policy_node in their own
processes over DDS) driven by a policy served from this process; the node waits for the
server at start, reports the network round trip as its own latency stage, stops publishing
while the server is away (the robot's watchdog holds the arm) and resumes when it is back."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("websockets")
pytest.importorskip("msgpack")

from ros_graph import Graph, diagnostics, private_domain, wait_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _policy_around(q: np.ndarray, gripper: np.ndarray):
    """A random-init tiny flow policy on the sim robot's joint inputs whose actions stay within
    ±0.02 rad of the current pose: the arm moves a little, and nothing hits a limit."""
    import torch

    from robot_policy.config import from_dict
    from robot_policy.policies import POLICIES, PolicyConfig

    target = np.concatenate([q, gripper]).astype(np.float64)
    cfg = {
        "family": "flow",
        "obs_keys": ["joint_pos", "gripper"],
        "obs_shapes": {"joint_pos": [7], "gripper": [1]},
        "action_dim": 8,
        "fps": 20.0,
        "horizon": 16,
        "n_obs_steps": 2,
        "n_action_steps": 8,
        "down_dims": [16, 32],
        "obs_mlp_dims": [32],
        "step_embed_dim": 16,
    }

    def stats(lo, hi):
        return {"min": lo, "max": hi, "mean": (lo + hi) / 2, "std": np.ones_like(lo)}

    torch.manual_seed(0)
    return POLICIES.get("flow")(
        from_dict(PolicyConfig, cfg),
        {
            "joint_pos": stats(q - 1.0, q + 1.0),
            "gripper": stats(gripper - 1.0, gripper + 1.0),
            "action": stats(target - 0.02, target + 0.02),
        },
    )


def test_policy_node_uses_a_remote_policy_and_holds_while_the_server_is_away(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from robot_policy import conventions as conv
    from robot_policy.inference.engine import EngineConfig, InferenceEngine
    from robot_policy.serving.server import PolicyServer, ServerConfig

    private_domain()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    g = Graph("sim.launch.xml", {"server": url, "record": "false"}, tmp_path / "graph.log")
    srv = None
    try:
        c = g.client
        c.subscribe(conv.JOINT_STATES, JointState, keep=5)
        c.subscribe(conv.TRAJECTORY, JointTrajectory, keep=5, sensor=False)
        c.subscribe(conv.DIAGNOSTICS, DiagnosticArray, keep=20, sensor=False)
        js = c.latest(conv.JOINT_STATES, timeout=60)
        q = np.asarray(js.position, np.float64)
        # The policy node is up and waiting for its server; serve a policy around the current pose.
        eng = InferenceEngine(
            _policy_around(q[:7], q[7:8]), EngineConfig(device="cpu", precision="fp32", threads=1)
        )
        srv = PolicyServer(eng, ServerConfig(port=port), name="tiny").start()
        wait_until(lambda: c.count(conv.TRAJECTORY) >= 3, 90, "trajectories from the remote policy")
        diag = diagnostics(c, "policy: inference", timeout=20, since=c.now())
        assert diag["server"] == url and diag["server_connected"] == "true"
        for stage in ("network", "server_infer"):
            assert float(diag[f"{stage}_ms_p50"]) >= 0, diag
        assert float(diag["inference_ms_p50"]) >= float(diag["server_infer_ms_p50"])

        srv.stop()  # the server goes away
        srv = None
        wait_until(
            lambda: diagnostics(c, "policy: inference", timeout=10)["server_connected"] == "false",
            30,
            "the node to notice the server is gone",
        )
        held_from = c.count(conv.TRAJECTORY)
        t0 = c.now()
        wait_until(lambda: c.now() - t0 > 1.5, 10, "1.5 s without a server")
        assert c.count(conv.TRAJECTORY) == held_from  # nothing published: the watchdog holds the arm
        assert all(g.alive().values()), g.log()[-3000:]

        srv = PolicyServer(eng, ServerConfig(port=port), name="tiny").start()  # back
        wait_until(lambda: c.count(conv.TRAJECTORY) > held_from + 2, 60, "publishing to resume")
        diag = diagnostics(c, "policy: inference", timeout=20, since=c.now())
        assert diag["server_connected"] == "true" and int(diag["server_reconnects"]) >= 1
    except Exception:
        print(g.log()[-5000:])
        raise
    finally:
        g.close()
        if srv is not None:
            srv.stop()
