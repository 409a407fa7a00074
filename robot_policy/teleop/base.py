"""The teleop contract every input device implements: ``TeleopConfig``, ``TeleopDevice``,
``TeleopCommand``, ``TeleopEvent`` and the ``TELEOPS`` registry.

A device backend is one folder that registers a class with ``@register_teleop("name")``; the
class names its config dataclass in ``config_class`` (parsed from the device options, unknown
keys are errors naming the field) and its pip extra in ``extra``. Its SDK is imported inside
``connect()`` (:func:`import_sdk`), so importing the package never needs pygame, hidapi or a
servo SDK, and a missing SDK names the extra that installs it.

Each control tick the host (``teleop_node``, ``robot-policy teleop``, the DAgger loop) calls
``read(obs)`` and gets one :class:`TeleopCommand`: what the human commands now (absolute joint
targets, or an end-effector twist or pose for Cartesian devices, plus the gripper), whether
they are intervening now, and the episode events pressed since the last read. Cartesian
commands become joint targets in :mod:`robot_policy.teleop.cartesian`, never in a device.

A device that disappears raises :class:`DeviceDisconnected` from ``read()``: the host stops
commanding (the arm holds where it is) and shows the message, which names the device and what
to do. Malformed reports (a short HID packet, a servo reply with a bad checksum, an axis index
the pad does not have) never move the arm: they are dropped and counted in ``status()``.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from robot_policy.config import ConfigError, from_dict
from robot_policy.hardware.config import HardwareConfig
from robot_policy.registry import Registry
from robot_policy.sdk import SDKMissing  # noqa: F401 - re-exported for backends
from robot_policy.sdk import import_sdk as _import_sdk


class TeleopError(RuntimeError):
    """A teleop device cannot deliver commands (the message names the device and the fix)."""


class DeviceNotFound(TeleopError):
    """No such device is attached (wrong index, serial port or USB id)."""


class DeviceDisconnected(TeleopError):
    """The device went away while in use: the host must stop commanding (the arm holds)."""


def import_sdk(module: str, *, backend: str, package: str, extra: str = "teleop") -> ModuleType:
    """Import an SDK module inside ``connect()`` (see :func:`robot_policy.sdk.import_sdk`)."""
    return _import_sdk(module, kind="teleop", backend=backend, package=package, extra=extra)


class TeleopEvent(str, enum.Enum):
    """Episode events a person gives from the device (buttons, keys)."""

    START = "start"
    """New episode: reset the scene and start recording."""
    STOP = "stop"
    """End the episode and commit it (success as marked, else unknown)."""
    SUCCESS = "success"
    """Mark the episode successful and commit it."""
    FAILURE = "failure"
    """Mark the episode failed and commit it."""
    DISCARD = "discard"
    """Drop the episode being recorded."""
    ESTOP = "estop"
    """Latch the robot's e-stop."""
    ESTOP_RESET = "estop_reset"
    """Release the e-stop (the arm holds until the next command)."""


@dataclass
class TeleopCommand:
    """What a device commands at one tick. At most one of ``joints``, ``twist``, ``pose``."""

    stamp: float
    """Time of the read (``time.monotonic()`` of the host)."""
    joints: np.ndarray | None = None
    """Absolute arm joint targets (rad, hardware joint order; no gripper)."""
    twist: np.ndarray | None = None
    """End-effector twist in the robot base frame: (vx, vy, vz) m/s then (wx, wy, wz) rad/s."""
    pose: tuple[np.ndarray, np.ndarray] | None = None
    """Absolute end-effector target: position (3,) m and orientation quaternion (w, x, y, z)."""
    gripper: float | None = None
    """Gripper command in [-1 open, 1 closed]; None keeps the last one."""
    intervening: bool = False
    """The human commands the arm now (the arbiter gives them control at once)."""
    events: tuple[TeleopEvent, ...] = ()
    """Episode events since the last read, oldest first."""

    def __post_init__(self) -> None:
        given = [n for n in ("joints", "twist", "pose") if getattr(self, n) is not None]
        if len(given) > 1:
            raise TeleopError(f"a teleop command carries one of joints/twist/pose, got {given}")
        if self.twist is not None:
            self.twist = _finite(self.twist, "twist", 6)
        if self.joints is not None:
            self.joints = _finite(self.joints, "joints")
        if self.pose is not None:
            self.pose = (
                _finite(self.pose[0], "pose position", 3),
                _finite(self.pose[1], "pose quaternion", 4),
            )
        if self.gripper is not None and not np.isfinite(self.gripper):
            raise TeleopError(f"teleop gripper command is not finite: {self.gripper}")

    @property
    def kind(self) -> str:
        """``joints``, ``twist``, ``pose`` or ``none`` (only a flag and/or events)."""
        for n in ("joints", "twist", "pose"):
            if getattr(self, n) is not None:
                return n
        return "none"


def _finite(v, what: str, size: int | None = None) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if size is not None and a.shape[0] != size:
        raise TeleopError(f"teleop {what} has {a.shape[0]} values, expected {size}")
    if not np.all(np.isfinite(a)):
        raise TeleopError(f"teleop {what} has non-finite values: {a.tolist()}")
    return a


