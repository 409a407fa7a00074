"""Teleop devices at their boundary: terminal bytes (keyboard), SDL events (gamepad, real pygame),
HID reports (SpaceMouse), servo packets on a pseudo-terminal (leader arms, real SDKs). Each with
bad reports and a device that disappears mid-episode: the error is clear and no motion comes of it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from robot_policy.config import ConfigError
from robot_policy.hardware.config import load_hardware_config
from robot_policy.teleop import (
    TELEOPS,
    DeviceDisconnected,
    DeviceNotFound,
    TeleopCommand,
    TeleopError,
    TeleopEvent,
    TeleopSession,
    make_teleop,
)

HW = load_hardware_config("sim_tabletop")
Q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])


def obs(q=Q0):
    return {"joint_pos": np.asarray(q, dtype=np.float32), "gripper": np.array([0.08], np.float32)}


def test_registry_lists_every_device_and_options_are_checked():
    assert TELEOPS.names() == ["gamepad", "keyboard", "leader", "scripted", "spacemouse"]
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['deadmen'\].*deadman_button"):
        make_teleop("gamepad", HW, {"deadmen": 4})
    with pytest.raises(ConfigError, match="unknown teleop device 'joystick'; known: gamepad"):
        make_teleop("joystick", HW)
    with pytest.raises(TeleopError, match="one of joints/twist/pose"):
        TeleopCommand(0.0, joints=np.zeros(7), twist=np.zeros(6))
    with pytest.raises(TeleopError, match="twist has non-finite"):
        TeleopCommand(0.0, twist=[0, 0, np.nan, 0, 0, 0])


# -- keyboard: the terminal's byte stream ------------------------------------------------------


@pytest.fixture
def keyboard():
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as stream:
        dev = make_teleop("keyboard", HW, {"step": 0.1}, stream=stream)
        dev.connect()
        yield dev, w
        dev.disconnect()
    try:
        os.close(w)
    except OSError:
        pass


def test_keyboard_jogs_from_the_measured_pose_and_gives_events(keyboard):
    dev, w = keyboard
    cmd = dev.read(obs())
    assert not cmd.intervening and cmd.joints is None and cmd.events == ()
    os.write(w, b"qq")  # joint 1 up twice: takes control from where the arm is
    cmd = dev.read(obs())
    assert cmd.intervening
    np.testing.assert_allclose(cmd.joints, Q0 + [0.2, 0, 0, 0, 0, 0, 0], atol=1e-6)
    os.write(w, b"s ")  # joint 2 down, gripper toggles
    cmd = dev.read(obs(Q0 + 0.5))  # the measured pose no longer matters: jogging continues
    np.testing.assert_allclose(cmd.joints[:2], [0.2, -0.4], atol=1e-6)
    assert cmd.gripper == 1.0
    os.write(w, b"nmlkbxz")
    cmd = dev.read(obs())
    assert cmd.events == (
        TeleopEvent.START,
        TeleopEvent.SUCCESS,
        TeleopEvent.FAILURE,
        TeleopEvent.STOP,
        TeleopEvent.DISCARD,
        TeleopEvent.ESTOP,
        TeleopEvent.ESTOP_RESET,
    )
    assert not cmd.intervening  # a new episode / e-stop: control back, resync on the next key
    os.write(w, b"i")
    assert dev.read(obs()).intervening
    os.write(w, b"i")
    assert not dev.read(obs()).intervening


def test_keyboard_skips_escape_sequences_and_unknown_keys(keyboard):
    dev, w = keyboard
    os.write(w, b"\x1b[A\x1b[1;5C?")  # arrow up, ctrl-right, an unused key
    cmd = dev.read(obs())
    assert cmd.joints is None and not cmd.intervening
    assert dev.stats.bad_reports == 3
    os.write(w, b"\x1b[")  # a sequence split across reads does not leak its tail as keys
    dev.read(obs())
    os.write(w, b"Bq")
    cmd = dev.read(obs())
    assert cmd.intervening and cmd.joints[0] == pytest.approx(0.1)
    assert cmd.joints[1] == pytest.approx(Q0[1])  # 'B' (arrow down's final byte) was not a key


def test_keyboard_terminal_closing_is_a_clear_disconnect(keyboard):
    dev, w = keyboard
    os.write(w, b"q")
    assert dev.read(obs()).intervening
    os.close(w)
    with pytest.raises(DeviceDisconnected, match="terminal closed.*arm holds"):
        dev.read(obs())


def test_keyboard_outside_a_terminal_says_where_to_run_it():
    dev = make_teleop("keyboard", HW)  # pytest's stdin is not a terminal
    with pytest.raises(TeleopError, match="terminal"):
        dev.connect()


# -- gamepad: SDL events through the real pygame event queue -----------------------------------


@pytest.fixture
def pad(monkeypatch):
    pygame = pytest.importorskip("pygame")
    from teleop_fakes import FakeJoystick

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setattr(pygame.joystick, "get_count", lambda: 1)
    monkeypatch.setattr(pygame.joystick, "Joystick", lambda i: FakeJoystick(pygame, i, count=1))
    dev = make_teleop("gamepad", HW, sdk=pygame)
    dev.connect()
    yield dev, pygame
    dev.disconnect()


def _post(pg, kind, **kw):
    pg.event.post(pg.event.Event(kind, instance_id=kw.pop("instance_id", 100), **kw))


def test_gamepad_twist_only_while_the_deadman_is_held(pad):
    dev, pg = pad
    _post(pg, pg.JOYAXISMOTION, axis=1, value=-1.0)  # left stick fully forward
    cmd = dev.read()
    assert not cmd.intervening and cmd.twist is None  # stick without deadman: nothing
    _post(pg, pg.JOYBUTTONDOWN, button=5)
    cmd = dev.read()
    assert cmd.intervening
    np.testing.assert_allclose(cmd.twist, [0.15, 0, 0, 0, 0, 0])  # +x at max_linear
    _post(pg, pg.JOYAXISMOTION, axis=1, value=-0.05)  # inside the deadzone: zero, not creep
    _post(pg, pg.JOYAXISMOTION, axis=3, value=0.55)  # right stick right: yaw, rescaled past the deadzone
    cmd = dev.read()
    np.testing.assert_allclose(cmd.twist, [0, 0, 0, 0, 0, -0.6 * 0.5], atol=1e-9)
    _post(pg, pg.JOYAXISMOTION, axis=2, value=1.0)  # LT: close
    assert dev.read().gripper == 1.0
    _post(pg, pg.JOYBUTTONUP, button=5)
    cmd = dev.read()
    assert not cmd.intervening and cmd.twist is None and cmd.gripper == 1.0


def test_gamepad_buttons_are_events_once_per_press_and_other_pads_are_ignored(pad):
    dev, pg = pad
    _post(pg, pg.JOYBUTTONDOWN, button=3)  # Y: success
    _post(pg, pg.JOYBUTTONDOWN, button=5, instance_id=7)  # another pad's deadman
    cmd = dev.read()
    assert cmd.events == (TeleopEvent.SUCCESS,) and not cmd.intervening
    assert dev.read().events == ()  # still held: no repeat
    _post(pg, pg.JOYBUTTONUP, button=3)
    _post(pg, pg.JOYBUTTONDOWN, button=1)  # B: e-stop
    assert dev.read().events == (TeleopEvent.ESTOP,)


def test_gamepad_bad_events_are_dropped_and_counted(pad):
    dev, pg = pad
    _post(pg, pg.JOYBUTTONDOWN, button=5)
    _post(pg, pg.JOYAXISMOTION, axis=17, value=0.5)
    _post(pg, pg.JOYAXISMOTION, axis=0, value=3.0)
    _post(pg, pg.JOYAXISMOTION, axis=0, value=float("nan"))
    _post(pg, pg.JOYBUTTONDOWN, button=40)
    cmd = dev.read()
    np.testing.assert_array_equal(cmd.twist, np.zeros(6))
    assert dev.stats.bad_reports == 4 and "button 40" in dev.stats.last_bad


def test_gamepad_removed_mid_episode_raises_a_clear_error(pad):
    dev, pg = pad
    _post(pg, pg.JOYBUTTONDOWN, button=5)
    assert dev.read().intervening
    _post(pg, pg.JOYDEVICEREMOVED)
    with pytest.raises(DeviceDisconnected, match="gamepad 'Xbox Controller' was disconnected.*arm holds"):
        dev.read()


def test_gamepad_not_attached_or_mapping_beyond_the_pad(monkeypatch):
    pygame = pytest.importorskip("pygame")
    from teleop_fakes import FakeJoystick

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setattr(pygame.joystick, "get_count", lambda: 0)
    with pytest.raises(DeviceNotFound, match="SDL sees 0 joystick"):
        make_teleop("gamepad", HW, sdk=pygame).connect()
    monkeypatch.setattr(pygame.joystick, "get_count", lambda: 1)
    monkeypatch.setattr(pygame.joystick, "Joystick", lambda i: FakeJoystick(pygame, i, 1, axes=4, buttons=6))
    with pytest.raises(TeleopError, match="has 4 axes and 6 buttons.*axes \\[0, 1, 2, 3, 4, 5\\]"):
        make_teleop("gamepad", HW, sdk=pygame).connect()


# -- SpaceMouse: HID input reports ---------------------------------------------------------------


def _axes(report_id: int, *values: int) -> bytes:
    return bytes([report_id]) + b"".join(int(v).to_bytes(2, "little", signed=True) for v in values)


@pytest.fixture
def spacemouse():
    from teleop_fakes import FakeHid

    hid = FakeHid()
    hid.add(b"/dev/hidraw3", 0x256F, 0xC635)  # SpaceMouse Compact: split reports
    dev = make_teleop("spacemouse", HW, {"release_after_s": 0.0}, sdk=hid)
    dev.connect()
    yield dev, hid
    dev.disconnect()


def test_spacemouse_reports_become_a_twist_and_motion_is_intervention(spacemouse):
    dev, hid = spacemouse
    assert dev.model == "SpaceMouseCompact"
    cmd = dev.read()
    assert not cmd.intervening and cmd.twist is None
    # Raw y = -350 (full push forward: HID y is positive toward the user) -> +x of the base.
    hid.feed(b"/dev/hidraw3", _axes(1, 0, -350, 0))
    cmd = dev.read()
    assert cmd.intervening
    np.testing.assert_allclose(cmd.twist, [0.15, 0, 0, 0, 0, 0], atol=1e-9)
    hid.feed(b"/dev/hidraw3", _axes(2, 0, 0, 175), _axes(1, 0, 0, 0))  # yaw half, translation released
    cmd = dev.read()
    np.testing.assert_allclose(cmd.twist, [0, 0, 0, 0, 0, 0.3], atol=1e-9)
    hid.feed(b"/dev/hidraw3", _axes(2, 0, 0, 0))
    assert not dev.read().intervening  # at rest (release_after_s 0): control back
    hid.feed(b"/dev/hidraw3", bytes([3, 0b01, 0]))  # left button: close, and intervention while held
    cmd = dev.read()
    assert cmd.gripper == 1.0 and cmd.intervening
    hid.feed(b"/dev/hidraw3", bytes([3, 0b10, 0]))
    assert dev.read().gripper == -1.0


def test_spacemouse_combined_layout_parses_six_axes():
    from robot_policy.teleop.spacemouse import parse_report

    axes, buttons = parse_report(_axes(1, 350, 0, 0, 0, 0, -350), combined=True)
    assert buttons is None and axes[0] == 1.0 and axes[5] == -1.0 and len(axes) == 6


def test_spacemouse_bad_reports_never_move_the_arm(spacemouse):
    dev, hid = spacemouse
    hid.feed(
        b"/dev/hidraw3",
        bytes([1, 0x10]),  # truncated
        bytes([9, 0, 0, 0, 0, 0, 0]),  # unknown report id
        _axes(1, 0, 30000, 0),  # impossible deflection
        bytes([]),
    )
    cmd = dev.read()
    assert not cmd.intervening and cmd.twist is None
    assert dev.stats.bad_reports == 3 and "beyond" in dev.stats.last_bad


def test_spacemouse_unplugged_mid_episode_and_not_attached():
    from teleop_fakes import FakeHid

    hid = FakeHid()
    with pytest.raises(DeviceNotFound, match="no SpaceMouse.*\\(none\\).*udev"):
        make_teleop("spacemouse", HW, sdk=hid).connect()
    hid.add(b"/dev/hidraw1", 0x046D, 0xC52B)  # a Logitech receiver, not a SpaceMouse
    with pytest.raises(DeviceNotFound, match="046d:c52b"):
        make_teleop("spacemouse", HW, sdk=hid).connect()
    hid.add(b"/dev/hidraw3", 0x256F, 0xC62E)  # SpaceMouse Wireless: combined reports
    dev = make_teleop("spacemouse", HW, sdk=hid)
    dev.connect()
    hid.feed(b"/dev/hidraw3", _axes(1, 100, 0, 0, 0, 0, 0))
    assert dev.read().intervening
    hid.unplug(b"/dev/hidraw3")
    with pytest.raises(DeviceDisconnected, match="SpaceMouseWireless: read failed.*arm holds"):
        dev.read()


# -- leader arms: real servo SDKs on an emulated bus ---------------------------------------------


def _calibration(bus: str, n: int = 7):
    from robot_policy.teleop.leader import LeaderCalibration, LeaderGripper, LeaderJoint

    joints = [LeaderJoint(id=i + 1, sign=(-1 if i % 2 else 1), offset=np.pi) for i in range(n)]
    return LeaderCalibration(
        bus=bus, joints=joints, gripper=LeaderGripper(id=n + 1, open=np.pi, closed=np.pi + 1.0)
    )


def _ticks(rad: float) -> int:
    return int(round(rad * 4096 / (2 * np.pi)))


@pytest.mark.parametrize("bus", ["dynamixel", "feetech"])
def test_leader_maps_servo_angles_to_follower_joints(bus):
    pytest.importorskip({"dynamixel": "dynamixel_sdk", "feetech": "scservo_sdk"}[bus])
    from servo_bus_emulator import ServoBusEmulator

    cal = _calibration(bus)
    q = np.array([0.3, -0.2, 0.1, -1.0, 0.5, 1.2, -0.4])
    sign = np.array([j.sign for j in cal.joints])
    raw = {j.id: _ticks(np.pi + s * qi) for j, s, qi in zip(cal.joints, sign, q)}
    raw[8] = _ticks(np.pi + 0.75)  # gripper 3/4 of the way to closed
    em = ServoBusEmulator(bus, raw)
    try:
        dev = make_teleop("leader", HW, {"port": em.port}, calibration=cal)
        dev.connect()
        cmd = dev.read(obs())
        assert cmd.intervening
        np.testing.assert_allclose(cmd.joints, q, atol=2 * np.pi / 4096)
        assert cmd.gripper == pytest.approx(0.5, abs=0.01)
        # The session turns it into a command-order target: joints, then the gripper.
        out = TeleopSession(dev, HW).step(obs())
        np.testing.assert_allclose(out.target, [*q, 0.5], atol=0.01)
        dev.disconnect()
    finally:
        em.close()


def test_leader_bus_hiccups_reuse_the_last_reading_then_disconnect():
    pytest.importorskip("dynamixel_sdk")
    from servo_bus_emulator import ServoBusEmulator

    cal = _calibration("dynamixel")
    em = ServoBusEmulator("dynamixel", {i: 2048 for i in range(1, 9)})
    try:
        dev = make_teleop("leader", HW, {"port": em.port, "max_failures": 3}, calibration=cal)
        dev.connect()
        first = dev.read(obs()).joints
        em.set_position(1, 2048 + 100)
        em.corrupt(1)  # a reply with a bad CRC: the SDK rejects it
        np.testing.assert_array_equal(dev.read(obs()).joints, first)  # last good reading, no jump
        assert dev.stats.bad_reports == 1 and "Incorrect status packet" in dev.stats.last_bad
        assert dev.read(obs()).joints[0] == pytest.approx(100 * 2 * np.pi / 4096)
        em.silence([3])  # one servo stops answering (cable loose)
        dev.read(obs())
        dev.read(obs())
        with pytest.raises(DeviceDisconnected, match="3 failed reads in a row.*no status packet.*arm holds"):
            dev.read(obs())
    finally:
        em.close()


def test_leader_unplugged_mid_episode_and_missing_port(tmp_path):
    pytest.importorskip("scservo_sdk")
    from servo_bus_emulator import ServoBusEmulator

    cal = _calibration("feetech")
    with pytest.raises(DeviceNotFound, match="cannot open serial port .*nope.*dialout"):
        make_teleop("leader", HW, {"port": str(tmp_path / "nope")}, calibration=cal).connect()
    em = ServoBusEmulator("feetech", {i: 2048 for i in range(1, 9)})
    dev = make_teleop("leader", HW, {"port": em.port}, calibration=cal)
    dev.connect()
    assert dev.read(obs()).intervening
    em.unplug()
    with pytest.raises(DeviceDisconnected, match="stopped answering.*serial port.*failed.*arm holds"):
        dev.read(obs())


def test_leader_motion_mode_takes_over_only_when_aligned():
    pytest.importorskip("dynamixel_sdk")
    from servo_bus_emulator import ServoBusEmulator

    cal = _calibration("dynamixel")
    rest = {j.id: _ticks(np.pi + j.sign * q) for j, q in zip(cal.joints, Q0)}
    rest[8] = _ticks(np.pi)
    em = ServoBusEmulator("dynamixel", rest)
    try:
        opts = {"port": em.port, "intervene": "motion", "release_after_s": 0.0}
        dev = make_teleop("leader", HW, opts, calibration=cal)
        dev.connect()
        assert not dev.read(obs()).intervening  # resting leader: the policy keeps control
        em.set_position(1, rest[1] + 40)  # ~0.06 rad: the human moves it, aligned with the arm
        cmd = dev.read(obs())
        assert cmd.intervening and cmd.joints[0] == pytest.approx(Q0[0] + 40 * 2 * np.pi / 4096)
        assert not dev.read(obs()).intervening  # rests again (release_after_s 0)
        em.set_position(1, rest[1] + 80)
        assert not dev.read(obs(Q0 + 0.6)).intervening  # arm elsewhere: refused, no yank
        assert "align it first" in dev.status()["last_refusal"]
        dev.disconnect()
    finally:
        em.close()


def test_leader_calibration_file_roundtrip_and_checks(tmp_path):
    from robot_policy.teleop.leader import LeaderCalibration, load_calibration

    raw = np.array([3.0, 3.5, 2.9, 1.5, 3.1, 4.0, 3.3])
    cal = LeaderCalibration.from_pose(
        "dynamixel", list(range(1, 8)), raw, Q0, [1, -1, 1, 1, -1, 1, 1], follower="sim_tabletop"
    )
    np.testing.assert_allclose(cal.to_joints(raw)[0], Q0, atol=1e-12)  # same pose -> same joints
    path = cal.save(tmp_path / "leader.json")
    back = load_calibration(path, "sim_tabletop", 7)
    assert back == cal
    with pytest.raises(ConfigError, match="made for 'sim_tabletop', not 'fr3'"):
        load_calibration(path, "fr3", 7)
    with pytest.raises(ConfigError, match="maps 7 joints.*has 6"):
        load_calibration(path, "sim_tabletop", 6)
    with pytest.raises(ConfigError, match="does not exist.*calibrate-leader"):
        load_calibration(tmp_path / "missing.json", "sim_tabletop", 7)
    (tmp_path / "bad.json").write_text('{"bus": "dynamixel", "joints": [{"id": 1, "sign": 2}]}')
    with pytest.raises(ConfigError, match="sign must be 1 or -1"):
        load_calibration(tmp_path / "bad.json", "sim_tabletop", 1)


def test_cli_lists_devices_and_calibrates_a_leader_on_the_bus(tmp_path, capsys):
    pytest.importorskip("dynamixel_sdk")
    from servo_bus_emulator import ServoBusEmulator

    from robot_policy.cli.main import main
    from robot_policy.teleop.leader import load_calibration

    assert main(["teleop", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in TELEOPS.names()) and "deadman_button" in out
    # Leader held in the follower's pose Q0; servo j reads pi + sign_j * Q0[j] (+ a horn offset).
    signs = [1, -1, 1, 1, -1, 1, 1]
    raw = {
        j + 1: _ticks(np.pi + s * q + (np.pi / 2 if j == 3 else 0.0))
        for j, (s, q) in enumerate(zip(signs, Q0))
    }
    raw[8] = _ticks(3.0)
    em = ServoBusEmulator("dynamixel", raw)
    try:
        args = [
            "teleop",
            "calibrate-leader",
            "--bus",
            "dynamixel",
            "--port",
            em.port,
            "--ids",
            "1,2,3,4,5,6,7",
        ]
        args += ["--signs", ",".join(map(str, signs)), "--gripper-id", "8", "--gripper-open", "3.0"]
        args += [
            "--gripper-closed",
            "3.8",
            "--pose",
            ",".join(map(str, Q0)),
            "--out",
            str(tmp_path / "l.json"),
        ]
        assert main(args) == 0
    finally:
        em.close()
    assert "wrote" in capsys.readouterr().out
    cal = load_calibration(tmp_path / "l.json", "sim_tabletop", 7)
    q, grip = cal.to_joints(np.array([raw[i] for i in range(1, 9)]) * 2 * np.pi / 4096)
    np.testing.assert_allclose(q, Q0, atol=2e-3)  # the same pose maps back to the follower's
    assert grip == pytest.approx(-1.0, abs=0.01)
    assert main(["teleop", "gamepad", "--set", "deadmen=3"]) == 2
    assert "unknown field(s) ['deadmen']" in capsys.readouterr().err
