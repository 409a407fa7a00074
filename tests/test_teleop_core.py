"""Teleop cores without ROS: Cartesian twist/pose -> joints (the project's IK, a workspace box),
the intervention arbiter's decisions and records, and the scripted corrector."""

from __future__ import annotations

import numpy as np
import pytest

from robot_policy.hardware.config import load_hardware_config
from robot_policy.teleop import TeleopCommand, TeleopError
from robot_policy.teleop.arbiter import Arbiter, ArbiterConfig, Forward, Source, Trajectory
from robot_policy.teleop.cartesian import CartesianConfig, CartesianMapper

HW = load_hardware_config("sim_tabletop")
DT = 1.0 / HW.control_hz
HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])


# -- Cartesian ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solver():
    from robot_policy.hardware.kinematics import PoseSolver

    return PoseSolver(HW)


def test_twist_moves_the_end_effector_from_where_it_is(solver):
    m = CartesianMapper(HW, solver=solver)
    p0, quat0 = solver.fk(HOME)
    q = HOME
    for _ in range(10):  # 0.1 m/s along +x for 0.5 s
        q = m.joints(TeleopCommand(0.0, twist=[0.1, 0, 0, 0, 0, 0]), HOME, DT)
    p, quat = solver.fk(q)
    np.testing.assert_allclose(p - p0, [0.05, 0, 0], atol=2e-3)
    assert abs(abs(np.dot(quat, quat0)) - 1) < 1e-4  # orientation kept
    # The first command starts at the measured pose: a zero twist commands (nearly) where the arm is.
    m.reset()
    q = m.joints(TeleopCommand(0.0, twist=np.zeros(6)), HOME, DT)
    assert np.max(np.abs(solver.fk(q)[0] - p0)) < 1e-3


def test_twist_yaw_and_speed_limits(solver):
    cfg = CartesianConfig(max_angular=0.5)
    m = CartesianMapper(HW, cfg, solver=solver)
    _, quat0 = solver.fk(HOME)
    q = m.joints(TeleopCommand(0.0, twist=[0, 0, 0, 0, 0, 5.0]), HOME, 0.2)  # 5 rad/s asked, 0.5 allowed
    _, quat = solver.fk(q)
    angle = 2 * np.arccos(min(1.0, abs(float(np.dot(quat, quat0)))))
    assert angle == pytest.approx(0.1, abs=0.01)


def test_workspace_box_and_unreachable_targets(solver):
    cfg = CartesianConfig(workspace_lower=[0.2, -0.45, 0.25], workspace_upper=[0.8, 0.45, 0.7])
    m = CartesianMapper(HW, cfg, solver=solver)
    q = HOME
    for _ in range(40):  # straight down at 0.25 m/s for 2 s: stops at the floor of the box
        q = m.joints(TeleopCommand(0.0, twist=[0, 0, -0.25, 0, 0, 0]), HOME, DT)
    assert solver.fk(q)[0][2] == pytest.approx(0.25, abs=2e-3)
    assert m.clamped > 0
    far = CartesianMapper(HW, CartesianConfig(workspace_upper=[3.0, 0.45, 0.7]), solver=solver)
    q1 = far.joints(TeleopCommand(0.0, twist=np.zeros(6)), HOME, DT)
    q2 = far.joints(TeleopCommand(0.0, pose=([2.5, 0.0, 0.4], [0, 1, 0, 0])), HOME, DT)
    np.testing.assert_array_equal(q1, q2)  # out of reach: refused, the arm stays
    assert far.unreachable == 1 and "out of reach" in far.status()["last_ik_error"]
    with pytest.raises(TeleopError, match="workspace_lower"):
        CartesianConfig(workspace_lower=[0.5, 0, 0], workspace_upper=[0.4, 1, 1])


# -- arbiter --------------------------------------------------------------------------------


def _chunk(q0, n=8, step=0.01, joint=0):
    pts = np.tile(np.concatenate([q0, [-1.0]]), (n, 1))
    pts[:, joint] += step * np.arange(1, n + 1)
    return (np.arange(n) + 1) * DT, pts


def _cmd(q, g=-1.0):
    return np.concatenate([q, [g]])


