"""Keyboard teleop: jog joints from a terminal, episode events on letter keys.

The device's boundary is the terminal's byte stream. It needs a terminal of its own (a node
started by ``robot-policy launch`` has none), so a person runs ``robot-policy teleop keyboard``
in a second terminal attached to the running graph. Bytes are read without waiting
(``select`` with a zero timeout) in cbreak mode, so one key press is one byte; escape
sequences (arrow and function keys) are skipped whole.
"""

from __future__ import annotations

import os
import select
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from robot_policy.teleop.base import (
    DeviceDisconnected,
    TeleopCommand,
    TeleopConfig,
    TeleopDevice,
    TeleopError,
    TeleopEvent,
    register_teleop,
)

# Key pairs (+, -) per joint, one row of the keyboard each: q/a jogs joint 1, w/s joint 2, ...
JOG_KEYS = ["qa", "ws", "ed", "rf", "tg", "yh", "uj"]
EVENT_KEYS = {
    "n": TeleopEvent.START,
    "m": TeleopEvent.SUCCESS,
    "l": TeleopEvent.FAILURE,
    "k": TeleopEvent.STOP,
    "b": TeleopEvent.DISCARD,
    "x": TeleopEvent.ESTOP,
    "z": TeleopEvent.ESTOP_RESET,
}
INTERVENE_KEY = "i"
GRIPPER_KEY = " "
KEY_HELP = (
    "keyboard teleop: q/a w/s e/d r/f t/g y/h u/j jog joints 1-7 (+/-) and take control, space toggles\n"
    "  the gripper, i takes / hands back control; n: new episode (reset + record), m: success + commit,\n"
    "  l: failure + commit, k: commit, b: discard, x: e-stop, z: release e-stop"
)


class KeyboardJogger:
    """Turns key presses into joint targets: each press moves one joint by ``step`` rad."""

    def __init__(self, n_joints: int, step: float = 0.05):
        self.n = n_joints
        self.step = step
        self.target: np.ndarray | None = None
        self.gripper = -1.0

    def sync(self, joint_pos: np.ndarray) -> None:
        """Start jogging from the measured position (after a reset or before the first key)."""
        self.target = np.asarray(joint_pos, dtype=np.float64)[: self.n].copy()

    def key(self, ch: str) -> bool:
        """Apply one key; True when it changed the command."""
        if self.target is None:
            return False
        if ch == GRIPPER_KEY:
            self.gripper = -self.gripper
            return True
        for j, (plus, minus) in enumerate(JOG_KEYS[: self.n]):
            if ch == plus:
                self.target[j] += self.step
                return True
            if ch == minus:
                self.target[j] -= self.step
                return True
        return False

    def command(self) -> np.ndarray | None:
        if self.target is None:
            return None
        return np.concatenate([self.target, [self.gripper]])


def is_jog_key(ch: str, n: int) -> bool:
    return ch == GRIPPER_KEY or any(ch in pair for pair in JOG_KEYS[:n])


@dataclass
class KeyboardConfig(TeleopConfig):
    """Keyboard jogging."""

    step: float = 0.05
    """Joint step per key press (rad)."""
    release_after_s: float = 0.0
    """Hand control back after this long without a key (s); 0: only the ``i`` key hands back."""

    def __post_init__(self) -> None:
        if self.step <= 0 or self.step > 0.5:
            raise TeleopError(f"keyboard step must be in (0, 0.5] rad, got {self.step}")
        if self.release_after_s < 0:
            raise TeleopError(f"keyboard release_after_s must be >= 0, got {self.release_after_s}")


