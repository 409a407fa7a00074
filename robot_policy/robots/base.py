"""The arm contract every backend implements: ``ArmConfig``, ``Arm``, ``Gripper``, and the ``ARMS`` registry.

An arm backend is one module or folder that registers a class with ``@ARMS.register("name")``;
the class names its config dataclass in ``config_class`` (parsed from the ``arm_config:`` mapping
of the hardware YAML) and its pip extra in ``extra``. Its SDK is imported inside ``connect()``
(:func:`import_sdk`), so the core never needs it and a missing SDK names the extra to install.

A backend is the thin layer over one SDK: read the measured state, send one joint-position
target, stop, report status. Everything shared (safety layer, trajectory interpolation, watchdog,
e-stop, the fast loop thread, fault recovery) is written once in :mod:`robot_policy.robots.controller`.

Vectors: ``Arm.read()`` / ``Arm.write()`` carry the arm joints only (``hw.joint_names`` order);
the gripper is a separate :class:`Gripper` with its own state. The controller splits the
command-order vector (joints, then the gripper command in [-1 open, 1 closed]) between them.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from robot_policy.config import ConfigError, from_dict
from robot_policy.hardware.config import HardwareConfig
from robot_policy.hardware.pacing import Stall, TickPacer
from robot_policy.registry import Registry
from robot_policy.sdk import SDKMissing  # noqa: F401 - re-exported for backends
from robot_policy.sdk import import_sdk as _import_sdk
from robot_policy.types import JointState


class ArmError(RuntimeError):
    """The arm cannot do what was asked: SDK exception, lost connection, controller fault or reflex.

    The controller catches it (and any other exception from a backend), reports it in its status
    and attempts recovery; it never takes the control loop down.
    """


def import_sdk(module: str, *, backend: str, package: str, extra: str) -> ModuleType:
    """Import an SDK module inside ``connect()`` (see :func:`robot_policy.sdk.import_sdk`)."""
    return _import_sdk(module, kind="arm", backend=backend, package=package, extra=extra)


@dataclass
class ArmConfig:
    """Settings every backend shares; a backend subclasses it with its own fields
    (the ``arm_config:`` mapping of the hardware YAML is parsed into the subclass)."""

    control_hz: float = 0.0
    """Rate of the fast loop that sends targets to the arm (Hz); 0: the backend's native rate."""
    auto_recover: bool = True
    """After a fault (SDK exception, lost connection, reflex), retry ``recover()`` with backoff;
    the arm then holds where it is until a fresh command. False: wait for ``controller.recover()``."""
    recover_min_s: float = 0.5
    """First wait before a recovery attempt (s); doubles after each failed attempt."""
    recover_max_s: float = 10.0
    """Longest wait between recovery attempts (s)."""
    gripper: bool = True
    """Drive the backend's gripper (the hardware config must name a ``gripper_joint``)."""

    def __post_init__(self):
        if self.control_hz < 0:
            raise ConfigError(f"arm_config.control_hz must be >= 0 (0: native rate), got {self.control_hz}")
        if not 0 < self.recover_min_s <= self.recover_max_s:
            raise ConfigError(
                f"arm_config: need 0 < recover_min_s <= recover_max_s, got {self.recover_min_s}, "
                f"{self.recover_max_s}"
            )


@dataclass
class GripperState:
    """Measured gripper state."""

    width: float
    """Opening between the fingers (m)."""
    stamp: float
    """Capture time on the host clock (``time.monotonic()``)."""
    grasped: bool = False
    """The gripper reports an object held (False when the hardware cannot tell)."""
    moving: bool = False
    """A gripper command is still executing."""