def test_policy_passes_through_until_the_human_takes_over_at_once():
    a = Arbiter(HW)
    a.state(10.0, 10.0)
    tfs, pts = _chunk(HOME)
    out = a.policy_chunk(10.0, tfs, pts, now=10.01)
    assert isinstance(out, Trajectory) and out.start == 10.0
    np.testing.assert_array_equal(out.points, pts)  # unchanged
    human = _cmd(HOME - 0.1)
    out = a.teleop(human, True, now=10.02)  # command and flag together: forwarded at once
    assert isinstance(out, Forward) and np.array_equal(out.target, human)
    assert a.source == Source.HUMAN and a.counts.interventions == 1
    assert a.policy_chunk(10.05, *_chunk(HOME), now=10.06) is None  # the policy only shadows now
    assert a.shadow_chunks == 1
    out = a.teleop(human + 0.01, True, now=10.07)
    np.testing.assert_allclose(out.target, human + 0.01)


def test_flag_before_its_command_holds_then_forwards():
    a = Arbiter(HW)
    executed = _cmd(HOME)
    a.state(9.95, 9.95)
    a.executed(executed, 10.0)
    a.teleop(_cmd(HOME + 0.3), False, now=5.0)  # an old command from a previous intervention
    out = a.teleop(None, True, now=10.01)
    np.testing.assert_array_equal(out.target, executed)  # stale command not used: hold here
    out = a.teleop(_cmd(HOME - 0.05), True, now=10.02)
    np.testing.assert_allclose(out.target, _cmd(HOME - 0.05))


def test_records_mark_exactly_the_steps_executed_under_human_control():
    a = Arbiter(HW, ArbiterConfig(command_latency_s=0.0))
    t = 100.0
    a.policy_chunk(t, *_chunk(HOME, n=20), now=t)
    flags = []
    for k in range(10):
        s = t + k * DT
        a.state(s + 0.001, s + 0.002)  # frame k (joint state just after the tick)
        if k == 4:
            a.teleop(_cmd(HOME), True, now=s + 0.01)  # decided right after frame 4 arrived
        if k == 7:
            a.teleop(None, False, now=s + 0.01)
        rec = a.executed(_cmd(HOME), s + DT)  # the next tick executes the answer to frame k
        assert rec.stamp == pytest.approx(s + 0.001)  # recorded on frame k's stamp
        flags.append(rec.intervention)
        if k < 4:
            # The policy's proposal for the executed time: its plan sampled there.
            np.testing.assert_allclose(rec.policy_action[0], HOME[0] + 0.01 * (k + 1), atol=1e-9)
    assert flags == [False] * 4 + [True] * 3 + [False] * 3
    assert a.counts.interventions == 1 and a.counts.intervention_steps == 3


def test_records_follow_the_robots_echo_of_the_command_in_force():
    """The robot reports which command each executed step came from (the tag the arbiter sent
    with it); a takeover that reached the robot a tick late, or a tick early by the arbiter's
    clock, is recorded on the tick that really executed it."""
    a = Arbiter(HW)  # command_latency_s: only for robots that echo no tag
    t = 100.0
    first = a.policy_chunk(t, *_chunk(HOME, n=20), now=t)
    assert first.tag.startswith("arbiter:policy:")
    a.state(t + 0.001, t + 0.002)
    rec = a.executed(_cmd(HOME), t + DT, first.tag)
    assert not rec.intervention and rec.source == Source.POLICY
    # The human takes over 40 ms before the next tick, but the forward command reaches the robot
    # after it: that tick still executed the policy's chunk (its plan is the proposal).
    a.state(t + DT + 0.001, t + DT + 0.002)
    fwd = a.teleop(_cmd(HOME - 0.1), True, now=t + DT + 0.01)
    assert fwd.tag.startswith("arbiter:human:") and fwd.tag != first.tag
    rec = a.executed(_cmd(HOME), t + 2 * DT, first.tag)
    assert not rec.intervention and rec.source == Source.POLICY
    np.testing.assert_allclose(rec.policy_action[0], HOME[0] + 0.02, atol=1e-9)
    # The next tick ran the human's command.
    a.state(t + 2 * DT + 0.001, t + 2 * DT + 0.002)
    later = a.policy_chunk(t + 2 * DT + 0.001, *_chunk(HOME, n=20, step=0.05), now=t + 2 * DT + 0.01)
    assert later is None  # a shadow proposal
    rec = a.executed(_cmd(HOME - 0.1), t + 3 * DT, fwd.tag)
    assert rec.intervention and rec.source == Source.HUMAN
    # The proposal of a human step: the newest plan the arbiter had by then (the shadow chunk).
    np.testing.assert_allclose(rec.policy_action[0], HOME[0] + 0.05, atol=1e-9)
    assert a.counts.intervention_steps == 1 and a.echoed_steps == 3 and a.timed_steps == 0
    # The release decided just before a tick (within command_latency_s) but delivered in time:
    # timing alone would call that tick the human's; the robot says it ran the handback hold.
    a.state(t + 3 * DT + 0.001, t + 3 * DT + 0.002)
    hold = a.teleop(None, False, now=t + 4 * DT - 0.001)
    assert a.source_at(t + 4 * DT) == Source.HUMAN  # the timing estimate
    rec = a.executed(hold.target, t + 4 * DT, hold.tag)
    assert not rec.intervention and rec.source == Source.HANDBACK
    # An unknown or missing tag (a robot that does not echo): the timing estimate.
    rec = a.executed(hold.target, t + 4 * DT + 0.001, "")
    assert rec.source == Source.HANDBACK and a.timed_steps == 1
    assert a.status(t + 5 * DT)["steps_by_echo"] == 4


