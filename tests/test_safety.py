"""Safety layer and hardware config: the command path every backend shares."""

from __future__ import annotations

import numpy as np
import pytest

from robot_policy.config import ConfigError, from_dict
from robot_policy.hardware.config import HardwareConfig, load_hardware_config
from robot_policy.hardware.safety import CommandRejected, SafetyLayer


def _cfg(**kw) -> HardwareConfig:
    base = dict(
        name="test_arm",
        joint_names=["j1", "j2"],
        position_lower=[-1.0, -2.0],
        position_upper=[1.0, 2.0],
        velocity_limits=[1.0, 0.5],
        control_hz=10.0,
        watchdog_timeout=0.3,
    )
    base.update(kw)
    return from_dict(HardwareConfig, base)


def test_config_rejects_mismatched_limits_and_unknown_keys():
    with pytest.raises(ConfigError, match="position_upper has 1 entries"):
        _cfg(position_upper=[1.0])
    with pytest.raises(ConfigError, match="unknown field"):
        _cfg(joint_limit=[1.0])
    with pytest.raises(ConfigError, match="lower"):
        _cfg(position_lower=[2.0, -2.0])
    cfg = _cfg()
    assert cfg.command_names == ["j1", "j2", "gripper"] and cfg.command_dim == 3


def test_rejects_nan_inf_and_wrong_length_without_executing():
    s = SafetyLayer(_cfg())
    s.submit([0.5, 0.5, 0.0], now=0.0, valid_for=10)
    for bad in ([np.nan, 0.0, 0.0], [0.0, np.inf, 0.0], [0.1, 0.2], [0.1, 0.2, 0.3, 0.4], None):
        with pytest.raises(CommandRejected):
            s.submit(bad, now=0.0)
    assert s.status.rejected == 5 and "non-finite" in s.status.reasons[0] and "entries" in s.status.reasons[2]
    # The last valid command is still the one executed.
    out = None
    for k in range(40):
        out = s.step([0.0, 0.0, 0.0], now=0.1 * k)
    np.testing.assert_allclose(out, [0.5, 0.5, 0.0])


def test_clamps_positions_and_limits_velocity():
    s = SafetyLayer(_cfg())
    s.step([0.0, 0.0, 0.0], now=0.0)
    target = s.submit([5.0, -5.0, 3.0], now=0.0, valid_for=100)
    np.testing.assert_allclose(target, [1.0, -2.0, 1.0])
    assert s.status.clamped == 1
    out = s.step([0.0, 0.0, 0.0], now=0.1)
    # At most vel*dt per tick: 1.0*0.1 and 0.5*0.1; the gripper is not rate-limited.
    np.testing.assert_allclose(out, [0.1, -0.05, 1.0])
    for k in range(2, 100):
        out = s.step(out, now=0.1 * k)
    np.testing.assert_allclose(out, [1.0, -2.0, 1.0])


def test_watchdog_stops_at_the_last_target_without_reversing_and_releases_on_fresh_command():
    s = SafetyLayer(_cfg())
    s.step([0.0, 0.0, 0.0], now=0.0)
    s.submit([1.0, 0.0, 0.0], now=0.0)
    s.step([0.0, 0.0, 0.0], now=0.1)
    last_sent = s.step([0.1, 0.0, 0.0], now=0.2)  # rate-limited: 0.2, the arm lags at 0.15
    assert not s.status.watchdog_tripped
    held = s.step([0.15, 0.0, 0.0], now=0.5)  # 0.5 > 0 + 0.3 timeout
    assert s.status.watchdog_tripped
    # The lagging arm is not sent back to where it measured; it stops at the last target.
    np.testing.assert_allclose(held, last_sent)
    np.testing.assert_allclose(held, [0.2, 0.0, 0.0])
    np.testing.assert_allclose(s.step([0.16, 0.0, 0.0], now=0.6), held)
    s.submit([1.0, 0.0, 0.0], now=0.7)
    assert not s.status.watchdog_tripped
    assert s.step([0.15, 0.0, 0.0], now=0.8)[0] > held[0]


def test_a_blocked_arm_is_held_near_where_it_is_not_pushed_towards_the_target():
    from robot_policy.hardware.safety import HOLD_LEAD_S

    s = SafetyLayer(_cfg())
    s.step([0.0, 0.0, 0.0], now=0.0)
    s.submit([1.0, -2.0, 1.0], now=0.0, valid_for=10)
    for k in range(1, 11):
        s.step([0.0, 0.0, 0.0], now=0.1 * k)  # the target runs 1 rad ahead; the arm is stuck
    s.estop()
    held = s.step([0.0, 0.0, 0.0], now=1.1)
    # At most HOLD_LEAD_S of motion ahead of the measured position; the gripper keeps its command.
    np.testing.assert_allclose(held, [1.0 * HOLD_LEAD_S, -0.5 * HOLD_LEAD_S, 1.0])


def test_trajectory_validity_extends_watchdog():
    s = SafetyLayer(_cfg())
    s.step([0.0, 0.0, 0.0], now=0.0)
    s.submit([0.2, 0.0, 0.0], now=0.0, valid_for=1.0)
    s.step([0.0, 0.0, 0.0], now=1.2)
    assert not s.status.watchdog_tripped
    s.step([0.0, 0.0, 0.0], now=1.4)
    assert s.status.watchdog_tripped


def test_estop_latches_until_reset():
    s = SafetyLayer(_cfg())
    s.step([0.0, 0.0, 0.0], now=0.0)
    s.submit([1.0, 1.0, 0.0], now=0.0, valid_for=10)
    s.step([0.0, 0.0, 0.0], now=0.1)
    s.estop()
    held = s.step([0.1, 0.05, 0.0], now=0.2)
    np.testing.assert_allclose(held, [0.1, 0.05, 0.0])
    with pytest.raises(CommandRejected, match="e-stop"):
        s.submit([0.5, 0.5, 0.0], now=0.3)
    np.testing.assert_allclose(s.step([0.1, 0.05, 0.0], now=0.4), held)
    s.reset_estop()
    # Reset alone does not move the arm: it waits for a fresh command.
    np.testing.assert_allclose(s.step([0.1, 0.05, 0.0], now=0.5), held)
    s.submit([0.5, 0.5, 0.0], now=0.6, valid_for=10)
    assert s.step([0.1, 0.05, 0.0], now=0.7)[0] > 0.1


def test_shipped_hardware_configs_load():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "hardware").glob("*.yaml"))
    assert files, "hardware/*.yaml should ship at least one robot setup"
    for f in files:
        cfg = load_hardware_config(f)
        assert cfg.command_dim == len(cfg.joint_names) + (1 if cfg.gripper_joint else 0)


def test_trajectory_feed_commands_the_exact_last_point_when_ticks_miss_it():
    from robot_policy.hardware.trajectory import TrajectoryExecutor

    s, ex = SafetyLayer(_cfg(velocity_limits=[10.0, 10.0])), TrajectoryExecutor()
    s.step([0.0, 0.0, 0.0], now=0.0)
    ex.set(0.0, [0.25], [[0.5, 0.5, 0.0]], now=0.0, current=np.zeros(3))
    out = None
    for k in range(6):  # ticks at 0.0, 0.1, 0.2 (sample 0.4), 0.3 (past the end at 0.25), ...
        ex.feed(s, 0.1 * k)
        out = s.step([0.0, 0.0, 0.0], now=0.1 * k)
    np.testing.assert_allclose(out, [0.5, 0.5, 0.0])  # not the 0.2 s sample (0.4)
