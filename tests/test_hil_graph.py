"""HIL-SERL's actor on the ROS 2 graph, every robot-side node a real process over DDS: the
simulated robot (sim_node) and the intervention arbiter (arbiter_node) from
``launch/sim.launch.xml arbiter:=true``; in this process the :class:`GraphEnv`, the RPC actor's
transition source and the simulated human, driving a policy that strays (it only pulls the arm
up, away from the cube), so the human takes over through the arbiter, again and again.

Judged by what the robot executed (``/joint_commands`` and the arbiter's source tags), never by
timing: the waits are bounded by generous timeouts, they are not assertions.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_graph import REPO, Graph, private_domain  # noqa: E402

pytestmark = pytest.mark.ros

UP = np.array([0.0, 0.0, 0.6, 0.0, -1.0], np.float32)
"""The straying policy: 1.8 cm up per step, gripper open."""


class StrayingPolicy:
    def act(self, obs):
        return UP.copy()

    def load_weights(self, weights):
        pass


@pytest.fixture
def graph(tmp_path):
    import yaml

    private_domain()
    # The default robot without cameras: state observations, and two cores are shared.
    hw = yaml.safe_load((REPO / "hardware" / "sim_tabletop.yaml").read_text())
    hw["cameras"] = []
    (tmp_path / "hw.yaml").write_text(yaml.safe_dump(hw))
    g = Graph(
        "sim.launch.xml",
        {"hardware": str(tmp_path / "hw.yaml"), "arbiter": "true", "record": "false"},
        tmp_path / "graph.log",
    )
    try:
        yield g, tmp_path / "hw.yaml"
    finally:
        g.close()


def test_the_human_takes_over_through_the_arbiter_and_transitions_record_what_the_arm_did(graph):
    from robot_policy.hil.rl.human import HumanConfig, SimulatedHuman
    from robot_policy.hil.rpc.setup import SimSource, reward_function
    from robot_policy.hil_graph import GraphEnv, GraphEnvConfig

    g, hw = graph
    env = GraphEnv(GraphEnvConfig(hardware=str(hw), max_steps=70), client=g.client)
    human = SimulatedHuman(HumanConfig(patience=5, hold_steps=15))
    source = SimSource(env, human, "env", reward_function("env"), seed=7)
    # Per step: whether the human decided to drive, the expert's wish, and what the tick said.
    decided, wished, infos, tcp = [], [], [], []
    env_step = env.step

    def step(action):
        decided.append(env._expert_live)
        wished.append(np.asarray(action, np.float32))
        out = env_step(action)
        infos.append(out[2])
        tcp.append(env.tcp()[0])
        return out

    env.step = step
    transitions, episode = [], None
    try:
        while episode is None:
            out, episode = source.step(StrayingPolicy())
            transitions += out
    except Exception:
        print(g.log())
        raise
    finally:
        env.close()
    n = len(transitions)
    assert n == episode["steps"] == len(infos) and n == 70, (n, episode)
    assert env.seed == 7
    flags = np.array([bool(t["intervened"]) for t in transitions])
    starts = np.array([bool(t["intervention_start"]) for t in transitions])
    actions = np.stack([t["action"] for t in transitions])
    sources = [i["source"] for i in infos]
    decided = np.array(decided)

    # Every executed command carried an arbiter tag; the flags are the tags' word.
    assert all(s in ("policy", "human", "handback", "hold") for s in sources), sources
    np.testing.assert_array_equal(flags, [s == "human" for s in sources])
    # The human took over more than once, and the policy had the arm in between.
    assert starts.sum() >= 2 and episode["interventions"] >= 2, (starts.astype(int), episode)
    assert 0 < flags.sum() < n, flags.astype(int)
    # The steps the human drove are the steps the arbiter says the human commanded: each step
    # the human decided to drive executed the human's command, at most one step late (the flag
    # and the command reach the arbiter after the tick); and a policy step never did, except the
    # tick right after a release, when the human's last target is still the command in force.
    late = decided & ~flags
    assert late.sum() <= starts.sum(), (decided.astype(int), flags.astype(int))
    after_release = np.concatenate([[False], decided[:-1] & ~decided[1:]])
    assert not (flags & ~decided & ~after_release).any(), (decided.astype(int), flags.astype(int))

    # What the transitions hold is what the arm did: under the human, the executed action is the
    # expert's wish (the expert moves slower than the safety limits, so its targets pass
    # unchanged); under the policy, the arm went up as the policy asked.
    human_steps = np.flatnonzero(flags & decided)
    assert len(human_steps) >= 5
    err = np.abs(actions[human_steps, :4] - np.stack(wished)[human_steps, :4]).max(axis=1)
    assert np.median(err) < 0.05, err
    policy_steps = np.flatnonzero(np.array([s == "policy" for s in sources]))
    assert len(policy_steps) >= 3
    assert np.median(actions[policy_steps, 2]) > 0.3, actions[policy_steps]
    # The arm actually moved: up while the policy drove, toward the cube while the human did.
    tcp = np.stack(tcp)
    assert np.ptp(tcp[:, 2]) > 0.05, tcp[:, 2]
    dist = np.array([np.linalg.norm(t["next_obs/state"][6:9]) for t in transitions])
    assert dist[flags].min() < dist[0] - 0.03, (dist[0], dist[flags].min())


def test_the_expert_through_the_arbiter_lifts_the_cube_and_the_episode_ends_in_success(graph):
    """A human that never hands back: the expert's commands alone, through the arbiter, pick the
    cube; the env reports the sim's success and the episode ends there, before its time limit."""
    from robot_policy.hil.rl.human import HumanConfig, SimulatedHuman
    from robot_policy.hil.rpc.setup import SimSource, reward_function
    from robot_policy.hil_graph import GraphEnv, GraphEnvConfig

    g, hw = graph
    env = GraphEnv(GraphEnvConfig(hardware=str(hw), max_steps=150), client=g.client)
    source = SimSource(
        env, SimulatedHuman(HumanConfig(patience=1, hold_steps=1000)), "env", reward_function("env"), seed=3
    )
    transitions, episode = [], None
    try:
        while episode is None:
            out, episode = source.step(StrayingPolicy())
            transitions += out
    except Exception:
        print(g.log())
        raise
    finally:
        env.close()
    assert episode["success"] and episode["steps"] < 150, episode
    assert transitions[-1]["reward"] == 1.0 and transitions[-1]["done"] == 1.0
    assert sum(float(t["reward"]) for t in transitions) == 1.0
    flags = np.array([bool(t["intervened"]) for t in transitions])
    assert flags[2:].all(), flags.astype(int)  # the human had the arm from the first stalled step on
    assert g.client.call("/sim/success").success