class Gripper(abc.ABC):
    """A gripper driven by one scalar command in [-1 open, 1 closed] (the last command entry).

    ``command()`` is called on every control tick with the current command and must return at
    once (start the motion asynchronously); implementations deduplicate repeated commands.
    """

    max_width: float = 0.08
    """Fully open width (m)."""

    @abc.abstractmethod
    def command(self, value: float) -> None:
        """Move toward ``value`` in [-1 open, 1 closed]; non-blocking."""

    @abc.abstractmethod
    def read(self) -> GripperState:
        """Measured state; quick (it is called from the control loop)."""

    def stop(self) -> None:  # noqa: B027 - optional: most grippers stop on their own
        """Stop a gripper motion in progress (e-stop)."""

    def status(self) -> dict[str, Any]:
        """Diagnostics for the controller's status (faults of the last command, etc.)."""
        return {}

    def open(self) -> None:
        self.command(-1.0)

    def close(self) -> None:
        self.command(1.0)

    def width(self) -> float:
        return self.read().width

    @staticmethod
    def value_to_width(value: float, max_width: float) -> float:
        """[-1 open, 1 closed] -> opening (m), clipped to [0, max_width]."""
        return float(np.clip(max_width * (1.0 - float(value)) / 2.0, 0.0, max_width))


