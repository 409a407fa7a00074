"""UR (ur_rtde) and xArm backends under the shared controller, against SDK-boundary fakes.

No simulator speaks RTDE or the xArm protocol here, so ``robot_sdk_fakes`` stands in for the SDK
modules and enforces their documented contracts (ranges, units, call order). Every test ends by
asserting the fake saw no contract violation: the controller turns exceptions into faults, so a
violation would otherwise only show as a fault in the status.
Real devices: ``ROBOT_POLICY_HARDWARE=1`` with ``ROBOT_POLICY_UR_HOST`` / ``ROBOT_POLICY_XARM_HOST``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from robot_sdk_fakes import ContractViolation, FakeURRobot, FakeXArmRobot

from robot_policy.config import ConfigError
from robot_policy.hardware.config import load_hardware_config
from robot_policy.robots import ArmController, arm_config_from, make_arm

WAIT = 30.0  # upper bound for "eventually" on a loaded machine (never asserted on)


def wait_until(pred, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _hw(name: str, host: str, **arm_config):
    hw = load_hardware_config(name)
    hw.arm_config = {
        **hw.arm_config,
        "hostname": host,
        "recover_min_s": 0.05,
        "recover_max_s": 0.2,
        **arm_config,
    }
    hw.watchdog_timeout = 30.0  # motion tests: hold the last point instead of timing out under load
    return hw


# -- UR --------------------------------------------------------------------------------------
@pytest.fixture
def ur():
    robot = FakeURRobot()
    ctl = ArmController(make_arm(_hw("ur5e", robot.hostname), sdk=robot.sdk))
    with ctl:
        ctl.wait_for_state(WAIT)
        yield robot, ctl
    assert robot.violations == []


def test_fake_rtde_enforces_the_documented_contract():
    robot = FakeURRobot()
    c = robot.sdk.RTDEControlInterface(robot.hostname, 500.0)
    q = robot.q.tolist()
    with pytest.raises(ContractViolation, match="outside an initPeriod"):
        c.servoJ(q, 0.5, 0.5, 0.002, 0.1, 300)
    for args, match in (
        ((q, 0.5, 0.5, 0.002, 0.01, 300), "lookahead_time"),
        ((q, 0.5, 0.5, 0.002, 0.1, 50), "gain"),
        ((q[:5], 0.5, 0.5, 0.002, 0.1, 300), "6 joint positions"),
        ((q, 0.5, 0.5, 0.008, 0.1, 300), "control period"),
    ):
        t = c.initPeriod()
        with pytest.raises(ContractViolation, match=match):
            c.servoJ(*args)
        c.waitPeriod(t)
    t = c.initPeriod()
    assert not c.servoJ((robot.q + 0.5).tolist(), 0.5, 0.5, 0.002, 0.1, 300)  # a jump: protective stop
    c.waitPeriod(t)
    assert robot.safety_mode == 3
    c.stopScript()
    with pytest.raises(ContractViolation, match="after stopScript"):
        c.servoStop()
    with pytest.raises(RuntimeError, match="connection refused"):
        robot.sdk.RTDEControlInterface("10.9.9.9", 500.0)


def test_ur_config_ranges_name_the_field():
    hw = load_hardware_config("ur5e")
    for bad, match in (
        ({"lookahead_time": 0.5}, "lookahead_time must be in"),
        ({"frequency": 250}, "125 .CB3. or 500"),
        ({"control_hz": 100}, "control_hz .* must equal frequency"),
        ({"hostname": ""}, "hostname is empty"),
    ):
        hw.arm_config = {"hostname": "10.0.0.5", **bad}
        with pytest.raises(ConfigError, match=match):
            arm_config_from(hw)


def test_ur_trajectory_reaches_its_targets_through_servoj(ur):
    robot, ctl = ur
    q0 = robot.q.copy()
    mid, end = q0 + [0.1, -0.1, 0.1, 0.0, 0.0, 0.1], q0 + [0.2, -0.2, 0.2, 0.0, 0.0, 0.2]
    assert ctl.submit_trajectory([0.3, 0.6], [mid, end])
    wait_until(lambda: np.allclose(robot.q, end, atol=1e-9), "the last point")
    servo = np.array([c[1] for c in robot.log if c[0] == "servoJ"])
    assert len(servo) > 20 and np.abs(servo[:, 0] - q0[0]).max() == pytest.approx(0.2)
    assert ctl.status()["fault_count"] == 0 and ctl.status()["arm"]["mode"] == "servo"
    assert ctl.status()["loop_hz_target"] == 500.0


def test_ur_nan_and_out_of_limit_commands_never_reach_servoj(ur):
    robot, ctl = ur
    assert not ctl.submit_target([np.nan] * 6)
    assert not ctl.submit_trajectory([0.1], [[0.0] * 5])
    assert ctl.submit_target(robot.q + [0.0, 0.0, 5.0, 0.0, 0.0, 0.0])  # elbow clamped to its limit
    wait_until(lambda: robot.q[2] == pytest.approx(3.1416), "the clamped elbow target (ur5e.yaml limit)")
    servo = np.array([c[1] for c in robot.log if c[0] == "servoJ"])
    assert np.isfinite(servo).all() and servo[:, 2].max() <= 3.1416 + 1e-12
    assert robot.safety_mode == 1, "the rate-limited stream never jumped"


def test_ur_protective_stop_is_a_fault_until_cleared_then_the_script_is_reuploaded(ur):
    robot, ctl = ur
    assert ctl.submit_trajectory([20.0], [robot.q + 0.5])
    wait_until(lambda: robot.calls("servoJ") > 10, "streaming")
    robot.protective_stop()
    wait_until(lambda: "protective stop" in ctl.status()["fault"], "the fault")
    wait_until(lambda: "teach pendant" in ctl.status()["last_recover_error"], "a refused recovery")
    wait_until(lambda: ctl.status()["arm"]["protective_stop"], "the backend status snapshot")
    assert ctl.status()["running"] and not ctl.status()["trajectory_active"]
    assert not ctl.submit_target(robot.q)
    q_stop = robot.q.copy()
    robot.clear_protective_stop()
    wait_until(lambda: ctl.status()["recoveries"] == 1, "recovery")
    assert robot.calls("reuploadScript") == 1 and robot.program_running
    n = robot.calls("servoJ")
    wait_until(lambda: robot.calls("servoJ") > n + 10, "streaming again")
    np.testing.assert_allclose(robot.q, q_stop)  # holds, the old trajectory is not resumed


def test_ur_lost_connection_reconnects_with_new_interfaces(ur):
    robot, ctl = ur
    robot.up = False
    wait_until(lambda: "connection lost" in ctl.status()["fault"], "the fault")
    wait_until(lambda: "connection refused" in ctl.status()["last_recover_error"], "failed reconnects")
    assert ctl.status()["running"]
    robot.up = True
    wait_until(lambda: ctl.status()["recoveries"] == 1, "reconnect")
    assert robot.interfaces_created == 2
    assert ctl.submit_target(robot.q + 0.05)
    wait_until(lambda: np.allclose(robot.q[0], ctl.last_command().position[0]), "motion after reconnect")


def test_ur_estop_servo_stops_and_close_follows_the_documented_order(ur):
    robot, ctl = ur
    assert ctl.submit_trajectory([20.0], [robot.q + 0.5])
    wait_until(lambda: robot.calls("servoJ") > 10, "streaming")
    ctl.estop()
    wait_until(lambda: robot.calls("servoStop") == 1, "servoStop")
    n = robot.calls("servoJ")
    ticks = ctl.status()["ticks"]
    wait_until(lambda: ctl.status()["ticks"] > ticks + 50, "more ticks")
    assert robot.calls("servoJ") == n
    ctl.close()
    names = [c[0] for c in robot.log]
    assert names[-3:] == ["servoStop", "stopScript", "disconnect"]


# -- xArm ------------------------------------------------------------------------------------
@pytest.fixture
def xarm():
    robot = FakeXArmRobot()
    ctl = ArmController(make_arm(_hw("xarm7", robot.hostname), sdk=robot.sdk))
    with ctl:
        ctl.wait_for_state(WAIT)
        yield robot, ctl
    assert robot.violations == []


def test_fake_xarm_enforces_order_and_radians():
    robot = FakeXArmRobot()
    api = robot.sdk.XArmAPI(robot.hostname, is_radian=True)
    q = robot.q.tolist()
    assert api.set_servo_angle_j(q, is_radian=True) == -2  # not enabled
    api.motion_enable(True)
    assert api.set_servo_angle_j(q, is_radian=True) == 9  # state not set
    api.set_state(0)
    with pytest.raises(ContractViolation, match="mode 0"):
        api.set_servo_angle_j(q, is_radian=True)
    api.set_mode(1)
    api.set_state(0)
    with pytest.raises(ContractViolation, match="degrees"):
        api.set_servo_angle_j(q)
    assert api.set_servo_angle_j(q, is_radian=True) == 0
    assert api.set_servo_angle_j([0.0, 3.0, 0, 0.5, 0, 0.5, 0], is_radian=True) == -8  # joint 2 range
    robot.raise_error(31)
    assert api.set_servo_angle_j(q, is_radian=True) == 1
    api.clean_error()
    assert api.set_state(0) == -2, "clean_error needs motion_enable again"
    assert not robot.sdk.XArmAPI("10.9.9.9").connected


def test_xarm_trajectory_and_gripper_in_servo_mode(xarm):
    robot, ctl = xarm
    assert robot.mode == 1 and robot.enabled and robot.gripper_enabled
    q0 = robot.q.copy()
    end = q0 + [0.2, 0.1, -0.1, 0.2, 0.0, -0.2, 0.1]
    assert ctl.submit_trajectory([0.3, 0.6], [np.append((q0 + end) / 2, 0.0), np.append(end, 1.0)])
    wait_until(lambda: np.allclose(robot.q, end, atol=1e-9), "the last point")
    assert robot.gripper_pos == pytest.approx(0.0)  # closed
    # The state is read at the start of a tick: it shows the last target one tick later.
    wait_until(
        lambda: np.allclose(ctl.state().position[:7], end) and ctl.state().position[-1] < 0.005, "state"
    )
    assert ctl.state().names[-1] == "drive_joint"
    assert ctl.status()["fault_count"] == 0 and "servo" in ctl.status()["arm"]["mode"]


def test_xarm_nan_and_out_of_limit_commands_never_reach_the_sdk(xarm):
    robot, ctl = xarm
    assert not ctl.submit_target([np.nan] * 8)
    tgt = np.append(robot.q, -1.0)
    tgt[1] = 3.0  # beyond joint2's 2.094 rad
    assert ctl.submit_target(tgt)
    wait_until(lambda: robot.q[1] == pytest.approx(2.094395), "the clamped joint")
    sent = np.array([c[1] for c in robot.log if c[0] == "set_servo_angle_j"])
    assert np.isfinite(sent).all() and sent[:, 1].max() <= 2.094395 + 1e-12
    assert robot.error_code == 0, "no over-speed: the stream was rate-limited"


def test_xarm_controller_error_is_cleaned_and_servo_mode_restored(xarm):
    robot, ctl = xarm
    assert ctl.submit_trajectory([20.0], [np.append(robot.q + 0.5, -1.0)])
    wait_until(lambda: robot.calls("set_servo_angle_j") > 10, "streaming")
    robot.raise_error(31)  # e.g. a collision
    wait_until(lambda: ctl.status()["recoveries"] == 1, "recovery")
    assert "error 31" in ctl.status()["last_recover_error"] or ctl.status()["fault_count"] == 1
    assert robot.calls("clean_error") == 1 and robot.mode == 1 and robot.state in (1, 2)
    q_hold = robot.q.copy()
    n = robot.calls("set_servo_angle_j")
    wait_until(lambda: robot.calls("set_servo_angle_j") > n + 10, "streaming again")
    np.testing.assert_allclose(robot.q, q_hold)


def test_xarm_estop_stops_then_reenables_after_reset(xarm):
    robot, ctl = xarm
    assert ctl.submit_trajectory([20.0], [np.append(robot.q + 0.5, -1.0)])
    wait_until(lambda: robot.calls("set_servo_angle_j") > 10, "streaming")
    ctl.estop()
    wait_until(lambda: robot.state == 4, "set_state(4)")
    ctl.reset_estop()
    assert ctl.submit_target(np.append(robot.q + 0.05, -1.0))
    wait_until(lambda: robot.state in (1, 2) and robot.mode == 1, "servo mode again")
    wait_until(lambda: np.allclose(robot.q, ctl.last_command().position[:7]), "motion after reset")
    assert ctl.status()["fault_count"] == 0


def test_xarm_lost_connection_reconnects(xarm):
    robot, ctl = xarm
    robot.up = False
    wait_until(
        lambda: "not connected" in ctl.status()["fault"] or "code -1" in ctl.status()["fault"], "fault"
    )
    robot.up = True
    wait_until(lambda: ctl.status()["recoveries"] == 1, "reconnect")
    assert robot.apis_created >= 2 and robot.mode == 1


# -- real devices ----------------------------------------------------------------------------
@pytest.mark.hardware
@pytest.mark.parametrize("name, env", [("ur5e", "ROBOT_POLICY_UR_HOST"), ("xarm7", "ROBOT_POLICY_XARM_HOST")])
def test_real_arm_connects_reads_and_holds(name, env):
    """On a real arm: connect, read, hold still for a second, disconnect. Commands no motion."""
    host = os.environ.get(env)
    if not host:
        pytest.skip(f"set {env} to the {name} address")
    hw = load_hardware_config(name)
    hw.arm_config = {**hw.arm_config, "hostname": host}
    with ArmController(make_arm(hw)) as ctl:
        q0 = ctl.wait_for_state(10.0).position.copy()
        time.sleep(1.0)
        assert ctl.status()["fault"] == ""
        np.testing.assert_allclose(
            ctl.state().position[: len(hw.joint_names)], q0[: len(hw.joint_names)], atol=0.01
        )
