"""`robot-policy launch`: XML parsing (args, conditions, params, remaps) and process supervision."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robot_policy.ros.launch_file import LaunchError, parse_cli_args, parse_launch_file

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"


def test_sim_launch_policy_only_with_checkpoint():
    desc = parse_launch_file(LAUNCH / "sim.launch.xml", {})
    assert [n.name for n in desc.nodes] == ["sim", "recorder"]
    assert desc.nodes[0].required and not desc.nodes[1].required
    desc = parse_launch_file(
        LAUNCH / "sim.launch.xml", parse_cli_args(["checkpoint:=runs/x", "record:=false"])
    )
    assert [n.name for n in desc.nodes] == ["sim", "policy"]
    policy = desc.nodes[1]
    assert policy.params["checkpoint"] == "runs/x" and policy.executable == "policy_node"
    args = policy.ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=policy"] and "checkpoint:=runs/x" in args
    # The DDS profile is applied through the environment of every node.
    assert desc.env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith(".xml")
    assert Path(desc.env["FASTDDS_DEFAULT_PROFILES_FILE"]).exists()


def test_record_and_real_launch_files_parse():
    desc = parse_launch_file(LAUNCH / "record.launch.xml", {"teleop": "keyboard"})
    assert {n.name for n in desc.nodes} == {"sim", "recorder", "teleop"}
    assert desc.nodes[-1].params["mode"] == "keyboard"
    with pytest.raises(LaunchError, match="must be one of"):
        parse_launch_file(LAUNCH / "record.launch.xml", {"teleop": "joystick"})
    with pytest.raises(LaunchError, match="'hardware' is required"):
        parse_launch_file(LAUNCH / "real.launch.xml", {})
    desc = parse_launch_file(LAUNCH / "real.launch.xml", {"hardware": "real_panda", "checkpoint": "runs/x"})
    assert [n.name for n in desc.nodes] == ["robot", "cameras", "policy", "recorder"]
    assert "fastdds_shm.xml" in desc.env["FASTDDS_DEFAULT_PROFILES_FILE"]  # production: not loopback-only


def test_substitutions_groups_remaps_and_errors(tmp_path):
    f = tmp_path / "t.launch.xml"
    f.write_text(
        """<launch>
  <arg name="ns" default="robot1"/>
  <arg name="use_b" default="false"/>
  <let name="cam" value="$(var ns)_cam"/>
  <group>
    <push-ros-namespace namespace="$(var ns)"/>
    <node pkg="robot_policy" exec="sim_node" name="a" args="--flag x">
      <param name="camera" value="$(var cam)"/>
      <param name="empty" value=""/>
      <remap from="/joint_states" to="/$(var ns)/joint_states"/>
      <env name="FOO" value="$(env HOME)"/>
    </node>
  </group>
  <node pkg="robot_policy" exec="sim_node" name="b" if="$(var use_b)"/>
  <node pkg="robot_policy" exec="sim_node" name="c" unless="$(eval '\\'$(var ns)\\' == \\'robot1\\'')"/>
