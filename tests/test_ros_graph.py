"""The sim graph over DDS: sim_node + recorder_node in their own processes, a client here.

One graph (launch/sim.launch.xml without a policy) is shared by the module; every test starts
from a scene reset.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_graph import Graph, diagnostics, private_domain, wait_until  # noqa: E402

pytestmark = pytest.mark.ros

HZ = 20.0


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_graph import REPO
    from sensor_msgs.msg import CameraInfo, Image, JointState

    private_domain()
    tmp = tmp_path_factory.mktemp("graph")
    # The default robot with depth enabled on the wrist camera (realsense-style depth topic).
    hw = yaml.safe_load((REPO / "hardware" / "sim_tabletop.yaml").read_text())
    for cam in hw["cameras"]:
        cam["depth"] = cam["name"] == "wrist"
    (tmp / "hw.yaml").write_text(yaml.safe_dump(hw))
    g = Graph(
        "sim.launch.xml",
        {"dataset": str(tmp / "rec.zarr"), "hardware": str(tmp / "hw.yaml")},
        tmp / "graph.log",
    )
    c = g.client
    c.subscribe("/joint_states", JointState, keep=200)
    c.subscribe("/joint_commands", JointState, keep=400)
    c.subscribe("/agentview/color/image_raw", Image, keep=50)
    c.subscribe("/agentview/color/camera_info", CameraInfo, keep=5)
    c.subscribe("/wrist/color/image_raw", Image, keep=5)
    c.subscribe("/wrist/depth/image_rect_raw", Image, keep=5)
    c.subscribe("/diagnostics", DiagnosticArray, keep=20, sensor=False)
    try:
        c.latest("/joint_states", timeout=60)
        c.call("/recorder/discard", timeout=30)  # waits until the recorder is up
    except TimeoutError:
        print(g.log())
        g.close()
        raise
    g.dataset = tmp / "rec.zarr"
    yield g
    g.close()


@pytest.fixture
def c(graph):
    graph.client.call("/estop_reset")
    graph.client.call("/sim/reset")
    return graph.client


def _q(c, after=None):
    msg = c.latest("/joint_states", after=after)
    return np.asarray(msg.position)


def _traj(names, points, dt):
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from robot_policy.ros.convert import to_duration

    msg = JointTrajectory(joint_names=list(names))
    for i, p in enumerate(points):
        msg.points.append(
            JointTrajectoryPoint(positions=list(map(float, p)), time_from_start=to_duration((i + 1) * dt))
        )
    return msg


def _names(c):
    return list(c.latest("/joint_states").name)


def test_topics_types_encodings_and_rates(c):
    from robot_policy.hardware.config import load_hardware_config

    hw = load_hardware_config("sim_tabletop")
    js = c.latest("/joint_states")
    assert list(js.name) == hw.command_names and len(js.position) == len(js.velocity) == 8
    img = c.latest("/agentview/color/image_raw")
    assert (img.encoding, img.width, img.height, img.step) == ("rgb8", 84, 84, 84 * 3)
    assert len(img.data) == 84 * 84 * 3 and img.header.frame_id == "agentview_color_optical_frame"
    assert c.latest("/wrist/color/image_raw").encoding == "rgb8"
    depth = c.latest("/wrist/depth/image_rect_raw")
    assert (depth.encoding, depth.width, depth.height, depth.step) == ("16UC1", 84, 84, 168)
    from robot_policy.ros.convert import image_to_frame

    d = image_to_frame(depth).image
    assert d.dtype == np.uint16 and 50 < np.median(d[d > 0]) < 3000  # millimetres to the table/arm
    info = c.latest("/agentview/color/camera_info")
    assert (info.width, info.height) == (84, 84) and info.k[0] > 0 and info.k[8] == 1.0
    # Rate from capture stamps (not wall-clock measurements in this process): ~control rate.
    n0 = c.count("/joint_states")
    wait_until(lambda: c.count("/joint_states") >= n0 + 30, 30, "30 joint states")
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in c.messages("/joint_states")[-30:]]
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 0.5 * HZ < rate < 1.5 * HZ
    cams = [
        m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec
        for m in c.messages("/agentview/color/image_raw")[-20:]
    ]
    assert np.all(np.diff(cams) > 0)


def test_joint_trajectory_moves_arm_to_targets(c):
    q0 = _q(c)
    target = q0.copy()
    target[0] += 0.25
    target[3] -= 0.2
    mid = (q0 + target) / 2
    c.publish("/joint_trajectory_controller/joint_trajectory", _traj(_names(c), [mid, target], 0.5))
    q = wait_until(
        lambda: (lambda q: q if np.abs(q[:7] - target[:7]).max() < 0.03 else None)(_q(c)), 20, "arm at target"
    )
    assert abs(q[0] - q0[0] - 0.25) < 0.03


def test_invalid_commands_never_reach_sim(c):
    from std_msgs.msg import Float64MultiArray

    names = _names(c)
    before = int(diagnostics(c, "sim: safety")["rejected"])
    q0 = _q(c)
    n_cmd = c.count("/joint_commands")
    bad = q0.copy()
    bad[2] = np.nan
    c.publish("/forward_position_controller/commands", Float64MultiArray(data=bad.tolist()))
    c.publish("/forward_position_controller/commands", Float64MultiArray(data=q0[:5].tolist()))
    inf_traj = q0.copy()
    inf_traj[1] = np.inf
    c.publish("/joint_trajectory_controller/joint_trajectory", _traj(names, [q0, inf_traj], 0.2))
    c.publish("/joint_trajectory_controller/joint_trajectory", _traj(names[:6], [q0[:6]], 0.2))
    wait_until(lambda: int(diagnostics(c, "sim: safety")["rejected"]) >= before + 4, 15, "4 rejections")
    # Out of limit: joint 4's upper limit is -0.0698 rad; the command is clamped, not executed as is.
    over = q0.copy()
    over[3] = 1.0
    c.publish("/forward_position_controller/commands", Float64MultiArray(data=over.tolist()))
    # Streamed, as a teleop does: 2 s of travel at the velocity limit outlasts the watchdog.
    stream = Float64MultiArray(data=over.tolist())
    wait_until(
        lambda: (c.publish("/forward_position_controller/commands", stream), bool(_q(c)[3] > -0.2))[1],
        20,
        "joint 4 near its upper limit",
    )
    time.sleep(0.5)
    cmds = np.array(
        [m.position for m in c.messages("/joint_commands")[-(c.count("/joint_commands") - n_cmd) :]]
    )
    assert np.all(np.isfinite(cmds)) and cmds.shape[1] == 8
    assert cmds[:, 3].max() <= -0.0698 + 1e-9
    assert _q(c)[3] <= -0.0698 + 0.02
    wait_until(lambda: int(diagnostics(c, "sim: safety")["clamped"]) >= 1, 5, "clamp counted")


def test_watchdog_holds_position(c):
    from std_msgs.msg import Float64MultiArray

    q0 = _q(c)
    far = q0.copy()
    far[0] += 1.5  # takes > 1 s at the velocity limit: still moving when the watchdog trips
    t_cmd = c.now()
    c.publish("/forward_position_controller/commands", Float64MultiArray(data=far.tolist()))
    # Diagnostics stamped after the timeout (0.5 s) must report the hold.
    wait_until(
        lambda: diagnostics(c, "sim: safety", since=t_cmd + 0.6)["watchdog_tripped"] == "True", 10, "trip"
    )
    q1 = _q(c, after=c.count("/joint_states") + 2)
    time.sleep(1.0)
    q2 = _q(c)
    assert abs(q1[0] - q0[0]) < 1.4  # stopped short of the target...
    assert np.abs(q2[:7] - q1[:7]).max() < 0.02  # ...and holds still


def test_estop_latches_until_reset(c):
    from std_msgs.msg import Float64MultiArray

    assert c.call("/estop").success
    q0 = _q(c)
    far = q0.copy()
    far[0] += 0.5
    for _ in range(10):
        c.publish("/forward_position_controller/commands", Float64MultiArray(data=far.tolist()))
        time.sleep(0.05)
    time.sleep(0.5)
    assert abs(_q(c)[0] - q0[0]) < 0.02
    wait_until(
        lambda: diagnostics(c, "sim: safety", since=c.now() - 0.5)["estopped"] == "True", 5, "estop diag"
    )
    c.call("/sim/reset")  # a scene reset does not release the e-stop
    c.publish("/forward_position_controller/commands", Float64MultiArray(data=far.tolist()))
    time.sleep(0.5)
    q_reset = _q(c)
    assert abs(q_reset[0] - far[0]) > 0.3
    c.call("/estop_reset")
    c.publish("/forward_position_controller/commands", Float64MultiArray(data=far.tolist()))
    stream = Float64MultiArray(data=far.tolist())  # streamed: the joint lags its target
    wait_until(
        lambda: (
            c.publish("/forward_position_controller/commands", stream),
            bool(abs(_q(c)[0] - far[0]) < 0.03),
        )[1],
        15,
        "arm moving after e-stop reset",
    )


def test_recorder_writes_valid_episode_and_discard_leaves_nothing(c, graph):
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import SetBool

    from robot_policy.data import EpisodeStore

    assert c.call("/recorder/start").success
    assert not c.call("/recorder/start").success  # already recording
    q0 = _q(c, after=c.count("/joint_states") + 2)  # a state from after the fixture's reset
    target = q0.copy()
    target[0] += 0.3
    n0 = c.count("/joint_states")
    while c.count("/joint_states") < n0 + 30:  # stream the command, as a teleop device does
        c.publish("/forward_position_controller/commands", Float64MultiArray(data=target.tolist()))
        time.sleep(0.05)
    c.call("/recorder/mark_success", SetBool, data=True)
    r = c.call("/recorder/stop")
    assert r.success, r.message
    store = EpisodeStore.open(graph.dataset)
    assert store.num_episodes == 1
    ep = store.get_episode(0)
    n = len(ep["joint_pos"])
    assert n >= 25
    assert ep["agentview_rgb"].shape == (n, 84, 84, 3) and ep["wrist_rgb"].shape == (n, 84, 84, 3)
    assert ep["action"].shape == (n, 8) and ep["object"].shape == (n, 7)
    assert ep["agentview_rgb"].std() > 0  # real rendered frames
    # The recorded commands drive joint 1 toward the target; the joint follows them.
    assert ep["action"][-1, 0] == pytest.approx(target[0], abs=1e-4)
    assert ep["joint_pos"][-1, 0] > ep["joint_pos"][0, 0] + 0.2
    meta = store.episode_meta(0)
    assert meta["success"] is True and meta["robot"] == "sim_tabletop"
    frames = store.num_frames
    assert c.call("/recorder/start").success
    n0 = c.count("/joint_states")
    wait_until(lambda: c.count("/joint_states") >= n0 + 10, 20, "10 more frames")
    assert c.call("/recorder/discard").success
    store = EpisodeStore.open(graph.dataset)
    assert store.num_episodes == 1 and store.num_frames == frames
    assert not c.call("/recorder/stop").success  # nothing left to commit


def test_target_pose_moves_the_end_effector(c):
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState

    from robot_policy.ros.convert import named_vector_to_obs

    c.subscribe("/sim/observation", JointState, keep=5)

    def ee():
        obs = named_vector_to_obs(c.latest("/sim/observation", after=c.count("/sim/observation")))
        return obs["ee_pos"].astype(float), obs["ee_quat"].astype(float)

    pos, quat = ee()
    msg = PoseStamped()
    msg.header.frame_id = "world"
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = pos[0], pos[1], pos[2] + 0.05
    msg.pose.orientation.w, msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z = quat
    c.publish("target_pose", msg)
    wait_until(lambda: abs(ee()[0][2] - (pos[2] + 0.05)) < 0.01, 20, "the end effector 5 cm up")
    before = int(diagnostics(c, "sim: safety")["rejected"])
    msg.header.frame_id = "camera"  # a frame the node does not take: refused, not guessed
    c.publish("target_pose", msg)
    wait_until(lambda: int(diagnostics(c, "sim: safety")["rejected"]) > before, 15, "the rejection")


def test_an_unknown_executor_kind_is_refused_naming_the_kinds():
    from robot_policy.ros._node import EXECUTORS, _make_executor

    assert EXECUTORS == ("single", "multi")
    with pytest.raises(ValueError, match="not one of single, multi"):
        _make_executor("threaded")
