"""The ros2_control backend: an arm that already runs a ros2_control stack.

The stack is ``sim_node`` in its own process, its topics moved under ``/arm`` by remapping (what a
real deployment does with a namespace): it publishes ``/arm/joint_states`` and executes
``/arm/joint_trajectory_controller/joint_trajectory`` and ``/arm/forward_position_controller/commands``
like ros2_control's controllers. ``robot_node`` with ``arm: ros2_control`` drives it and serves
the usual topics itself; a client here commands ``robot_node`` only. The first tests use a
transport stub (no ROS) for what needs no graph.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

from robot_policy.config import ConfigError
from robot_policy.hardware.config import resolve_hardware_path
from robot_policy.robots import ArmController, ArmError, make_arm
from robot_policy.robots.ros2_control import JointTransport
from robot_policy.types import JointState

WAIT = 30.0


def _hw_dict(**arm_config) -> dict:
    hw = yaml.safe_load(resolve_hardware_path("sim_tabletop").read_text())
    hw.update(name="arm_via_ros2_control", arm="ros2_control", cameras=[])
    hw["arm_config"] = {"joint_states_topic": "/arm/joint_states", **arm_config}
    # Tighter than the stack's own limit: robot_node's safety layer clamps before the stack sees it.
    hw["position_upper"][0] = 0.5
    return hw


def _hw(**arm_config):
    from robot_policy.config import from_dict
    from robot_policy.hardware.config import HardwareConfig

    return from_dict(HardwareConfig, _hw_dict(**arm_config))


class StubTransport(JointTransport):
    """Serves a fixed joint state and records what is sent (no ROS)."""

    def __init__(self, names_in_state=None):
        self.sent: list[tuple[np.ndarray, float]] = []
        self.q = None
        self.fresh = True
        self.names_in_state = names_in_state

    def open(self, config, state_names, command_names):
        self.state_names, self.command_names = state_names, command_names
        self.q = np.linspace(-0.1, 0.1, len(state_names))
        self.q[3] = -2.0  # inside panda joint 4's range

    def latest(self):
        if self.q is None or self.names_in_state is not None:
            return None
        stamp = time.monotonic() - (0.0 if self.fresh else 5.0)
        return JointState(self.q.copy(), stamp, np.zeros_like(self.q), tuple(self.state_names))

    def problem(self):
        return "joint_states lacks joints ['panda_joint7']" if self.names_in_state is not None else ""

    def send(self, positions, horizon):
        self.sent.append((np.asarray(positions).copy(), horizon))

    def close(self):
        pass


def test_config_is_checked_and_a_missing_transport_is_named():
    with pytest.raises(ConfigError, match="interface must be one of"):
        make_arm(_hw(interface="effort"))
    with pytest.raises(ConfigError, match=r"command_joints must list.*missing \['panda_joint7'\]"):
        make_arm(_hw(command_joints=[f"panda_joint{i}" for i in range(1, 7)]))
    arm = make_arm(_hw(interface="forward_position"))
    assert arm.config.command_topic == "/forward_position_controller/commands"
    with pytest.raises(ArmError, match="run it in robot_node"):
        arm.connect()


def test_commands_go_out_in_the_controllers_joint_order_with_the_gripper():
    names = [f"panda_joint{i}" for i in range(1, 8)]
    order = ["panda_finger_joint1", *reversed(names)]
    t = StubTransport()
    arm = make_arm(_hw(command_joints=order), transport=t)
    with ArmController(arm) as ctl:
        ctl.wait_for_state(WAIT)
        target = ctl.current_command()
        target[0] = 0.2
        target[-1] = 1.0  # close the gripper
        assert ctl.submit_target(target)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not (t.sent and t.sent[-1][0][-1] == pytest.approx(0.2)):
            time.sleep(0.01)
        last, horizon = t.sent[-1]  # (on close, stop() sends a hold: the stub does not move)
    assert last[0] == 1.0 and last[-1] == pytest.approx(0.2)  # gripper first, joint 1 last
    assert horizon == pytest.approx(1 / 50)  # one period ahead at the native 50 Hz


def test_stale_or_incomplete_joint_states_are_faults_naming_the_topic():
    arm = make_arm(_hw(connect_timeout_s=0.2), transport=StubTransport(names_in_state=["x"]))
    with pytest.raises(ArmError, match=r"no joint state on /arm/joint_states.*lacks joints"):
        arm.connect()
    t = StubTransport()
    arm = make_arm(_hw(state_timeout_s=0.5), transport=t)
    with ArmController(arm) as ctl:
        ctl.wait_for_state(WAIT)
        t.fresh = False  # the stack stopped publishing
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not ctl.status()["fault"]:
            time.sleep(0.01)
        assert "stopped" in ctl.status()["fault"] and "/arm/joint_states" in ctl.status()["fault"]


# -- against sim_node playing the ros2_control side, over DDS ----------------------------------
STACK = """  <node pkg="robot_policy" exec="sim_node" name="arm_stack">
    <param name="hardware" value="sim_tabletop"/>
{remaps}
  </node>
  <node pkg="robot_policy" exec="{exe}" name="robot">
    <param name="hardware" value="{hw}"/>
  </node>"""
STACK_TOPICS = [
    "/joint_states",
    "/joint_commands",
    "/joint_trajectory_controller/joint_trajectory",
    "/forward_position_controller/commands",
    "/estop",
    "/estop_reset",
    "/sim/reset",
    "/sim/success",
    "/sim/observation",
]


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize(
    "interface, exe", [("joint_trajectory", "robot_node"), ("forward_position", "sim_node")]
)
def test_robot_node_drives_a_ros2_control_stack(tmp_path, interface, exe):
    """``exe=sim_node``: given a hardware config whose ``arm:`` is not ``sim``, the sim_node alias
    runs that backend through the registry (no silent simulation)."""
    pytest.importorskip("rclpy")
    from ros_graph import private_domain, wait_until
    from sensor_msgs.msg import JointState as JointStateMsg
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from robot_policy.ros.client import GraphClient
    from robot_policy.ros.convert import to_duration
    from robot_policy.ros.launch_file import parse_launch_file
    from robot_policy.ros.launcher import Launcher

    private_domain()
    cmd_topic = f"/arm{'/joint_trajectory_controller/joint_trajectory' if interface == 'joint_trajectory' else '/forward_position_controller/commands'}"
    # state_timeout_s: the simulated stack renders two cameras on shared cores and can stall for
    # half a second while it starts (a real stack publishes at 100+ Hz and keeps the 0.5 s default).
    hw = _hw_dict(interface=interface, command_topic=cmd_topic, state_timeout_s=3.0)
    (tmp_path / "hw.yaml").write_text(yaml.safe_dump(hw))
    remaps = "\n".join(f'    <remap from="{t}" to="/arm{t}"/>' for t in STACK_TOPICS)
    launch = tmp_path / "t.launch.xml"
    launch.write_text(
        f"<launch>\n{STACK.format(remaps=remaps, exe=exe, hw=tmp_path / 'hw.yaml')}\n</launch>\n"
    )
    log = open(tmp_path / "graph.log", "w")
    launcher = Launcher(parse_launch_file(launch, {}), grace=3.0, color=False, out=log)
    launcher.start()
    c = GraphClient("test_ros2_control")
    try:
        from diagnostic_msgs.msg import DiagnosticArray

        c.subscribe("/joint_states", JointStateMsg, keep=50)
        c.subscribe("/arm/joint_states", JointStateMsg, keep=50)
        c.subscribe("/arm/joint_commands", JointStateMsg, keep=2000)
        c.subscribe("/diagnostics", DiagnosticArray, keep=50, sensor=False)
        try:
            js = c.latest("/joint_states", timeout=90)
        except TimeoutError:
            log.flush()
            raise AssertionError((tmp_path / "graph.log").read_text()) from None
        names = list(js.name)
        arm = wait_until(lambda: c.diagnostics("robot: arm"), 15, "the robot's arm diagnostics")
        assert arm["backend"] == "ros2_control" and arm["connected"] == "True"
        assert arm["mode"] == f"{interface} -> {cmd_topic}" and arm["protective_stop"] == "False"
        wait_until(lambda: c.diagnostics("robot: arm")["fault"] == "", 15, "the arm without a fault")

        def q(topic="/joint_states"):
            return np.asarray(c.latest(topic).position)

        q0 = q()
        target = q0.copy()
        target[0] = 0.3
        target[3] -= 0.2
        msg = JointTrajectory(joint_names=names)
        for i, p in enumerate([(q0 + target) / 2, target]):
            msg.points.append(
                JointTrajectoryPoint(positions=p.tolist(), time_from_start=to_duration(0.6 * (i + 1)))
            )
        c.publish("/joint_trajectory_controller/joint_trajectory", msg)
        try:
            wait_until(
                lambda: bool(np.abs(q("/arm/joint_states")[:7] - target[:7]).max() < 0.03),
                WAIT,
                "the stack's arm at the target",
            )
        except AssertionError as e:
            log.flush()
            raise AssertionError(
                f"{e}\ntarget {target[:7].round(3)}\nstack at {q('/arm/joint_states')[:7].round(3)}"
                f"\nrobot_node reports {q()[:7].round(3)}\nsafety {c.diagnostics('robot: safety')}"
                f"\narm {c.diagnostics('robot: arm')}\ngraph log:\n{(tmp_path / 'graph.log').read_text()[-3000:]}"
            ) from None
        wait_until(lambda: bool(np.abs(q()[:7] - target[:7]).max() < 0.03), WAIT, "robot_node reporting it")
        assert abs(q()[0] - q0[0]) > 0.2  # it moved (joint 1 starts near 0)

        # NaN refused by robot_node; over its (tighter) limit clamped before the stack sees it.
        before = int(c.diagnostics("robot: safety")["rejected"])
        bad = target.copy()
        bad[2] = np.nan
        c.publish("/forward_position_controller/commands", Float64MultiArray(data=bad.tolist()))
        wait_until(lambda: int(c.diagnostics("robot: safety")["rejected"]) > before, 15, "the rejection")
        over = target.copy()
        over[0] = 1.5
        for _ in range(40):  # a stream, as a teleop sends: the watchdog stays quiet
            c.publish("/forward_position_controller/commands", Float64MultiArray(data=over.tolist()))
            time.sleep(0.05)
        wait_until(lambda: bool(q("/arm/joint_states")[0] > 0.45), WAIT, "joint 1 at robot_node's limit")
        time.sleep(0.5)
        assert q("/arm/joint_states")[0] < 0.5 + 0.02
        stack_cmds = np.array([m.position for m in c.messages("/arm/joint_commands")])
        assert np.isfinite(stack_cmds).all() and stack_cmds[:, 0].max() <= 0.5 + 1e-6

        # E-stop on robot_node: the stack holds the arm where it is.
        assert c.call("/estop").success
        time.sleep(0.3)
        held = q("/arm/joint_states")
        away = held.copy()
        away[0] = -0.3
        for _ in range(10):
            c.publish("/forward_position_controller/commands", Float64MultiArray(data=away.tolist()))
            time.sleep(0.05)
        time.sleep(0.5)
        assert abs(q("/arm/joint_states")[0] - held[0]) < 0.02
        assert c.call("/estop_reset").success

        # The stack goes away: a fault naming its topic, robot_node stays up.
        stack = next(p for p in launcher.procs if p.spec.name == "arm_stack")
        stack.popen.terminate()
        fault = wait_until(
            lambda: (c.diagnostics("robot: arm", since=c.now() - 1.5) or {}).get("fault") or None,
            WAIT,
            "the fault",
        )
        assert "/arm/joint_states" in fault
        assert next(p for p in launcher.procs if p.spec.name == "robot").popen.poll() is None
    finally:
        c.close()
        launcher.shutdown()
        log.close()