</launch>"""
    )
    desc = parse_launch_file(f, {})
    assert [n.name for n in desc.nodes] == ["a"]
    a = desc.nodes[0]
    assert a.namespace == "/robot1" and a.args == ["--flag", "x"]
    assert a.params == {"camera": "robot1_cam", "empty": ""}
    assert a.remaps == [("/joint_states", "/robot1/joint_states")] and a.env["FOO"] == os.environ["HOME"]
    assert "empty:=''" in a.ros_args() and "__ns:=/robot1" in a.ros_args()
    assert [n.name for n in parse_launch_file(f, {"ns": "r2", "use_b": "true"}).nodes] == ["a", "b", "c"]
    with pytest.raises(LaunchError, match="unknown argument"):
        parse_launch_file(f, {"nss": "x"})
    with pytest.raises(LaunchError, match="name:=value"):
        parse_cli_args(["ns=x"])


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    from ros_graph import private_domain

    private_domain()
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    # A fresh DDS domain per launch: nodes of an earlier test that are still shutting down
    # must never publish into this test's graph.
    env["ROS_DOMAIN_ID"] = str(random.randint(101, 200))
    return subprocess.Popen(
        [sys.executable, "-m", "robot_policy.cli.main", "launch", *args, "--grace", "3"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float, lines: list[str]) -> str:
    import selectors

    for line in lines:
        if re.search(pattern, line):
            return line
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if re.search(pattern, line):
                return line
    raise AssertionError(f"'{pattern}' not seen in launch output:\n{''.join(lines)}")


def _pids(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(r"started \S+ \(pid (\d+)\)", line))]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


@pytest.mark.ros
@pytest.mark.slow
def test_launch_starts_stops_cleanly_and_reports_crashed_node(tmp_path):
    lines: list[str] = []
    # The policy node crashes (no such checkpoint): reported, the graph keeps running.
    proc = _start(
        [str(LAUNCH / "sim.launch.xml"), "checkpoint:=/nonexistent/ckpt", "dataset:=rec.zarr"], tmp_path
    )
    try:
        _read_until(proc, r"node 'policy' died with exit code [1-9]", 120, lines)
        _read_until(proc, r"\[recorder\].*recorder ready", 120, lines)
        pids = _pids(lines)
        assert len(pids) == 3
        assert not _gone(pids[0]) and not _gone(pids[2])  # sim and recorder still up
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines.append(out)
    text = "".join(lines)
    assert proc.returncode == 1, text  # a node failed
    assert "failed nodes: policy" in text and "[sim]" in text
    assert all(_gone(p) for p in pids), text  # no orphans


@pytest.mark.ros
def test_required_node_crash_shuts_down_the_launch(tmp_path):
    f = tmp_path / "crash.launch.xml"
    f.write_text(
        f"""<launch>
  <node pkg="robot_policy" exec="sim_node" name="sim" on_exit="shutdown">
    <param name="hardware" value="{tmp_path}/missing.yaml"/>
  </node>
  <node pkg="robot_policy" exec="teleop_node" name="teleop">
    <param name="hardware" value="sim_tabletop"/>
    <param name="mode" value="keyboard"/>
  </node>
</launch>"""
    )
    lines: list[str] = []
    proc = _start([str(f)], tmp_path)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines.append(out)
    assert proc.returncode == 1, out
    assert re.search(r"node 'sim' died with exit code 1", out) and "required node 'sim' exited" in out
    assert "missing.yaml does not exist" in out  # the node's own error reaches the prefixed log
    assert all(_gone(p) for p in _pids(lines))


@pytest.mark.ros
@pytest.mark.slow
def test_record_launch_scripted_teleop_records_episodes_end_to_end(tmp_path):
    """record.launch.xml: sim + recorder + scripted teleop (the sim expert through the forward
    command interface); the teleop node ends the launch after its episodes."""
    from robot_policy.data import EpisodeStore

    # Tolerant refusal threshold: this tests the recording pipeline end to end; refusal itself is
    # tested in test_runtime_recorder.py. On a saturated 2-core CI machine the recorder has seen
    # 15-20 frame gaps in /joint_states (known issue, see docs/ros.md).
    args = ["episodes:=1", "dataset:=teleop.zarr", "max_missing_frames:=40"]
    proc = _start([str(LAUNCH / "record.launch.xml"), *args], tmp_path)
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "scripted teleop done: 1/1 successful" in out, out
    assert (tmp_path / "teleop.zarr").exists(), out
    store = EpisodeStore.open(tmp_path / "teleop.zarr")
    assert store.num_episodes == 1 and store.episode_meta(0)["success"] is True
    ep = store.get_episode(0)
    assert len(ep["action"]) > 40 and ep["object"][-1, 2] > ep["object"][0, 2] + 0.04  # cube lifted