def test_handback_waits_for_a_fresh_chunk_and_rate_limits_it():
    cfg = ArbiterConfig(handback_speed=0.5)
    a = Arbiter(HW, cfg)
    a.state(1.0, 1.0)
    a.teleop(_cmd(HOME), True, now=1.0)
    a.executed(_cmd(HOME), 1.05)
    out = a.teleop(_cmd(HOME), False, now=1.10)  # released: hold the human's last target
    assert a.source == Source.HANDBACK and np.array_equal(out.target, _cmd(HOME))
    assert isinstance(a.state(1.12, 1.12), Forward)  # still holding while no fresh chunk
    assert a.policy_chunk(1.05, *_chunk(HOME + 0.5), now=1.13) is None  # planned before the release
    assert a.stale_chunks == 1
    far = HOME + 0.5  # the fresh plan wants the arm 0.5 rad away on every joint
    out = a.policy_chunk(1.15, *_chunk(far, n=10, step=0.0), now=1.16)
    assert isinstance(out, Trajectory) and a.source == Source.HANDBACK
    times = out.start + out.time_from_start
    steps = np.diff(np.vstack([HOME, out.points[:, :7]]), axis=0)
    dts = np.diff(np.concatenate([[1.16], times]))
    vmax = 0.5 * np.asarray(HW.velocity_limits)
    assert np.all(np.abs(steps) <= vmax * dts[:, None] + 1e-9)  # no jump beyond the handback speed
    assert a.state(1.2, 1.2) is None  # a chunk is running: no more holding
    # Chunks that the limit no longer changes end the handback.
    a.executed(_cmd(far), 2.0)
    out = a.policy_chunk(2.0, *_chunk(far, step=0.0), now=2.0)
    assert a.source == Source.POLICY


def test_silent_device_while_intervening_holds_and_says_why():
    a = Arbiter(HW, ArbiterConfig(teleop_timeout_s=0.5))
    a.state(0.0, 0.0)
    a.executed(_cmd(HOME + 0.2), 0.05)
    a.teleop(_cmd(HOME), True, now=0.06)
    assert a.state(0.3, 0.3) is None  # within the timeout
    out = a.state(0.7, 0.7)
    assert a.source == Source.HOLD and np.array_equal(out.target, _cmd(HOME + 0.2))
    assert "silent" in a.status(0.7)["error"] and "holds" in a.error
    assert a.policy_chunk(0.7, *_chunk(HOME), now=0.71) is None  # the policy does not take over
    a.teleop(None, False, now=1.0)  # the device is back and lets go: handback
    assert a.source == Source.HANDBACK and a.error == ""


def test_bad_inputs_are_refused_naming_the_shape():
    a = Arbiter(HW)
    with pytest.raises(TeleopError, match=r"\(T, 8\)"):
        a.policy_chunk(0.0, [0.05], np.zeros((1, 7)), now=0.0)
    with pytest.raises(TeleopError, match="8 finite values"):
        a.teleop([np.nan] * 8, True, now=0.0)
    with pytest.raises(TeleopError, match="handback_speed"):
        ArbiterConfig(handback_speed=2.0)