class Arm(abc.ABC):
    """One arm behind one SDK. Not thread-safe: the controller calls it from its loop thread only.

    Subclasses implement ``connect``, ``read``, ``_send``, ``stop``, ``disconnect``, ``status`` and
    set ``self.gripper`` in ``connect()`` when they drive one. ``write()`` is final: it checks
    length, finiteness and the joint limits before anything reaches the SDK.
    """

    config_class: ClassVar[type[ArmConfig]] = ArmConfig
    """Dataclass the ``arm_config:`` mapping is parsed into."""
    name: ClassVar[str] = ""
    """Registry name (set by :func:`register_arm`)."""
    extra: ClassVar[str] = ""
    """pip extra that installs the SDK (``pip install 'robot_policy[<extra>]'``)."""
    native_hz: ClassVar[float] = 100.0
    """Rate the SDK wants targets at (Hz), used when ``config.control_hz`` is 0."""
    connect_in_loop: ClassVar[bool] = False
    """``connect()``/``recover()``/``disconnect()`` run in the controller's loop thread, not the
    caller's: a simulated world renders with a GL context bound to the thread that created it."""
    uses_ros: ClassVar[bool] = False
    """The backend reaches its arm over ROS 2 topics: its host (``robot_node``) passes
    ``transport=`` built on its node, since only ``robot_policy.ros`` may import rclpy."""

    def __init__(self, config: ArmConfig, hw: HardwareConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.hw = hw
        self.lower = np.asarray(hw.position_lower, dtype=np.float64)
        self.upper = np.asarray(hw.position_upper, dtype=np.float64)
        self.vmax = np.asarray(hw.velocity_limits, dtype=np.float64)
        self.gripper: Gripper | None = None
        self.world: Any = None
        """A simulated world hosting this arm (task, objects, cameras), set by ``connect()``;
        None for real arms. Its cameras are read from it (``robots.sim.SimWorld``)."""

    # -- what the controller needs to know ------------------------------------------------
    @property
    def n_joints(self) -> int:
        return len(self.hw.joint_names)

    @property
    def control_hz(self) -> float:
        """Rate of the fast loop (Hz): ``config.control_hz`` or the backend's native rate."""
        return float(self.config.control_hz or self.native_hz)

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``disconnect()`` or a lost connection."""

    # -- lifecycle -------------------------------------------------------------------------
    @abc.abstractmethod
    def connect(self) -> None:
        """Import the SDK, open the connection, put the arm in its streaming mode."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Stop streaming and close the connection. Safe to call twice or after a lost connection."""

    def recover(self) -> None:
        """Return to an operational state after a fault; raise if that is not possible yet.

        Default: reconnect. Backends override it to clear controller errors first when the
        connection is still up (Franka ``recover_from_errors``, xArm ``clean_error``).
        """
        try:
            self.disconnect()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        self.connect()

    # -- the fast loop ---------------------------------------------------------------------
    @abc.abstractmethod
    def read(self) -> JointState:
        """Measured joint positions and velocities, stamped on the host clock at capture."""

    def write(self, target, velocity=None) -> np.ndarray:
        """Send one joint-position target (arm joints, rad or m). Returns what was sent.

        ``velocity``: the target's joint velocities (rad/s), a feed-forward for backends whose
        SDK plans to a target state (franky arrives at ``target`` moving at ``velocity`` instead
        of stopping there); others ignore it. Clipped to the velocity limits; None means zero.

        The controller passes targets that went through the safety layer; this check is the last
        line of defence so that no NaN or out-of-limit value ever reaches an SDK.
        """
        q = np.asarray(target, dtype=np.float64).reshape(-1)
        if q.shape[0] != self.n_joints:
            raise ValueError(f"{self.name}: target has {q.shape[0]} entries, expected {self.n_joints}")
        bad = ~np.isfinite(q)
        if bad.any():
            names = [self.hw.joint_names[i] for i in np.flatnonzero(bad)]
            raise ValueError(f"{self.name}: non-finite target for {names}; not sent")
        out = (q < self.lower - 1e-9) | (q > self.upper + 1e-9)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ValueError(
                f"{self.name}: target {q[i]:.4f} for {self.hw.joint_names[i]} outside "
                f"[{self.lower[i]}, {self.upper[i]}]; not sent"
            )
        dq = np.zeros_like(q) if velocity is None else np.asarray(velocity, dtype=np.float64).reshape(-1)
        if dq.shape != q.shape or not np.all(np.isfinite(dq)):
            raise ValueError(f"{self.name}: velocity must be {self.n_joints} finite values, got {velocity!r}")
        dq = np.clip(dq, -self.vmax, self.vmax)
        if not self.connected:
            raise ArmError(f"{self.name}: not connected")
        return self._send(q, dq)

    @abc.abstractmethod
    def _send(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """Send a checked target (and its feed-forward velocity) to the SDK; return what was sent."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the motion in progress now (e-stop): decelerate and stay still until the next write."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """Diagnostics: at least ``connected`` (bool), ``mode`` (str), ``faults`` (list[str]) and
        ``protective_stop`` (bool: reflex / protective stop / emergency stop active)."""

    # Pacing of the fast loop. The default sleeps out the period (waking early on ``wake``, which
    # the controller sets for an e-stop); SDKs with their own period timing (UR RTDE
    # initPeriod/waitPeriod) override both.
    def period_start(self) -> Any:
        return time.monotonic()

    def period_wait(self, token: Any, wake: threading.Event) -> None:
        remaining = float(token) + 1.0 / self.control_hz - time.monotonic()
        if remaining > 0:
            wake.wait(remaining)

    def make_pacer(self, stop: threading.Event, on_stall: Callable[[Stall], None] | None) -> TickPacer | None:
        """A fixed-grid pacer for the loop, or None (the default) to pace with ``period_start`` /
        ``period_wait``. On a grid a late tick runs at once, stamped with its due time: right for a
        simulation stepped once per tick (every tick must exist, or recordings get holes), wrong
        for a real servo stream, where a burst of catch-up targets would jerk the arm."""
        return None

    def step(self, t: float) -> bool:
        """Called once per tick after the tick's commands went out (also when nothing was sent:
        e-stop, fault). ``t``: the tick's time (``time.monotonic()`` clock). A simulated world
        advances its physics one period here and returns True, so the controller reads the new
        state at once; real arms move on their own and return False."""
        return False

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Arm:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


ARMS: Registry[type[Arm]] = Registry("arm backend")
"""Arm backends by name (the ``arm:`` field of a hardware YAML)."""


def register_arm(name: str):
    """Class decorator: register an :class:`Arm` subclass under ``name`` and record the name on it."""

    def deco(cls: type[Arm]) -> type[Arm]:
        cls.name = name
        return ARMS.register(name)(cls)

    return deco


def arm_config_from(hw: HardwareConfig) -> ArmConfig:
    """Parse ``hw.arm_config`` into the backend's config class (unknown keys name the field)."""
    cls = arm_class(hw)
    return from_dict(cls.config_class, dict(hw.arm_config), where=f"hardware config '{hw.name}' arm_config")


def arm_class(hw: HardwareConfig) -> type[Arm]:
    try:
        return ARMS.get(hw.arm)
    except KeyError as e:
        raise ConfigError(f"hardware config '{hw.name}': arm: {e.args[0]}") from None


def make_arm(hw: HardwareConfig, **kwargs) -> Arm:
    """The arm backend a hardware config names, with its ``arm_config`` parsed; not connected yet.
    ``kwargs`` go to the backend's constructor (tests inject an SDK fake as ``sdk=``)."""
    return arm_class(hw)(arm_config_from(hw), hw, **kwargs)
