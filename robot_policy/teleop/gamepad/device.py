"""Gamepad teleop through SDL (pygame): an end-effector twist while a deadman button is held.

As in gym-hil and LeRobot's gamepad teleop: holding the deadman button (default RB) means "I
have control" (the arbiter switches to the human at once); letting go hands control back. The
sticks give a Cartesian twist in the robot base frame, the triggers close / open the gripper,
face buttons give episode events. Defaults follow SDL's Xbox layout (axes 0 LX, 1 LY, 2 LT,
3 RX, 4 RY, 5 RT; buttons 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 Back, 7 Start).

The boundary is SDL's joystick event stream: axis motion, button up/down, device removed.
Reading events (instead of polling ``get_axis``) means a removed pad is noticed on the next read
(``JOYDEVICEREMOVED``), and every malformed event (an axis the pad does not have, a value
outside [-1, 1]) is dropped and counted, never turned into motion.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from robot_policy.teleop.base import (
    DeviceDisconnected,
    DeviceNotFound,
    EventLatch,
    TeleopCommand,
    TeleopConfig,
    TeleopDevice,
    TeleopError,
    TeleopEvent,
    import_sdk,
    register_teleop,
)


@dataclass
class GamepadConfig(TeleopConfig):
    """Gamepad mapping (SDL joystick numbering)."""

    index: int = 0
    """SDL joystick device index (0: the first pad)."""
    deadman_button: int = 5
    """Held: the human has control (RB)."""
    axes: list[int] = field(default_factory=lambda: [1, 0, 4, -1, -1, 3])
    """Axis driving each twist component (vx, vy, vz, wx, wy, wz); -1: none. Default: left stick
    moves in the table plane, right stick up/down moves vertically, right stick left/right yaws."""
    signs: list[float] = field(default_factory=lambda: [-1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    """Sign per twist component (SDL's stick y is positive down)."""
    deadzone: float = 0.1
    """Stick values below this magnitude count as zero (pads do not centre exactly)."""
    max_linear: float = 0.15
    """m/s at full stick deflection."""
    max_angular: float = 0.6
    """rad/s at full stick deflection."""
    gripper_close_axis: int = 2
    """Trigger that closes the gripper (LT); -1: none."""
    gripper_open_axis: int = 5
    """Trigger that opens the gripper (RT); -1: none."""
    trigger_threshold: float = 0.5
    """A trigger (rest -1, full 1) past this value acts."""
    buttons: dict[str, int] = field(
        default_factory=lambda: {"start": 7, "stop": 6, "success": 3, "failure": 0, "discard": 2, "estop": 1}
    )
    """Episode event -> button (events: start, stop, success, failure, discard, estop, estop_reset)."""

    def __post_init__(self) -> None:
        if len(self.axes) != 6 or len(self.signs) != 6:
            raise TeleopError(
                f"gamepad axes and signs need 6 entries (vx vy vz wx wy wz), got {len(self.axes)} and {len(self.signs)}"
            )
        if not 0 <= self.deadzone < 1:
            raise TeleopError(f"gamepad deadzone must be in [0, 1), got {self.deadzone}")
        if self.max_linear <= 0 or self.max_angular <= 0:
            raise TeleopError("gamepad max_linear and max_angular must be > 0")
        valid = {e.value for e in TeleopEvent}
        bad = sorted(set(self.buttons) - valid)
        if bad:
            raise TeleopError(f"gamepad buttons: unknown event(s) {bad}; valid: {sorted(valid)}")


@register_teleop("gamepad")
class GamepadDevice(TeleopDevice):
    """Gamepad (SDL): hold the deadman button to take control, sticks move the gripper.

    ``sdk``: a pygame module (tests pass one whose joystick is synthesized)."""

    config_class = GamepadConfig
    extra = "teleop"
    help = (
        "gamepad: hold RB to take control (release: back to the policy); left stick moves in the table\n"
        "  plane, right stick up/down and yaw; LT closes, RT opens the gripper; Start: new episode,\n"
        "  Y: success, A: failure, Back: commit, X: discard, B: e-stop (buttons: device option buttons)"
    )

    def __init__(self, config: GamepadConfig, hw, sdk=None):
        super().__init__(config, hw)
        self._sdk = sdk
        self.pg = None
        self.joy = None
        self.instance_id: int | None = None
        self.axes: np.ndarray = np.zeros(0)
        self.buttons: np.ndarray = np.zeros(0, dtype=bool)
        self.gripper = config.gripper_start
        self._latch = EventLatch()
        self.device_name = ""

    def connect(self) -> None:
        pg = self._sdk or import_sdk("pygame", backend="gamepad", package="pygame")
        # SDL delivers joystick events through its event queue, which pygame ties to the video
        # subsystem; the dummy driver gives a queue without opening a window (robot PCs are headless).
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
        pg.display.init()
        pg.joystick.init()
        n = pg.joystick.get_count()
        if self.config.index >= n:
            raise DeviceNotFound(
                f"gamepad index {self.config.index} not found: SDL sees {n} joystick(s); plug the pad in "
                "(and check its permissions under /dev/input) or set the device option index"
            )
        try:
            joy = pg.joystick.Joystick(self.config.index)
            joy.init()
            self.instance_id = int(joy.get_instance_id())
            self.device_name = str(joy.get_name())
            n_axes, n_buttons = int(joy.get_numaxes()), int(joy.get_numbuttons())
        except pg.error as e:
            raise DeviceNotFound(f"gamepad {self.config.index}: SDL cannot open it: {e}") from e
        c = self.config
        used_axes = [a for a in [*c.axes, c.gripper_close_axis, c.gripper_open_axis] if a >= 0]
        used_buttons = [c.deadman_button, *c.buttons.values()]
        if any(a >= n_axes for a in used_axes) or any(b >= n_buttons for b in used_buttons):
            raise TeleopError(
                f"gamepad '{self.device_name}' has {n_axes} axes and {n_buttons} buttons, but the mapping "
                f"uses axes {sorted(set(used_axes))} and buttons {sorted(set(used_buttons))}: set the device "
                "options axes / deadman_button / buttons for this pad"
            )
        self.pg, self.joy = pg, joy
        self.axes = np.zeros(n_axes)
        # Triggers rest at -1 until their first motion event.
        for a in (c.gripper_close_axis, c.gripper_open_axis):
            if a >= 0:
                self.axes[a] = -1.0
        self.buttons = np.zeros(n_buttons, dtype=bool)
        pg.event.clear()
        self.connected = True
        self.stats.extra["pad"] = self.device_name

    def disconnect(self) -> None:
        if self.joy is not None:
            try:
                self.joy.quit()
            except Exception:  # noqa: BLE001 - the pad may already be gone
                pass
        self.joy = None
        self.connected = False

    def reset(self, seed: int | None = None) -> None:
        self._latch = EventLatch()

    # -- events ---------------------------------------------------------------------------
    def _pump(self) -> None:
        pg = self.pg
        if pg is None:
            raise TeleopError("gamepad is not connected; call connect() first")
        for ev in pg.event.get():
            if ev.type == pg.JOYDEVICEREMOVED and getattr(ev, "instance_id", None) == self.instance_id:
                self.connected = False
                self.joy = None
                raise DeviceDisconnected(
                    f"gamepad '{self.device_name}' was disconnected (SDL JOYDEVICEREMOVED): the arm holds "
                    "where it is; plug it back in and restart the teleop"
                )
            if ev.type not in (pg.JOYAXISMOTION, pg.JOYBUTTONDOWN, pg.JOYBUTTONUP):
                continue
            if getattr(ev, "instance_id", None) != self.instance_id:
                continue  # another pad
            self.stats.reports += 1
            if ev.type == pg.JOYAXISMOTION:
                axis, value = getattr(ev, "axis", -1), getattr(ev, "value", np.nan)
                if not (isinstance(axis, int) and 0 <= axis < len(self.axes)):
                    self.stats.bad(f"axis {axis!r} outside the pad's {len(self.axes)} axes")
                elif not (
                    isinstance(value, (int, float)) and np.isfinite(value) and abs(value) <= 1.0 + 1e-6
                ):
                    self.stats.bad(f"axis {axis} value {value!r} outside [-1, 1]")
                else:
                    self.axes[axis] = float(value)
            else:
                button = getattr(ev, "button", -1)
                if not (isinstance(button, int) and 0 <= button < len(self.buttons)):
                    self.stats.bad(f"button {button!r} outside the pad's {len(self.buttons)} buttons")
                else:
                    self.buttons[button] = ev.type == pg.JOYBUTTONDOWN

    def _stick(self, axis: int) -> float:
        if axis < 0:
            return 0.0
        v = self.axes[axis]
        dz = self.config.deadzone
        # Rescale past the deadzone so motion starts at zero speed instead of a jump.
        return float(np.sign(v) * max(abs(v) - dz, 0.0) / (1.0 - dz))

    def read(self, obs=None) -> TeleopCommand:
        self._pump()
        c = self.config
        raw = np.array([self._stick(a) * s for a, s in zip(c.axes, c.signs)])
        twist = np.concatenate([raw[:3] * c.max_linear, raw[3:] * c.max_angular])
        close = c.gripper_close_axis >= 0 and self.axes[c.gripper_close_axis] > c.trigger_threshold
        open_ = c.gripper_open_axis >= 0 and self.axes[c.gripper_open_axis] > c.trigger_threshold
        if close and not open_:
            self.gripper = 1.0
        elif open_ and not close:
            self.gripper = -1.0
        events = tuple(
            TeleopEvent(name)
            for name, b in c.buttons.items()
            if self._latch.press(name, bool(self.buttons[b]))
        )
        held = bool(self.buttons[c.deadman_button])
        self.stats.reads += 1
        return TeleopCommand(
            stamp=time.monotonic(),
            twist=twist if held else None,
            gripper=self.gripper,
            intervening=held,
            events=events,
        )