# -- scripted corrector -----------------------------------------------------------------------


def test_corrector_takes_over_on_disagreement_and_hands_back():
    from robot_policy.teleop.scripted.device import Corrector, ScriptedConfig

    c = Corrector(
        ScriptedConfig(intervene="disagree", threshold=0.1, patience=2, min_steps=3, agree_steps=2), 7
    )
    expert = np.zeros(8)
    assert not c.update(expert, None)  # no proposal: no evidence
    assert not c.update(expert, np.full(8, 0.05))
    assert not c.update(expert, np.full(8, 0.2))
    assert c.update(expert, np.full(8, 0.2))  # 2 steps of disagreement: takes over
    assert c.update(expert, np.zeros(8))
    assert c.update(expert, np.zeros(8))  # agrees, but min_steps not reached
    assert not c.update(expert, np.zeros(8))  # 3 steps, 2+ agreeing: hands back


@pytest.mark.parametrize("gripper", [False, True])
def test_corrector_counts_a_gripper_of_the_other_sign_only_when_asked(gripper):
    from robot_policy.teleop.scripted.device import Corrector, ScriptedConfig

    cfg = ScriptedConfig(
        intervene="disagree", threshold=0.1, patience=2, min_steps=2, agree_steps=2, gripper=gripper
    )
    c = Corrector(cfg, 7)
    expert = np.r_[np.zeros(7), 1.0]  # fingers open
    closing = np.r_[np.zeros(7), -1.0]  # joints agree, the policy closes
    took = [c.update(expert, closing) for _ in range(2)]
    assert took[-1] is gripper  # two steps of a closing gripper: a takeover only with gripper=True
    if gripper:
        assert c.update(expert, closing) and c.update(expert, closing)  # still closing: keeps control
        assert c.update(expert, expert)  # agreeing once
        assert not c.update(expert, expert)  # twice, past min_steps: hands back


def test_scripted_device_drives_the_sim_expert():
    from robot_policy.sim import make_env
    from robot_policy.teleop import TeleopSession, make_teleop

    env = make_env("tabletop")
    o, _ = env.reset(seed=3)
    dev = make_teleop("scripted", HW, {"noise": 0.0})
    dev.connect()
    try:
        s = TeleopSession(dev, HW)
        s.reset(3)
        out = s.step(o)
        assert out.intervening and out.target.shape == (8,)
        assert np.max(np.abs(out.target[:7] - o["joint_pos"])) < 0.1  # a step from where the arm is
        assert dev.needs_observation and not dev.needs_policy
    finally:
        dev.disconnect()
        env.close()


def test_session_turns_a_spacemouse_push_into_joint_targets(solver):
    """Device -> session -> Cartesian mapping -> command-order target, end to end without ROS."""
    from teleop_fakes import FakeHid

    from robot_policy.teleop import TeleopSession, make_teleop

    hid = FakeHid()
    hid.add(b"/dev/hidraw0", 0x256F, 0xC635)
    dev = make_teleop("spacemouse", HW, {"release_after_s": 0.0}, sdk=hid)
    dev.connect()
    ticks = iter(np.arange(100) * DT)
    s = TeleopSession(dev, HW, solver=solver, clock=lambda: next(ticks))
    obs = {"joint_pos": HOME.astype(np.float32), "gripper": np.array([0.08], np.float32)}
    assert s.step(obs).target is None  # at rest: no command, the policy keeps control
    push = bytes([1]) + b"".join(int(v).to_bytes(2, "little", signed=True) for v in (0, -350, 0))
    p0 = solver.fk(HOME)[0]
    for _ in range(5):
        hid.feed(b"/dev/hidraw0", push)
        out = s.step(obs)
    assert out.intervening and out.target.shape == (8,) and out.target[7] == -1.0
    # 5 control periods at 0.15 m/s: 3.75 cm forward (+x of the base), nothing sideways.
    np.testing.assert_allclose(solver.fk(out.target[:7])[0] - p0, [0.0375, 0, 0], atol=2e-3)
    hid.feed(b"/dev/hidraw0", bytes([1, 0, 0, 0, 0, 0, 0]))
    assert s.step(obs).target is None  # let go: control back; the next takeover restarts at the arm
    dev.disconnect()
