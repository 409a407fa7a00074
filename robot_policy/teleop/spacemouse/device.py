"""3Dconnexion SpaceMouse over hidapi: a 6-DoF end-effector twist, as in HIL-SERL.

The human intervenes while the cap moves (the normalized 6-D motion norm exceeds
``threshold``, HIL-SERL's 0.001) or a button is held, and for ``release_after_s`` after the last
motion, so a hand briefly at rest does not flicker control back and forth.

The boundary is the HID input report stream (hidapi ``device.read``, non-blocking). Report
layouts follow the devices' HID descriptors (the same table as pyspacemouse's ``devices.toml``):
report 1 carries translation as little-endian int16 (x, y, z) and, on newer devices, rotation
too (12 bytes); report 2 carries rotation (older devices); report 3 is the button bitmask.
Raw counts are scaled by 1/350 (full deflection is about +-350). A report that is too short,
has an unknown id or an impossible value is dropped and counted; a read error (the device was
unplugged) raises :class:`DeviceDisconnected`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from robot_policy.teleop.base import (
    DeviceDisconnected,
    DeviceNotFound,
    TeleopCommand,
    TeleopConfig,
    TeleopDevice,
    TeleopError,
    import_sdk,
    register_teleop,
)

AXIS_SCALE = 350.0
"""Raw counts at full deflection."""
MAX_RAW = 2000
"""Larger raw counts are not something the sensor produces: a corrupt report."""
SIGNS = np.array([1.0, -1.0, -1.0, -1.0, -1.0, 1.0])
"""Raw HID axes -> right-handed (x right, y forward, z up; pitch, roll, yaw), as pyspacemouse."""


class DeviceSpec(NamedTuple):
    vendor_id: int
    product_id: int
    combined: bool
    """Report 1 carries all six axes (12 bytes) instead of translation only."""


DEVICES: dict[str, DeviceSpec] = {
    "SpaceNavigator": DeviceSpec(0x046D, 0xC626, False),
    "SpaceExplorer": DeviceSpec(0x046D, 0xC627, False),
    "SpaceMousePro": DeviceSpec(0x046D, 0xC62B, False),
    "SpaceMouseWireless": DeviceSpec(0x256F, 0xC62E, True),
    "SpaceMouseWirelessReceiver": DeviceSpec(0x256F, 0xC62F, True),
    "SpaceMouseProWireless": DeviceSpec(0x256F, 0xC632, True),
    "SpaceMouseEnterprise": DeviceSpec(0x256F, 0xC633, True),
    "SpaceMouseCompact": DeviceSpec(0x256F, 0xC635, False),
    "SpaceMouseWirelessNew": DeviceSpec(0x256F, 0xC63A, True),
    "SpaceMouseUSB": DeviceSpec(0x256F, 0xC641, False),
    "UniversalReceiver": DeviceSpec(0x256F, 0xC652, True),
}
"""Known devices by name (USB vendor/product ids and report layout)."""


class ReportError(ValueError):
    """A malformed HID report (message says why)."""


def _int16(lo: int, hi: int) -> int:
    v = lo | (hi << 8)
    return v - 65536 if v >= 32768 else v


def parse_report(data: list[int] | bytes, combined: bool) -> tuple[dict[int, float], int | None]:
    """One input report -> ({axis index 0-5: normalized value}, button bitmask or None).

    Axis indices: 0 x, 1 y, 2 z, 3 pitch, 4 roll, 5 yaw, already sign-corrected.
    """
    data = list(data)
    if not data:
        raise ReportError("empty report")
    rid = data[0]
    if rid == 3:
        if len(data) < 2:
            raise ReportError(f"button report of {len(data)} bytes")
        return {}, sum(b << (8 * i) for i, b in enumerate(data[1:]))
    if rid == 1:
        axes = range(6) if combined else range(3)
    elif rid == 2 and not combined:
        axes = range(3, 6)
    else:
        raise ReportError(f"unknown report id {rid} ({'combined' if combined else 'split'} layout)")
    need = 1 + 2 * len(axes)
    if len(data) < need:
        raise ReportError(f"report {rid} has {len(data)} bytes, needs {need}")
    out = {}
    for k, a in enumerate(axes):
        raw = _int16(data[1 + 2 * k], data[2 + 2 * k])
        if abs(raw) > MAX_RAW:
            raise ReportError(f"report {rid} axis {a} raw value {raw} beyond +-{MAX_RAW}")
        out[a] = float(np.clip(SIGNS[a] * raw / AXIS_SCALE, -1.0, 1.0))
    return out, None


@dataclass
class SpaceMouseConfig(TeleopConfig):
    """SpaceMouse mapping."""

    model: str = ""
    """Device name from ``DEVICES`` (empty: the first known SpaceMouse attached)."""
    path: str = ""
    """hidraw path of one device when several are attached (empty: by model)."""
    axes: list[int] = field(default_factory=lambda: [1, 0, 2, 4, 3, 5])
    """Device axis (0 x, 1 y, 2 z, 3 pitch, 4 roll, 5 yaw) driving each twist component
    (vx, vy, vz, wx, wy, wz). Default: a person behind the robot, pushing the cap forward
    moves the gripper forward (+x of the base)."""
    signs: list[float] = field(default_factory=lambda: [1.0, -1.0, 1.0, 1.0, -1.0, 1.0])
    """Sign per twist component."""
    max_linear: float = 0.15
    """m/s at full deflection."""
    max_angular: float = 0.6
    """rad/s at full deflection."""
    threshold: float = 0.001
    """Motion norm (normalized 6-D) above which the human intervenes (HIL-SERL: 0.001)."""
    release_after_s: float = 0.5
    """Control returns to the policy after the cap rests this long (s)."""
    close_button: int = 0
    """Button (bit) that closes the gripper; -1: none."""
    open_button: int = 1
    """Button (bit) that opens the gripper; -1: none."""

    def __post_init__(self) -> None:
        if self.model and self.model not in DEVICES:
            raise TeleopError(f"spacemouse model '{self.model}' unknown; known: {sorted(DEVICES)}")
        if len(self.axes) != 6 or len(self.signs) != 6 or sorted(self.axes) != list(range(6)):
            raise TeleopError(
                f"spacemouse axes must be a permutation of 0-5 and signs 6 values, got {self.axes}, {self.signs}"
            )
        if self.threshold < 0 or self.release_after_s < 0:
            raise TeleopError("spacemouse threshold and release_after_s must be >= 0")


@register_teleop("spacemouse")
class SpaceMouseDevice(TeleopDevice):
    """SpaceMouse (HID): move the cap to take control, a 6-DoF end-effector twist.

    ``sdk``: a module with hidapi's ``enumerate``/``device``."""

    config_class = SpaceMouseConfig
    extra = "teleop"
    help = (
        "spacemouse: move the cap to take control (at rest for release_after_s: back to the policy);\n"
        "  left button closes, right button opens the gripper"
    )
    MAX_REPORTS_PER_READ = 64

    def __init__(self, config: SpaceMouseConfig, hw, sdk=None):
        super().__init__(config, hw)
        self._sdk = sdk
        self.dev = None
        self.spec: DeviceSpec | None = None
        self.model = ""
        self.motion = np.zeros(6)
        self.buttons = 0
        self.gripper = config.gripper_start
        self._last_active = -np.inf

    def _find(self, hid) -> tuple[str, DeviceSpec, dict]:
        attached = hid.enumerate()
        by_id = {(s.vendor_id, s.product_id): n for n, s in DEVICES.items()}
        for info in attached:
            name = by_id.get((info.get("vendor_id"), info.get("product_id")))
            if name is None or (self.config.model and name != self.config.model):
                continue
            path = info.get("path", b"")
            path_s = path.decode() if isinstance(path, bytes) else str(path)
            if self.config.path and path_s != self.config.path:
                continue
            return name, DEVICES[name], info
        seen = sorted({f"{i.get('vendor_id', 0):04x}:{i.get('product_id', 0):04x}" for i in attached})
        want = self.config.model or "any of " + ", ".join(sorted(DEVICES))
        raise DeviceNotFound(
            f"no SpaceMouse ({want}{', path ' + self.config.path if self.config.path else ''}) among the "
            f"attached HID devices {seen or '(none)'}: plug it in, check read access to /dev/hidraw* "
            "(a udev rule), or set the device option model / path"
        )

    def connect(self) -> None:
        hid = self._sdk or import_sdk("hid", backend="spacemouse", package="hidapi")
        name, spec, info = self._find(hid)
        dev = hid.device()
        try:
            dev.open_path(info["path"])
            dev.set_nonblocking(1)
        except OSError as e:
            raise DeviceNotFound(
                f"spacemouse {name}: cannot open {info['path']!r}: {e} (permissions?)"
            ) from e
        self.dev, self.spec, self.model = dev, spec, name
        self.connected = True
        self.stats.extra["model"] = name

    def disconnect(self) -> None:
        if self.dev is not None:
            try:
                self.dev.close()
            except OSError:
                pass
        self.dev = None
        self.connected = False

    def _drain(self) -> None:
        if self.dev is None:
            raise TeleopError("spacemouse is not connected; call connect() first")
        for _ in range(self.MAX_REPORTS_PER_READ):
            try:
                data = self.dev.read(64)
            except (OSError, ValueError) as e:
                self.dev = None
                self.connected = False
                raise DeviceDisconnected(
                    f"spacemouse {self.model}: read failed ({e}): it was unplugged or lost power; the arm "
                    "holds where it is. Plug it back in and restart the teleop"
                ) from e
            if not data:
                return
            self.stats.reports += 1
            try:
                axes, buttons = parse_report(data, self.spec.combined)
            except ReportError as e:
                self.stats.bad(str(e))
                continue
            for a, v in axes.items():
                self.motion[a] = v
            if buttons is not None:
                self.buttons = buttons

    def _button(self, bit: int) -> bool:
        return bit >= 0 and bool(self.buttons >> bit & 1)

    def read(self, obs=None) -> TeleopCommand:
        self._drain()
        c = self.config
        now = time.monotonic()
        if self._button(c.close_button) and not self._button(c.open_button):
            self.gripper = 1.0
        elif self._button(c.open_button) and not self._button(c.close_button):
            self.gripper = -1.0
        if np.linalg.norm(self.motion) > c.threshold or self.buttons:
            self._last_active = now
        intervening = now - self._last_active <= c.release_after_s
        raw = np.array([self.motion[a] * s for a, s in zip(c.axes, c.signs)])
        twist = np.concatenate([raw[:3] * c.max_linear, raw[3:] * c.max_angular])
        self.stats.reads += 1
        return TeleopCommand(
            stamp=now, twist=twist if intervening else None, gripper=self.gripper, intervening=intervening
        )