@dataclass
class TeleopConfig:
    """Settings every device shares; a backend subclasses it with its own fields."""

    gripper_start: float = -1.0
    """Gripper command before the operator touches it ([-1 open, 1 closed])."""


@dataclass
class DeviceStats:
    """Counters a device reports in ``status()``."""

    reads: int = 0
    """``read()`` calls that returned a command."""
    reports: int = 0
    """Raw reports / packets / events consumed."""
    bad_reports: int = 0
    """Reports dropped as malformed (never turned into motion)."""
    last_bad: str = ""
    """Why the last bad report was dropped."""
    extra: dict[str, Any] = field(default_factory=dict)

    def bad(self, why: str) -> None:
        self.bad_reports += 1
        self.last_bad = why


class TeleopDevice(abc.ABC):
    """One input device. Not thread-safe: the host calls it from one thread.

    Subclasses implement ``connect``, ``read`` and ``disconnect``; ``reset`` (a new episode)
    and ``status`` have defaults.
    """

    config_class: ClassVar[type[TeleopConfig]] = TeleopConfig
    """Dataclass the device options are parsed into."""
    name: ClassVar[str] = ""
    """Registry name (set by :func:`register_teleop`)."""
    extra: ClassVar[str] = ""
    """pip extra that installs the SDK (empty: none needed)."""
    needs_terminal: ClassVar[bool] = False
    """The device reads the terminal it runs in (keyboard): it cannot run as a launched node."""
    needs_observation: ClassVar[bool] = False
    """``read()`` needs the robot's observation (the scripted expert)."""
    needs_sim: ClassVar[bool] = False
    """The device is part of a simulation (the scripted expert): it needs a simulated robot."""
    help: ClassVar[str] = ""
    """What the operator presses, printed when the device starts."""

    def __init__(self, config: TeleopConfig, hw: HardwareConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.hw = hw
        self.stats = DeviceStats()
        self.connected = False

    @property
    def n_joints(self) -> int:
        return len(self.hw.joint_names)

    @property
    def needs_policy(self) -> bool:
        """``read()`` needs the policy's proposal (``obs["policy_action"]``): a corrector."""
        return False

    @abc.abstractmethod
    def connect(self) -> None:
        """Import the SDK and open the device; :class:`DeviceNotFound` when it is not there."""

    @abc.abstractmethod
    def read(self, obs: dict[str, np.ndarray] | None = None) -> TeleopCommand:
        """The command now; never blocks longer than a fraction of a control period.
        ``obs``: the robot's latest observation (``joint_pos``, ``gripper``, task state)."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Close the device; safe to call twice or after it disappeared."""

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 - optional
        """A new episode starts (the scripted expert replans; others forget held state)."""

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {
            "device": self.name,
            "connected": self.connected,
            "reads": s.reads,
            "reports": s.reports,
            "bad_reports": s.bad_reports,
            "last_bad": s.last_bad,
            **s.extra,
        }

    def __enter__(self) -> TeleopDevice:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


class EventLatch:
    """Turns button levels into events on the press (rising edge), once per press."""

    def __init__(self) -> None:
        self._down: set[Any] = set()

    def press(self, key: Any, down: bool) -> bool:
        """True when ``key`` went from up to down now."""
        if down and key not in self._down:
            self._down.add(key)
            return True
        if not down:
            self._down.discard(key)
        return False


TELEOPS: Registry[type[TeleopDevice]] = Registry("teleop device")
"""Teleop devices by name (``teleop:=`` of the launch files, ``robot-policy teleop DEVICE``)."""


def register_teleop(name: str):
    """Class decorator: register a :class:`TeleopDevice` subclass under ``name``."""

    def deco(cls: type[TeleopDevice]) -> type[TeleopDevice]:
        cls.name = name
        return TELEOPS.register(name)(cls)

    return deco


def teleop_class(name: str) -> type[TeleopDevice]:
    try:
        return TELEOPS.get(name)
    except KeyError as e:
        raise ConfigError(f"teleop: {e.args[0]}") from None


def teleop_config(name: str, options: dict[str, Any] | None = None) -> TeleopConfig:
    """Parse device options into the device's config class (unknown keys name the field)."""
    cls = teleop_class(name)
    return from_dict(cls.config_class, dict(options or {}), where=f"teleop '{name}' options")


def make_teleop(
    name: str, hw: HardwareConfig, options: dict[str, Any] | None = None, **kwargs
) -> TeleopDevice:
    """The device registered as ``name`` with its options parsed; not connected yet. ``kwargs``
    go to the constructor (tests inject an SDK or a byte stream)."""
    return teleop_class(name)(teleop_config(name, options), hw, **kwargs)


def load_options(path: str) -> dict[str, Any]:
    """Device options from a YAML file (empty path: none)."""
    if not path:
        return {}
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"teleop options file {p} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"teleop options file {p}: expected a mapping of device options, got {type(data).__name__}"
        )
    return data