def test_learner_and_graph_actor_over_grpc(graph):
    """``robot-policy hil learner`` and ``robot-policy hil actor --env graph`` as processes: the
    actor runs the SAC policy on the graph with the human through the arbiter; the learner gets
    every transition (interventions into its offline buffer too), trains and sends weights back."""
    import json
    import os
    import subprocess
    import sys
    import time

    from robot_policy.hil.rpc.client import LearnerClient
    from robot_policy.hil.rpc.config import ClientConfig

    g, hw = graph
    tmp = hw.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    task = ["--max-steps", "60", "--threads", "1"]
    tiny = ["--hidden", "32,32", "--batch-size", "32", "--min-online", "32", "--demos", "1"]
    tiny += ["--publish-every", "5", "--max-updates-per-transition", "1", "--status-every", "2"]

    def start(args, name):
        log = open(tmp / f"{name}.log", "w")
        cmd = [sys.executable, "-m", "robot_policy.cli.main", "hil", *args]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO), log

    port_file = tmp / "learner.port"
    learner, llog = start(
        ["learner", "--address", "127.0.0.1:0", "--port-file", str(port_file), *task, *tiny], "learner"
    )
    procs = [(learner, llog)]
    try:
        deadline = time.monotonic() + 90
        while not port_file.exists():
            assert learner.poll() is None and time.monotonic() < deadline, (tmp / "learner.log").read_text()
            time.sleep(0.2)
        port = int(port_file.read_text())
        actor_args = [
            "actor",
            "--env",
            "graph",
            "--graph-hardware",
            str(hw),
            "--address",
            f"127.0.0.1:{port}",
        ]
        actor_args += [
            "--actor-id",
            "graph1",
            "--steps",
            "240",
            "--push-every",
            "20",
            "--pull-every-s",
            "0.2",
        ]
        actor, alog = start([*actor_args, *task, "--summary", str(tmp / "actor.json")], "actor")
        procs.append((actor, alog))
        try:
            assert actor.wait(timeout=120) == 0, (tmp / "actor.log").read_text()
        except subprocess.TimeoutExpired:
            raise AssertionError((tmp / "actor.log").read_text()) from None
        summary = json.loads((tmp / "actor.json").read_text())
        c = LearnerClient(ClientConfig(address=f"127.0.0.1:{port}", deadline_s=5.0, actor_id="probe"))
        try:
            status = c.status()
        finally:
            c.close()
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            log.close()
    log = (tmp / "actor.log").read_text()
    assert summary["steps"] == 240 and summary["sent_transitions"] == 240, (summary, log)
    assert summary["unsent_batches"] == 0 and summary["dropped_transitions"] == 0
    assert summary["weights_loaded"], log  # weights came back from the learner during the run
    eps = summary["episodes"]
    assert len(eps) >= 3 and sum(e["intervention_steps"] for e in eps) > 0, eps
    assert status["actors"]["graph1"]["transitions"] == 240, status
    assert status["step"] > 0, status
    # The human's steps went to the offline buffer as well (on top of the one demonstration).
    demo = 60
    assert status["buffers"]["offline"] > demo, status["buffers"]
