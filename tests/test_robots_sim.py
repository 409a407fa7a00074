"""The ``sim`` arm backend: the simulated world's arm behind the same contract and the same
controller as the real arms (no ROS here), and the ROS-free core of robot_node around it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from robot_policy.config import ConfigError
from robot_policy.hardware.config import load_hardware_config
from robot_policy.robots import ARMS, ArmController, make_arm
from robot_policy.runtime.robot import RobotRuntime, arm_overrides

WAIT = 60.0


def wait_until(pred, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_sim_is_a_registered_backend_with_typed_overrides():
    assert "sim" in ARMS.names()
    hw = load_hardware_config("sim_tabletop")
    arm = make_arm(hw)
    assert arm.name == "sim" and arm.control_hz == hw.control_hz and not arm.connected
    hw2, unused = arm_overrides(hw, {"seed": 7, "task": "tabletop"})
    assert make_arm(hw2).config.seed == 7 and unused == []
    with pytest.raises(ConfigError, match="max_catch_up_s"):
        arm_overrides(hw, {"max_catch_up_s": -1.0})
    _, unused = arm_overrides(load_hardware_config("fr3_sim"), {"seed": 1})
    assert unused == ["seed"]  # robot_node warns: a franka arm has no scene seed
    hw.arm_config = {"control_hz": 50}
    with pytest.raises(ConfigError, match="steps its physics once per control tick"):
        make_arm(hw)


def test_controller_runs_the_world_in_its_thread_on_a_fixed_grid():
    hw = load_hardware_config("sim_tabletop")
    reports, threads = [], set()

    def on_tick(r):
        reports.append(r)
        threads.add(threading.current_thread().name)

    with ArmController(make_arm(hw), on_tick=on_tick) as ctl:
        js = ctl.wait_for_state(WAIT)
        assert ctl.arm.world is not None and js.names[-1] == "panda_finger_joint1"
        q0 = js.position.copy()
        target = q0.copy()
        target[0] += 0.2
        target[-1] = 1.0  # close the gripper on the way
        assert ctl.submit_trajectory([0.4, 0.8], [(q0 + target) / 2, target])
        wait_until(lambda: abs(ctl.state().position[0] - target[0]) < 0.02, "the arm at the target")
        wait_until(lambda: ctl.state().position[-1] < 0.07, "the gripper closing")
        # A reset in the loop thread: new scene, the arm holds there with the gripper open.
        seed = ctl.call_in_loop(ctl.arm.world.reset, rearm=True)
        assert seed == 1 and ctl.current_command()[-1] == -1.0
        assert abs(ctl.state().position[0] - target[0]) > 0.1
        st = ctl.status()
    assert threads == {"arm-sim"}  # the world (and its GL context) lives in the loop thread
    assert st["fault"] == "" and st["accepted"] > 0
    sent = [r for r in reports if r.command is not None]
    stamps = np.array([r.stamp for r in sent])
    # Commands on the grid: exactly one period apart (late ticks keep their due time).
    np.testing.assert_allclose(np.diff(stamps), 1.0 / hw.control_hz, atol=1e-6)
    # Each observation is stamped after its command, by at most a quarter period.
    lag = np.array([r.state.stamp - r.stamp for r in sent])
    assert np.all(lag >= 0) and np.all(lag <= 0.25 / hw.control_hz + 1e-9)


def test_grid_and_command_tags_on_a_clock_read_across_delays():
    """robot_node's clock is ROS time read through rclpy: a GIL switch or a preemption can fall
    between that read and the loop's monotonic read. The commands stay exactly one period apart
    on that clock anyway (the safety layer rate-limits over that interval, the recorder pairs by
    those stamps), and each tick reports the sender's tag of the command in force."""
    hw = load_hardware_config("sim_tabletop")
    rng = np.random.default_rng(0)
    lock = threading.Lock()

    def clock():
        t = time.monotonic() + 1.8e9
        with lock:
            delay = rng.uniform(0.0, 0.003) if rng.random() < 0.3 else 0.0
        time.sleep(delay)  # the value is returned late, as after a GIL switch
        return t

    reports = []
    with ArmController(make_arm(hw), clock=clock, on_tick=reports.append) as ctl:
        q0 = ctl.wait_for_state(WAIT).position.copy()
        assert ctl.submit_target(q0, source="arbiter:human:1")
        wait_until(
            lambda: reports and reports[-1].command_source == "arbiter:human:1", "the forward command's tag"
        )
        target = q0.copy()
        target[0] += 0.05
        assert ctl.submit_trajectory([0.1], [target], source="arbiter:policy:2")
        wait_until(lambda: reports[-1].command_source == "arbiter:policy:2", "the trajectory's tag")
        wait_until(lambda: len(reports) > 60, "ticks")
        ctl.call_in_loop(ctl.arm.world.reset, rearm=True)
        wait_until(
            lambda: reports[-1].command is not None and reports[-1].command_source == "", "an untagged hold"
        )
    stamps = np.array([r.stamp for r in reports if r.command is not None])
    # After the first reads (the estimate starts from one read's bound), one period to within
    # 20 us, against injected delays of up to 3000 us: the estimate still moves to the edge of a
    # tighter bracket when one comes (7.8 us once in a full-suite run), never by a delay.
    np.testing.assert_allclose(np.diff(stamps[10:]), 1.0 / hw.control_hz, atol=2e-5)