@register_teleop("keyboard")
class KeyboardDevice(TeleopDevice):
    """Keyboard in this terminal: jog joints, letter keys for episodes (no extra needed).

    ``stream``: a readable binary file (tests: a pipe); default the process's terminal (stdin),
    put in cbreak mode while connected."""

    config_class = KeyboardConfig
    help = KEY_HELP
    needs_terminal = True
    needs_observation = True

    def __init__(self, config: KeyboardConfig, hw, stream: BinaryIO | None = None):
        super().__init__(config, hw)
        self._stream = stream
        self._fd: int | None = None
        self._saved_tty: Any = None
        self.jog = KeyboardJogger(self.n_joints, config.step)
        self.jog.gripper = config.gripper_start
        self.intervening = False
        self._last_key = -np.inf
        self._pending = b""

    def connect(self) -> None:
        stream = self._stream if self._stream is not None else sys.stdin
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            raise TeleopError(
                "keyboard teleop needs a readable terminal (stdin has no file descriptor)"
            ) from None
        if self._stream is None:
            if not os.isatty(fd):
                raise TeleopError(
                    "keyboard teleop needs a terminal: run `robot-policy teleop keyboard` in its own "
                    "terminal attached to the running graph (a launched node has no terminal)"
                )
            import termios
            import tty

            self._saved_tty = termios.tcgetattr(fd)
            tty.setcbreak(fd)  # one byte per key, no echo, Ctrl-C still interrupts
        self._fd = fd
        self.connected = True

    def disconnect(self) -> None:
        if self._saved_tty is not None and self._fd is not None:
            import termios

            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_tty)
            except (OSError, termios.error):
                pass  # the terminal is already gone
            self._saved_tty = None
        self.connected = False

    def reset(self, seed: int | None = None) -> None:
        self.jog.target = None  # resync from the new scene's joints
        self.intervening = False

    def _keys(self) -> str:
        """Every byte available now (never waits)."""
        if self._fd is None:
            raise TeleopError("keyboard teleop is not connected; call connect() first")
        data = b""
        while True:
            ready, _, _ = select.select([self._fd], [], [], 0.0)
            if not ready:
                break
            try:
                chunk = os.read(self._fd, 256)
            except OSError:  # a pseudo-terminal whose window closed reads EIO instead of EOF
                chunk = b""
            if not chunk:
                self.connected = False
                raise DeviceDisconnected(
                    "keyboard: the terminal closed (end of input); the arm holds. Start "
                    "`robot-policy teleop keyboard` again in a terminal"
                )
            data += chunk
        data, self._pending = self._pending + data, b""
        out = []
        i = 0
        while i < len(data):
            b = data[i]
            if b == 0x1B:  # ESC [ ... final byte (0x40-0x7E): an arrow or function key
                j = i + 1
                if j < len(data) and data[j] in b"[O":
                    j += 1
                    while j < len(data) and not 0x40 <= data[j] <= 0x7E:
                        j += 1
                    if j >= len(data):
                        self._pending = data[i:]  # the rest of the sequence comes next read
                        break
                self.stats.bad(f"escape sequence {data[i : j + 1]!r} ignored")
                i = j + 1
                continue
            out.append(chr(b) if b < 0x80 else "")
            i += 1
        self.stats.reports += len(out)
        return "".join(out)

    def read(self, obs: dict[str, np.ndarray] | None = None) -> TeleopCommand:
        now = time.monotonic()
        events: list[TeleopEvent] = []
        for ch in self._keys():
            ch = ch.lower() if ch.isalpha() else ch
            if ch in EVENT_KEYS:
                ev = EVENT_KEYS[ch]
                events.append(ev)
                if ev in (TeleopEvent.START, TeleopEvent.ESTOP, TeleopEvent.ESTOP_RESET):
                    self.jog.target = None  # the arm moved or holds elsewhere: resync
                    self.intervening = False
            elif ch == INTERVENE_KEY:
                self.intervening = not self.intervening
                self.jog.target = None  # take control from where the arm is now
                self._last_key = now
            elif is_jog_key(ch, self.n_joints):
                if self.jog.target is None or not self.intervening:
                    if obs is None or "joint_pos" not in obs:
                        self.stats.bad(f"key {ch!r} before any joint state: ignored")
                        continue
                    self.jog.sync(obs["joint_pos"])
                self.intervening = True
                self.jog.key(ch)
                self._last_key = now
            elif ch.strip():
                self.stats.bad(f"key {ch!r} has no function (see the key help)")
        rel = self.config.release_after_s
        if self.intervening and rel > 0 and now - self._last_key > rel:
            self.intervening = False
        if self.intervening and self.jog.target is None and obs is not None and "joint_pos" in obs:
            self.jog.sync(obs["joint_pos"])
        self.stats.reads += 1
        joints = self.jog.target.copy() if (self.intervening and self.jog.target is not None) else None
        return TeleopCommand(
            stamp=now,
            joints=joints,
            gripper=self.jog.gripper,
            intervening=self.intervening,
            events=tuple(events),
        )
