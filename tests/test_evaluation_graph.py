"""An evaluation session through the ROS 2 graph: ``robot-policy evaluate session --ros`` in a
subprocess (sim_node, recorder_node and one policy_node per policy, every node a real process
over DDS; one policy a checkpoint folder, the other a remote policy server over websockets),
the scripted operator labelling from ``/sim/success``. The process is killed mid-session and the
same command resumes it: every episode is labelled exactly once, recorded in the episode store
with its labels, hidden identity and latencies, and the report is written at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_graph import private_domain, wait_until  # noqa: E402

pytestmark = pytest.mark.ros


def _tiny_checkpoint(path):
    from robot_policy.policies import POLICIES, PolicyConfig, save_policy

    keys = {"joint_pos": 7, "gripper": 1, "object": 7}
    stats = {
        k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}
        for k, d in keys.items()
    }
    stats["action"] = {"min": -np.ones(8) * 2, "max": np.ones(8) * 2, "mean": np.zeros(8), "std": np.ones(8)}
    pcfg = PolicyConfig(
        family="flow",
        obs_keys=list(keys),
        obs_shapes={k: [d] for k, d in keys.items()},
        action_dim=8,
        down_dims=[16, 32],
        step_embed_dim=16,
        obs_mlp_dims=[32],
    )
    save_policy(POLICIES.get("flow")(pcfg, stats), path)
    return path


def test_ab_session_through_the_graph_killed_and_resumed(tmp_path):
    import yaml

    from robot_policy.data import EpisodeStore
    from robot_policy.evaluation.session import load_state
    from robot_policy.inference.engine import EngineConfig, InferenceEngine
    from robot_policy.serving.server import PolicyServer, ServerConfig

    private_domain()
    local = _tiny_checkpoint(tmp_path / "local")
    served = _tiny_checkpoint(tmp_path / "served")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    eng = InferenceEngine.load(str(served), EngineConfig(device="cpu", precision="fp32", threads=1))
    srv = PolicyServer(eng, ServerConfig(port=port), name="served").start()
    # One camera (frames recorded and turned into media), to spare the two shared cores.
    from ros_graph import REPO

    hw = yaml.safe_load((REPO / "hardware" / "sim_tabletop.yaml").read_text())
    hw["cameras"] = hw["cameras"][:1]
    (tmp_path / "hw.yaml").write_text(yaml.safe_dump(hw))
    session = tmp_path / "s.json"
    cmd = [sys.executable, "-m", "robot_policy.cli.main", "evaluate", "session", "--ros"]
    cmd += ["--hardware", str(tmp_path / "hw.yaml"), "--session", str(session), "--operator", "scripted"]
    cmd += ["--episode-seconds", "2", "--report", str(tmp_path / "report")]
    first = [*cmd, "--policy", str(local), "--policy", f"ws://127.0.0.1:{port}", "--name", "local"]
    first += ["--name", "served", "--trials", "2", "--seed", "321"]
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    try:
        with open(tmp_path / "run1.log", "w") as log:
            p = subprocess.Popen(first, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                wait_until(
                    lambda: (
                        session.exists() and len(load_state(session)["episodes"]) >= 1 or p.poll() is not None
                    ),
                    180,
                    "the first labelled episode",
                    poll=0.1,
                )
            finally:
                os.killpg(p.pid, signal.SIGKILL)  # the evaluator dies; its nodes die with it
                p.wait(timeout=30)
        killed = load_state(session)
        assert killed["status"] == "running" and 1 <= len(killed["episodes"]) < 4, (
            tmp_path / "run1.log"
        ).read_text()
        # The interrupted session's report hides identities.
        from robot_policy.evaluation.report import render_markdown

        assert "local" not in render_markdown(killed) and "served" not in render_markdown(killed)
        time.sleep(1.0)
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    finally:
        srv.stop()

    state = load_state(session)
    assert state["status"] == "complete"
    keys = [(e["trial"], e["label"]) for e in state["episodes"]]
    assert sorted(keys) == [(0, "A"), (0, "B"), (1, "A"), (1, "B")]  # each exactly once
    assert [p["trial"] for p in state["preferences"]] == [0, 1]
    for e in state["episodes"]:
        plan = state["plan"][e["trial"]]
        assert plan["labels"][e["label"]] == e["policy"] and e["seed"] == 321 + e["trial"]
        assert e["success"] == e["oracle_success"] is not None  # labelled from /sim/success
        assert e["recorded"] and e["latency_ms"]["calls"] == len(e["latencies_ms"]) > 0
        assert set(e["media"]) == {"agentview"} and (tmp_path / e["media"]["agentview"]["thumb"]).is_file()
    # Every labelled episode is in the store with its labels, identity and latencies; the episode
    # the kill interrupted was never committed (nothing is duplicated).
    store = EpisodeStore.open(tmp_path / "s.zarr")
    metas = [m["evaluation"] for m in store.episodes_meta() if "evaluation" in m]
    assert sorted((m["trial"], m["label"]) for m in metas if not m["aborted"]) == sorted(keys)
    by_key = {(e["trial"], e["label"]): e for e in state["episodes"]}
    for i, m in enumerate(store.episodes_meta()):
        ev = m["evaluation"]
        e = by_key[(ev["trial"], ev["label"])]
        assert e["dataset_episode"] == i and ev["policy"] == e["policy"] and ev["success"] == m["success"]
        assert ev["latencies_ms"] == e["latencies_ms"] and ev["session"] == state["id"]
        ep = store.get_episode(i, ["agentview_rgb", "joint_pos", "action"])
        assert len(ep["action"]) > 10 and ep["agentview_rgb"].shape[1:] == (84, 84, 3)
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    assert summary["complete"] and set(summary["policies"]) == {"local", "served"}
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("class='thumb'") == 4 and "served" in html


def test_service_operator_labels_from_ros_services():
    """An operator's UI drives the session through /evaluate/* services and the note parameter."""
    import threading

    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    from robot_policy.ros.client import GraphClient
    from robot_policy.ros.evaluate import ServiceOperator

    private_domain()
    with GraphClient("evaluator") as ev, GraphClient("ui") as ui:
        op = ServiceOperator(ev, say=lambda s: None)
        out = {}

        def session():
            op.ready(0, "A", 5)
            while not op.end_requested():
                time.sleep(0.02)
            out["a"] = op.label(0, "A", 5, {})
            op.ready(0, "B", 5)
            while not op.end_requested():
                time.sleep(0.02)
            out["b"] = op.label(0, "B", 5, {})
            out["pref"] = op.prefer(0, {}, {})

        th = threading.Thread(target=session, daemon=True)
        th.start()
        # A label before the episode started is refused, naming what the session waits for.
        wait_until(lambda: "reset the scene" in op.prompt, 20, "the start prompt")
        r = ui.call("/evaluate/success")
        assert not r.success and "start" in r.message
        assert ui.call("/evaluate/start").success
        wait_until(lambda: "running" in op.prompt, 20, "the running prompt")
        params = [
            Parameter("partial", value=60).to_parameter_msg(),
            Parameter("note", value="slow").to_parameter_msg(),
        ]
        assert ui.call("/evaluator/set_parameters", SetParameters, parameters=params).results[0].successful
        assert ui.call("/evaluate/failure").success  # ends the running episode with its label
        wait_until(lambda: "policy B" in op.prompt, 20, "the second start prompt")
        assert ui.call("/evaluate/start").success
        wait_until(lambda: "running" in op.prompt, 20, "B running")
        assert ui.call("/evaluate/end").success
        wait_until(lambda: "done" in op.prompt, 20, "the label prompt")
        assert ui.call("/evaluate/success").success
        wait_until(lambda: "better" in op.prompt, 20, "the preference prompt")
        assert ui.call("/evaluate/prefer_b").success
        th.join(timeout=20)
    a, b, pref = out["a"], out["b"], out["pref"]
    assert (a.success, a.partial, a.note, a.aborted) == (False, 60.0, "slow", False)
    assert (b.success, b.partial, b.note) == (True, 100.0, "")  # partial/note were cleared
    assert pref.choice == "B"
