"""The arm contract, the ARMS registry and the shared ArmController, with a trivial in-test arm.

The fake arm reaches every target it is sent (perfect tracking) and records what reached it, so
the tests can check what the controller let through: never a NaN, never an out-of-limit value,
nothing while the e-stop is latched, a hold where the arm is after a fault.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from robot_policy.config import ConfigError, from_dict
from robot_policy.hardware.config import HardwareConfig, load_hardware_config
from robot_policy.robots import (
    ARMS,
    Arm,
    ArmConfig,
    ArmController,
    ArmError,
    Gripper,
    GripperState,
    SDKMissing,
    arm_config_from,
    make_arm,
)
from robot_policy.robots.base import import_sdk
from robot_policy.types import JointState

WAIT = 30.0  # generous upper bound for "eventually" on a loaded 2-core machine (never asserted on)


def _hw(**kw) -> HardwareConfig:
    base = dict(
        name="fake_arm",
        arm="fake",
        joint_names=["j1", "j2"],
        position_lower=[-1.0, -2.0],
        position_upper=[1.0, 2.0],
        velocity_limits=[2.0, 2.0],
        gripper_joint="finger",
        watchdog_timeout=30.0,
    )
    base.update(kw)
    return from_dict(HardwareConfig, base)


@dataclass
class FakeConfig(ArmConfig):
    """Config of the in-test arm."""

    recover_failures: int = 0
    """recover() raises this many times before it succeeds."""


class FakeGripper(Gripper):
    def __init__(self):
        self.commands: list[float] = []
        self.value = -1.0
        self.stops = 0

    def command(self, value: float) -> None:
        if value != self.value:
            self.commands.append(value)
        self.value = value

    def read(self) -> GripperState:
        return GripperState(width=self.value_to_width(self.value, self.max_width), stamp=time.monotonic())

    def stop(self) -> None:
        self.stops += 1


class FakeArm(Arm):
    """Reaches each target at once; can lose its link; records everything that reached it."""

    config_class = FakeConfig
    name = "fake"
    native_hz = 200.0

    def __init__(self, config: FakeConfig, hw: HardwareConfig, gripper: bool = True):
        super().__init__(config, hw)
        self.q = np.zeros(self.n_joints)
        self.sent: list[np.ndarray] = []
        self.events: list[str] = []
        self.link_up = True
        self.is_connected = False
        self.recover_calls = 0
        self.read_gate = threading.Event()
        self.read_gate.set()
        self._with_gripper = gripper

    @property
    def connected(self) -> bool:
        return self.is_connected and self.link_up

    def connect(self) -> None:
        if not self.link_up:
            raise ArmError("fake: connection refused")
        self.is_connected = True
        self.gripper = FakeGripper() if self._with_gripper else None
        self.events.append("connect")

    def disconnect(self) -> None:
        self.is_connected = False
        self.events.append("disconnect")

    def recover(self) -> None:
        self.recover_calls += 1
        if self.config.recover_failures > 0:
            self.config.recover_failures -= 1
            raise ArmError("fake: still unreachable")
        self.link_up = True
        self.events.append("recovered")

    def read(self) -> JointState:
        self.read_gate.wait()
        if not self.link_up:
            raise ArmError("fake: link down")
        return JointState(
            self.q.copy(), time.monotonic(), np.zeros(self.n_joints), tuple(self.hw.joint_names)
        )

    def _send(self, q, dq):
        self.sent.append(q.copy())
        self.events.append("write")
        self.q = q.copy()
        return q.copy()

    def stop(self) -> None:
        self.events.append("stop")

    def status(self) -> dict:
        return {"connected": self.connected, "mode": "fake", "faults": [], "protective_stop": False}


def wait_until(pred, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def ctl():
    arm = FakeArm(FakeConfig(recover_min_s=0.02, recover_max_s=0.05), _hw())
    with ArmController(arm) as c:
        c.wait_for_state(WAIT)
        yield c


# -- contract and registry -------------------------------------------------------------------
def test_write_checks_everything_before_the_sdk():
    arm = FakeArm(FakeConfig(), _hw())
    arm.connect()
    for bad, match in (
        ([0.1], "1 entries, expected 2"),
        ([np.nan, 0.0], "non-finite"),
        ([0.0, 2.5], "outside"),
    ):
        with pytest.raises(ValueError, match=match):
            arm.write(bad)
    with pytest.raises(ValueError, match="velocity"):
        arm.write([0.0, 0.0], [np.inf, 0.0])
    assert arm.sent == []
    np.testing.assert_allclose(arm.write([0.5, -1.5]), [0.5, -1.5])
    arm.disconnect()
    with pytest.raises(ArmError, match="not connected"):
        arm.write([0.0, 0.0])


def test_registry_has_the_backends_and_unknown_names_are_config_errors():
    assert {"franka", "ur_rtde", "xarm", "sim", "ros2_control"} <= set(ARMS.names())
    with pytest.raises(ConfigError, match="unknown arm backend 'kuka'.*known: .*franka"):
        make_arm(_hw(arm="kuka"))
    with pytest.raises(ValueError, match="already registered"):
        ARMS.register("franka")(FakeArm)


def test_arm_config_is_typed_and_rejects_unknown_keys():
    hw = load_hardware_config("ur5e")
    hw.arm_config = {**hw.arm_config, "lookahed_time": 0.1}
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['lookahed_time'\]"):
        arm_config_from(hw)
    hw.arm_config = {"hostname": "10.0.0.1", "gain": 5000}
    with pytest.raises(ConfigError, match=r"gain must be in \[100, 2000\]"):
        arm_config_from(hw)
    hw.arm_config = {"hostname": "10.0.0.1", "frequency": "fast"}
    with pytest.raises(ConfigError, match="frequency: expected a number"):
        arm_config_from(hw)


@pytest.mark.parametrize("name", ["fr3", "fr3_sim", "ur5e", "xarm7", "sim_tabletop"])
def test_shipped_hardware_configs_make_their_arm_without_the_sdk_being_touched(name):
    hw = load_hardware_config(name)
    arm = make_arm(hw)
    assert arm.name == hw.arm and not arm.connected and arm.control_hz > 0
    assert len(hw.joint_names) == arm.n_joints


def test_importing_the_package_imports_no_sdk():
    code = (
        "import sys, robot_policy.robots as r; "
        "print(sorted(m for m in ('franky', 'franky_sim', 'rtde_control', 'rtde_receive', 'xarm', 'mujoco', "
        "'rclpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "name, modules, extra",
    [("fr3", ["franky"], "franka"), ("ur5e", ["rtde_control"], "ur"), ("xarm7", ["xarm"], "xarm")],
)
def test_missing_sdk_names_the_pip_extra(monkeypatch, name, modules, extra):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # makes `import m` fail like an absent package
    if name == "xarm7":
        monkeypatch.setitem(sys.modules, "xarm.wrapper", None)
    arm = make_arm(load_hardware_config(name))
    with pytest.raises(SDKMissing, match=rf"pip install 'robot_policy\[{extra}\]'"):
        arm.connect()
    with pytest.raises(SDKMissing, match="no_such_sdk"):
        import_sdk("no_such_sdk", backend="x", package="no-such-sdk", extra="x")


# -- controller ------------------------------------------------------------------------------
def test_trajectory_is_interpolated_to_its_target_in_the_loop_thread(ctl):
    arm: FakeArm = ctl.arm
    assert ctl._thread.name == "arm-fake" and ctl._thread is not threading.current_thread()
    assert ctl.submit_trajectory([0.2, 0.4], [[0.2, -0.3, 1.0], [0.4, -0.6, 1.0]])
    wait_until(lambda: np.allclose(arm.q, [0.4, -0.6]), "the trajectory's last point")
    path = np.array(arm.sent)
    assert len(path) > 5, "targets are streamed, not jumped to"
    assert np.all(np.diff(path[:, 0]) >= -1e-12) and np.all(np.diff(path[:, 1]) <= 1e-12)
    g = arm.gripper.commands  # interpolated like the joints, from open (-1) to closed (1)
    assert g[-1] == 1.0 and np.all(np.diff(g) > 0)
    st = ctl.state()
    assert st.names == ("j1", "j2", "finger") and st.position[-1] == pytest.approx(0.0)  # closed width
    assert ctl.last_command().position.tolist() == pytest.approx([0.4, -0.6, 1.0])


def test_nan_and_out_of_limit_commands_never_reach_the_arm(ctl):
    arm: FakeArm = ctl.arm
    assert not ctl.submit_target([np.nan, 0.0, 0.0])
    assert not ctl.submit_trajectory([0.1, 0.2], [[0.1, 0.1, 0.0], [np.inf, 0.1, 0.0]])
    assert not ctl.submit_trajectory([0.1], [[0.1, 0.1]])  # wrong width
    assert not ctl.submit_trajectory([0.2, 0.1], [[0.1, 0.1, 0.0], [0.1, 0.1, 0.0]])  # times not increasing
    assert ctl.status()["rejected"] == 4
    assert ctl.submit_target([5.0, -5.0, 0.0])  # clamped, not rejected
    wait_until(lambda: np.allclose(arm.q, [1.0, -2.0]), "the clamped target")
    sent = np.array(arm.sent)
    assert np.isfinite(sent).all() and (sent <= [1.0, 2.0]).all() and (sent >= [-1.0, -2.0]).all()
    assert ctl.status()["clamped"] >= 1


def test_estop_stops_at_once_refuses_commands_and_reset_holds_where_the_arm_is(ctl):
    arm: FakeArm = ctl.arm
    assert ctl.submit_trajectory([20.0], [[0.9, 0.0, 0.0]])
    wait_until(lambda: arm.q[0] > 0.01, "motion to start")
    ctl.estop()
    wait_until(lambda: "stop" in arm.events, "arm.stop()")
    n = len(arm.sent)
    q_stopped = arm.q.copy()
    assert not ctl.submit_target([0.0, 0.0, 0.0]) and "e-stop" in ctl.status()["last_rejection"]
    assert not ctl.submit_trajectory([0.1], [[0.0, 0.0, 0.0]]) and not ctl.status()["trajectory_active"]
    ticks = ctl.status()["ticks"]
    wait_until(lambda: ctl.status()["ticks"] > ticks + 20, "more ticks")
    assert len(arm.sent) == n, "nothing is written while the e-stop is latched"
    assert arm.gripper.stops == 1 and ctl.status()["estopped"]
    ctl.reset_estop()
    wait_until(lambda: len(arm.sent) > n + 5, "hold targets after reset")
    np.testing.assert_allclose(arm.sent[n], q_stopped)  # holds where it stopped: no jump back
    assert q_stopped[0] < 0.9
    assert ctl.submit_target([0.0, 0.0, -1.0])
    wait_until(lambda: np.allclose(arm.q, 0.0), "a fresh command after reset")


def test_watchdog_holds_when_forward_commands_stop():
    arm = FakeArm(FakeConfig(), _hw(watchdog_timeout=0.2, velocity_limits=[0.2, 0.2]))
    with ArmController(arm) as c:
        c.wait_for_state(WAIT)
        assert c.submit_target([0.9, 0.0, 0.0])  # 4.5 s away at 0.2 rad/s
        wait_until(lambda: c.status()["watchdog_tripped"], "the watchdog")
        q_hold = arm.q.copy()
        n = len(arm.sent)
        wait_until(lambda: len(arm.sent) > n + 20, "more ticks")
        np.testing.assert_allclose(arm.sent[-1], q_hold)
        assert q_hold[0] < 0.9


def test_fault_is_reported_loop_survives_and_recovery_holds(ctl):
    arm: FakeArm = ctl.arm
    arm.config.recover_failures = 2
    assert ctl.submit_trajectory([30.0], [[0.9, 0.0, 0.0]])
    wait_until(lambda: arm.q[0] > 0.01, "motion to start")
    arm.link_up = False  # the cable is pulled
    wait_until(lambda: ctl.status()["fault"], "the fault")
    st = ctl.status()
    assert "link down" in st["fault"] and st["running"] and not st["trajectory_active"]
    assert not ctl.submit_target([0.0, 0.0, 0.0]) and "arm fault" in ctl.status()["last_rejection"]
    wait_until(lambda: ctl.status()["recoveries"] == 1, "recovery after two failed attempts")
    assert arm.recover_calls == 3 and ctl.status()["fault"] == "" and ctl.status()["fault_count"] == 1
    n = len(arm.sent)
    wait_until(lambda: len(arm.sent) > n + 5, "ticks after recovery")
    np.testing.assert_allclose(arm.sent[n], arm.sent[-1])  # holding still, the old trajectory is gone
    assert ctl.submit_target([0.0, 0.0, 0.0])


def test_recovery_waits_for_the_caller_when_auto_recover_is_off():
    arm = FakeArm(FakeConfig(auto_recover=False), _hw())
    with ArmController(arm) as c:
        c.wait_for_state(WAIT)
        arm.link_up = False
        wait_until(lambda: c.status()["fault"], "the fault")
        ticks = c.status()["ticks"]
        wait_until(lambda: c.status()["ticks"] > ticks + 20, "more ticks")
        assert arm.recover_calls == 0
        c.recover()
        wait_until(lambda: c.status()["recoveries"] == 1, "recovery on request")


def test_commands_do_not_wait_for_a_blocked_sdk_call(ctl):
    arm: FakeArm = ctl.arm
    arm.read_gate.clear()  # the loop thread is now stuck inside arm.read()
    time.sleep(0.05)
    done = threading.Event()
    threading.Thread(target=lambda: (ctl.submit_target([0.1, 0.1, 0.0]), ctl.status(), done.set())).start()
    assert done.wait(10.0), "submit/status blocked on the SDK call"
    arm.read_gate.set()


def test_gripper_joint_without_a_gripper_is_refused():
    with pytest.raises(ValueError, match="gripper_joint: null"):
        ArmController(FakeArm(FakeConfig(), _hw(), gripper=False)).start()
    arm = FakeArm(FakeConfig(), _hw(gripper_joint=None), gripper=False)
    with ArmController(arm) as c:
        assert c.wait_for_state(WAIT).names == ("j1", "j2")
        assert c.submit_target([0.1, 0.1])


def test_commands_before_the_first_state_are_refused():
    c = ArmController(FakeArm(FakeConfig(), _hw()))
    assert not c.submit_target([0.0, 0.0, 0.0])
    assert "no arm state yet" in c.status()["last_rejection"]