def test_estop_holds_the_simulated_arm_while_the_world_keeps_stepping():
    hw = load_hardware_config("sim_tabletop")
    with ArmController(make_arm(hw)) as ctl:
        q0 = ctl.wait_for_state(WAIT).position.copy()
        far = q0.copy()
        far[0] += 1.0
        assert ctl.submit_target(far)
        wait_until(lambda: ctl.state().position[0] > q0[0] + 0.1, "motion")
        ctl.estop()
        steps = ctl.arm.world.steps
        time.sleep(0.5)
        q_stop = ctl.state().position[0]
        wait_until(lambda: ctl.arm.world.steps > steps + 10, "more physics steps")
        assert abs(ctl.state().position[0] - q_stop) < 0.01 and ctl.state().position[0] < far[0] - 0.3
        assert not ctl.submit_target(far)


def test_runtime_renders_the_worlds_cameras_and_solves_pose_targets():
    hw = load_hardware_config("sim_tabletop")
    for cam in hw.cameras:
        cam.depth = cam.name == "wrist"
    samples = []
    rt = RobotRuntime(hw, on_sample=samples.append).start()
    try:
        wait_until(lambda: len(samples) > 5, "samples")
        s = samples[-1]
        assert set(s.task_state) >= {"object", "ee_pos", "ee_quat"}
        with_cams = [x for x in samples if x.captures]
        cap = with_cams[-1].captures["agentview"]
        assert cap.color.image.shape == (84, 84, 3) and cap.color.image.std() > 0
        assert cap.stamp == with_cams[-1].state.stamp  # rendered from the same instant
        assert with_cams[-1].captures["wrist"].depth.image.dtype == np.uint16
        # Cartesian target 5 cm above the current end effector: IK, then the safety layer.
        ee = np.asarray(rt.world.task_state()["ee_pos"], dtype=np.float64)
        quat = np.asarray(rt.world.task_state()["ee_quat"], dtype=np.float64)
        assert rt.submit_pose(ee + [0.0, 0.0, 0.05], quat)
        wait_until(
            lambda: abs(float(rt.world.task_state()["ee_pos"][2]) - (ee[2] + 0.05)) < 0.01,
            "the end effector up",
        )
        before = rt.status()["rejected"]
        assert not rt.submit_pose([3.0, 0.0, 0.5], quat)  # 3 m away: refused, not approximated
        assert rt.status()["rejected"] == before + 1 and "out of reach" in rt.status()["last_rejection"]
        assert not rt.submit_pose([np.nan, 0.0, 0.5], quat)
        seed = rt.reset_scene()
        assert rt.episode()["seed"] == seed and rt.episode()["steps"] <= 2
    finally:
        rt.close()


def test_command_latency_figures_cover_only_the_recent_window():
    """A start-up transient (late commands while nodes warm up) leaves the diagnostics once it is
    older than ``latency_window_s``; the count and percentiles are of the window's commands."""
    now = [100.0]
    rt = RobotRuntime(load_hardware_config("sim_tabletop"), clock=lambda: now[0], latency_window_s=10.0)
    try:
        for _ in range(20):
            rt.note_command_stamp(0.300)  # start-up: 300 ms late
        now[0] = 105.0
        for _ in range(100):
            rt.note_command_stamp(0.004)
        st = rt.status()
        assert st["cmd_latency_n"] == 120 and float(st["cmd_latency_ms_p99"]) == pytest.approx(300.0)
        now[0] = 111.0  # the start-up is now 11 s old
        st = rt.status()
        assert st["cmd_latency_n"] == 100
        assert float(st["cmd_latency_ms_p99"]) == pytest.approx(4.0)
        with pytest.raises(ValueError, match="latency_window_s"):
            RobotRuntime(load_hardware_config("sim_tabletop"), latency_window_s=0.0)
    finally:
        rt.close()
