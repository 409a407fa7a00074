"""The camera contract every backend implements: ``CameraConfig``, ``Camera``, ``Capture`` and ``CAMERAS``.

A camera backend is one module or folder that registers a class with ``@register_camera("name")``;
the class names its config dataclass in ``config_class`` and its pip extra in ``extra``. Its SDK
is imported inside ``connect()`` (:func:`import_sdk`), so importing the package never needs
pyrealsense2 or OpenCV, and a missing SDK names the extra that installs it.

What every backend guarantees (what ``camera_node`` relies on):

- ``read()`` returns the newest capture not returned before, waiting up to ``timeout_s`` for one:
  a colour :class:`~robot_policy.types.Frame` and, when the config asks for depth, a depth Frame
  aligned to the colour image (same size, same pixel grid, uint16 millimetres) with the same stamp.
- ``stamp`` is the capture time on the host clock (``time.monotonic()``; simulated time for the
  ``sim`` backend), never the arrival time when the device tells us better.
- ``intrinsics()`` come from the calibration file named in the config when there is one, else
  from the device (factory calibration, or the MuJoCo camera model).
- ``status()`` reports frame counts, frames the device dropped, frames superseded before a read,
  and the capture-to-read latency.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from robot_policy.camera_model import Intrinsics, load_intrinsics
from robot_policy.config import ConfigError, from_dict
from robot_policy.registry import Registry
from robot_policy.sdk import SDKMissing  # noqa: F401 - re-exported for backends
from robot_policy.sdk import import_sdk as _import_sdk
from robot_policy.types import Frame


class CameraError(RuntimeError):
    """The camera cannot deliver: not connected, device missing, stream ended, bad mode."""


class CameraTimeout(CameraError):
    """No new capture arrived within the read timeout."""


def import_sdk(module: str, *, backend: str, package: str, extra: str) -> ModuleType:
    """Import an SDK module inside ``connect()`` (see :func:`robot_policy.sdk.import_sdk`)."""
    return _import_sdk(module, kind="camera", backend=backend, package=package, extra=extra)


@dataclass
class CameraConfig:
    """Settings every camera backend shares; a backend subclasses it with its own fields."""

    name: str = "camera"
    """Camera name: topic prefix (``/<name>/color/image_raw``) and the ``<name>_rgb`` observation key."""
    width: int = 640
    """Colour image width (pixels); depth is aligned to the colour image, so it has this size too."""
    height: int = 480
    """Colour image height (pixels)."""
    fps: float = 30.0
    """Frame rate asked of the device (Hz)."""
    depth: bool = False
    """Also deliver a depth image aligned to colour (uint16 millimetres), where the device has depth."""
    intrinsics: str = ""
    """Intrinsics JSON written by ``robot-policy calibrate intrinsics``; empty: the device's own."""
    timeout_s: float = 1.0
    """How long ``read()`` waits for a new capture before raising :class:`CameraTimeout` (s)."""

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(
                f"camera '{self.name}': width and height must be > 0, got {self.width}x{self.height}"
            )
        if self.fps <= 0:
            raise ConfigError(f"camera '{self.name}': fps must be > 0, got {self.fps}")
        if self.timeout_s <= 0:
            raise ConfigError(f"camera '{self.name}': timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class Capture:
    """One capture of one camera: colour and (optionally) aligned depth, taken at the same instant."""

    color: Frame
    """uint8 HxWx3 RGB; ``color.stamp`` is the capture time on the host clock."""
    depth: Frame | None = None
    """uint16 HxW millimetres (0: no measurement), aligned to ``color``, same stamp; None without depth."""
    number: int = 0
    """Frame number from the device (a running count where the device has none)."""
    device_stamp: float | None = None
    """The device's own timestamp (s, device clock) before mapping to the host clock; None in simulation."""

    @property
    def stamp(self) -> float:
        """Capture time on the host clock (the colour frame's stamp)."""
        return self.color.stamp


class CaptureStats:
    """Counters shared by every backend: captures read, frames dropped by the device (gaps in its
    frame numbers), frames superseded before a read, capture-to-read latency over a window."""

    def __init__(self, window: int = 100):
        self.read = 0
        self.received = 0
        self.dropped = 0
        self.superseded = 0
        self._last_number: int | None = None
        self._latency: deque[float] = deque(maxlen=window)

    def frame_number(self, n: int) -> None:
        """Count one frame the device delivered; a jump in its number is frames dropped on the
        way (USB, driver, queue). A number that goes back (device restart, looped playback)
        starts a new sequence instead of counting negative drops."""
        self.received += 1
        if self._last_number is not None and n > self._last_number + 1:
            self.dropped += n - self._last_number - 1
        self._last_number = n

    def returned(self, stamp: float, now: float) -> None:
        self.read += 1
        self._latency.append(now - stamp)

    def to_dict(self) -> dict[str, Any]:
        lat = np.asarray(self._latency, dtype=np.float64)
        return {
            "frames_received": self.received,
            "frames_read": self.read,
            "frames_dropped": self.dropped,
            "frames_superseded": self.superseded,
            "latency_s": float(lat[-1]) if lat.size else None,
            "latency_mean_s": float(lat.mean()) if lat.size else None,
            "latency_max_s": float(lat.max()) if lat.size else None,
        }


class Camera(abc.ABC):
    """One camera behind one SDK. ``read()`` may be called from one thread at a time."""

    config_class: ClassVar[type[CameraConfig]] = CameraConfig
    """Dataclass the backend's settings are parsed into."""
    backend: ClassVar[str] = ""
    """Registry name (set by :func:`register_camera`)."""
    extra: ClassVar[str] = ""
    """pip extra that installs the SDK (``pip install 'robot_policy[<extra>]'``)."""
    has_depth: ClassVar[bool] = False
    """Whether the backend can deliver depth at all (a config asking for depth is refused otherwise)."""
    standalone: ClassVar[bool] = True
    """Whether ``camera_node`` can run it on its own; False for a camera that reads a world another
    process owns (``sim`` renders the MuJoCo scene of the robot node, which publishes it)."""

    def __init__(self, config: CameraConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        if config.depth and not self.has_depth:
            raise ConfigError(
                f"camera '{config.name}': backend '{self.backend}' has no depth stream; set depth: false"
            )
        self.config = config
        self.stats = CaptureStats()
        self._calibrated: Intrinsics | None = None
        if config.intrinsics:
            # Read at construction: a wrong path or size fails before any device is opened.
            self._calibrated = load_intrinsics(config.intrinsics)
            if (self._calibrated.width, self._calibrated.height) != (config.width, config.height):
                raise ConfigError(
                    f"camera '{config.name}': intrinsics file {config.intrinsics} was calibrated at "
                    f"{self._calibrated.width}x{self._calibrated.height} but the camera streams "
                    f"{config.width}x{config.height}; recalibrate at this size or change width/height"
                )

    # -- lifecycle -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``disconnect()``."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Import the SDK, open the device and start streaming."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Stop streaming and release the device. Safe to call twice."""

    # -- data ------------------------------------------------------------------------------
    @abc.abstractmethod
    def read(self, timeout_s: float | None = None) -> Capture:
        """The newest capture not returned before; waits up to ``timeout_s`` (default
        ``config.timeout_s``) and raises :class:`CameraTimeout` when none arrives."""

    def intrinsics(self) -> Intrinsics:
        """Colour intrinsics: the calibration file's when the config names one, else the device's."""
        if self._calibrated is not None:
            return self._calibrated
        return self.device_intrinsics()

    @abc.abstractmethod
    def device_intrinsics(self) -> Intrinsics:
        """The device's own colour intrinsics at the configured size (needs ``connect()`` for real devices)."""

    def status(self) -> dict[str, Any]:
        """Diagnostics: ``connected``, frame counters, latency (s); backends add their own keys."""
        return {"camera": self.config.name, "backend": self.backend, "connected": self.connected} | (
            self.stats.to_dict()
        )

    # -- helpers for backends ----------------------------------------------------------------
    def _require_connected(self) -> None:
        if not self.connected:
            raise CameraError(f"camera '{self.config.name}' ({self.backend}): not connected; call connect()")

    def _timeout(self, timeout_s: float | None) -> float:
        return self.config.timeout_s if timeout_s is None else float(timeout_s)

    def __enter__(self) -> Camera:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


class LatestSlot:
    """Hands the newest item from a producer thread (SDK callback, grab loop) to ``read()``.

    The producer ``put``s every item; an item overwritten before anyone took it is counted as
    superseded (the reader is slower than the camera), which is not a device drop.
    """

    def __init__(self, stats: CaptureStats):
        self._cond = threading.Condition()
        self._item: Any = None
        self._seq = 0
        self._taken = 0
        self._closed: str | None = None
        self._stats = stats

    def put(self, item: Any) -> None:
        with self._cond:
            if self._item is not None and self._taken < self._seq:
                self._stats.superseded += 1
            self._item = item
            self._seq += 1
            self._cond.notify_all()

    def close(self, reason: str) -> None:
        """No more items will come (stream ended); waiting readers get ``reason``."""
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    def take(self, timeout_s: float) -> Any | None:
        """The newest item not taken before; None on timeout. Raises CameraError once closed and drained."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._taken >= self._seq:
                if self._closed is not None:
                    raise CameraError(self._closed)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._taken = self._seq
            return self._item


CAMERAS: Registry[type[Camera]] = Registry("camera backend")
"""Camera backends by name (the ``backend:`` field of a camera in a hardware YAML)."""


def register_camera(name: str):
    """Class decorator: register a :class:`Camera` subclass under ``name`` and record the name on it."""

    def deco(cls: type[Camera]) -> type[Camera]:
        cls.backend = name
        return CAMERAS.register(name)(cls)

    return deco


def camera_class(backend: str) -> type[Camera]:
    try:
        return CAMERAS.get(backend)
    except KeyError as e:
        raise ConfigError(f"camera backend: {e.args[0]}") from None


def camera_config(backend: str, options: dict[str, Any], where: str = "camera") -> CameraConfig:
    """Parse ``options`` into the backend's config class (unknown keys are errors naming the field)."""
    return from_dict(camera_class(backend).config_class, dict(options), where=where)


def make_camera(backend: str, options: dict[str, Any], **kwargs) -> Camera:
    """The camera backend ``backend`` with ``options`` parsed into its config; not connected yet.
    ``kwargs`` go to the backend's constructor (an injected device, a MuJoCo model and data)."""
    cls = camera_class(backend)
    return cls(camera_config(backend, options, where=f"camera '{options.get('name', '?')}'"), **kwargs)


def options_from_hardware(camera: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Backend options from one ``cameras:`` entry of a hardware YAML (``hardware.config.CameraConfig``):
    the fields the backend's config also has (name, width, height, fps, depth, serial...), then the
    entry's ``options:`` (backend-specific settings, checked by the backend's config), then ``extra``."""
    fields = {f.name for f in dataclasses.fields(camera_class(camera.backend).config_class)}
    options = {k: v for k, v in dataclasses.asdict(camera).items() if k in fields}
    options.update(getattr(camera, "options", None) or {})
    options.update(extra or {})
    return options
