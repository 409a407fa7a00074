"""Intel RealSense (D4xx and anything librealsense drives) through pyrealsense2.

How a capture is made: the colour and depth sensors are started with one callback each (no
``rs.pipeline``, no ``rs.syncer``: the syncer leaves frames unpaired for the first
``timestamp / frame period`` frames when timestamps do not start near zero, which is always the
case with global time). The callback runs on librealsense's thread, counts frame-number gaps
(frames dropped on USB or in the driver) and pairs each colour frame with the depth frame of
the same timestamp. ``read()`` takes the newest complete pair, composes it into a frameset,
aligns depth to colour with ``rs.align`` (the device's own depth-to-colour extrinsics) and
stamps it on the host clock (:mod:`robot_policy.cameras.clock`).

Sources (one code path for all three): a connected device chosen by ``serial``; a recording
(``playback: file.db3`` / ``.bag``) played through librealsense's playback device; or a device
object passed in (``RealSenseCamera(config, device=...)``), which is how tests drive a
``rs.software_device`` that ``rs.context`` cannot enumerate (see :mod:`.software`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robot_policy.camera_model import DISTORTION_MODEL, Intrinsics
from robot_policy.cameras.base import (
    Camera,
    CameraConfig,
    CameraError,
    CameraTimeout,
    Capture,
    LatestSlot,
    import_sdk,
    register_camera,
)
from robot_policy.cameras.clock import DeviceClock, WallClock
from robot_policy.config import ConfigError
from robot_policy.types import Frame

# Colour formats the backend accepts, and how each becomes RGB (librealsense converts YUYV to
# these on real devices; a software device or recording delivers what it was given).
_TO_RGB = {
    "rgb8": lambda a: a,
    "bgr8": lambda a: a[..., ::-1],
    "rgba8": lambda a: a[..., :3],
    "bgra8": lambda a: a[..., 2::-1],
}
# Timestamp domains on the host's wall clock; every other domain is a free-running device clock.
_WALL_DOMAINS = ("global_time", "system_time")
# librealsense distortion models with OpenCV's coefficient order and meaning.
_OPENCV_MODELS = ("brown_conrady", "none")


def _rs():
    return import_sdk("pyrealsense2", backend="realsense", package="pyrealsense2", extra="realsense")


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense devices connected now (empty without pyrealsense2's devices)."""
    rs = _rs()
    return sorted(d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices())


@dataclass
class RealSenseConfig(CameraConfig):
    """A RealSense camera: ``backend: realsense`` in a hardware YAML."""

    serial: str = ""
    """Device serial number (printed on the camera; `rs-enumerate-devices`); empty: the only one connected."""
    playback: str = ""
    """Play this recording (.db3 from librealsense >= 2.57, or .bag) instead of opening a device."""
    playback_realtime: bool = True
    """Play the recording at its recorded pace; false: as fast as it is read (every frame delivered)."""
    color_format: Literal["rgb8", "bgr8", "rgba8", "bgra8"] = "rgb8"
    """Colour format asked of the device; frames are always returned as RGB."""
    depth_width: int = 0
    """Depth stream width before alignment; 0: the colour width (D4xx: 640, 848 or 1280)."""
    depth_height: int = 0
    """Depth stream height before alignment; 0: the colour height."""
    global_time: bool = True
    """Ask librealsense to convert hardware timestamps to host time (``global_time_enabled``);
    false: stamps come from the device clock, offset estimated from arrivals."""
    clock_bias_s: float = 0.0
    """Without global time: the smallest USB delay (s), subtracted from the arrival-based offset."""
    queue: int = 4
    """Colour and depth frames kept while waiting for their partner (small: frames hold USB buffers)."""
    sensor_options: dict[str, float] = field(default_factory=dict)
    """librealsense options set on every sensor that supports them, e.g. ``{exposure: 8000, emitter_enabled: 1}``."""

    def __post_init__(self):
        super().__post_init__()
        if self.queue < 1:
            raise ConfigError(f"camera '{self.name}': queue must be >= 1, got {self.queue}")
        if self.playback and not Path(self.playback).is_file():
            raise ConfigError(f"camera '{self.name}': playback file {self.playback} does not exist")


@register_camera("realsense")
class RealSenseCamera(Camera):
    """A RealSense colour (+ aligned depth) stream. Several cameras: one instance per serial."""

    config_class = RealSenseConfig
    extra = "realsense"
    has_depth = True

    def __init__(self, config: RealSenseConfig, device: Any = None):
        super().__init__(config)
        self.config: RealSenseConfig = config
        self._injected = device
        self._device = None
        self._sensors: list[Any] = []
        self._color_profile = None
        self._slot = LatestSlot(self.stats)
        self._lock = threading.Lock()
        self._colors: deque = deque(maxlen=config.queue)
        self._depths: deque = deque(maxlen=config.queue)
        self._clocks: dict[str, Any] = {}
        self._domain = ""
        self._unpaired = 0
        self._serial = ""
        self._source = ""
        self._ctx = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._device is not None

    def connect(self) -> None:
        if self.connected:
            return
        rs = _rs()
        self._rs = rs
        device = self._open_device(rs)
        self._serial = _info(rs, device, "serial_number")
        if self.config.serial and self._serial and self._serial != self.config.serial:
            raise CameraError(
                f"camera '{self.config.name}': {self._source} has serial {self._serial}, "
                f"config asks for serial {self.config.serial}"
            )
        wanted = self._wanted_profiles(rs, device)
        self._color_profile = wanted[rs.stream.color][1]
        self._align = rs.align(rs.stream.color) if self.config.depth else None
        self._composer, self._compose_block = _frameset_composer(rs) if self.config.depth else (None, None)
        self._slot = LatestSlot(self.stats)
        self._clocks = {"wall": WallClock(), "device": DeviceClock(bias_s=self.config.clock_bias_s)}
        by_sensor: dict[int, list] = {}
        for idx, profile in wanted.values():
            by_sensor.setdefault(idx, []).append(profile)
        sensors = device.query_sensors()
        started = []
        try:
            for idx, profiles in by_sensor.items():
                sensor = sensors[idx]
                self._set_options(rs, sensor)
                sensor.open(profiles if len(profiles) > 1 else profiles[0])
                sensor.start(self._on_frame)
                started.append(sensor)
        except Exception as e:
            _stop(started)
            raise CameraError(f"camera '{self.config.name}': could not start {self._source}: {e}") from e
        self._sensors = started
        self._device = device

    def disconnect(self) -> None:
        if self._device is None:
            return
        _stop(self._sensors)
        self._sensors = []
        with self._lock:
            self._colors.clear()
            self._depths.clear()
        self._slot.close(f"camera '{self.config.name}': disconnected")
        # Drop every reference to the device, its sensors and frames: librealsense releases the
        # USB interface (or closes the recording file) only when the last one goes.
        self._device = None
        self._ctx = None
        self._color_profile = None
        self._align = self._composer = self._compose_block = None

    def _open_device(self, rs) -> Any:
        cfg = self.config
        if self._injected is not None:
            self._source = "injected device"
            return self._injected
        ctx = rs.context()
        self._ctx = ctx  # the playback device lives as long as its context
        if cfg.playback:
            self._source = f"recording {cfg.playback}"
            device = _load_recording(ctx, str(cfg.playback))
            device.as_playback().set_real_time(cfg.playback_realtime)
            return device
        devices = list(ctx.query_devices())
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if cfg.serial:
            if cfg.serial not in serials:
                raise CameraError(
                    f"camera '{cfg.name}': no RealSense with serial {cfg.serial!r} is connected; "
                    f"connected serials: {serials or '(none)'} (set serial: to one of them; check USB)"
                )
            self._source = f"device {cfg.serial}"
            return devices[serials.index(cfg.serial)]
        if len(devices) != 1:
            raise CameraError(
                f"camera '{cfg.name}': serial is empty and {len(devices)} RealSense devices are connected "
                f"({serials or 'none'}); set serial: to choose one"
            )
        self._source = f"device {serials[0]}"
        return devices[0]

    def _wanted_profiles(self, rs, device) -> dict[Any, tuple[int, Any]]:
        """(sensor index, profile) for colour and, with depth, depth; errors list what exists."""
        cfg = self.config
        fps = int(round(cfg.fps))
        want = {rs.stream.color: (getattr(rs.format, cfg.color_format), cfg.width, cfg.height)}
        if cfg.depth:
            want[rs.stream.depth] = (
                rs.format.z16,
                cfg.depth_width or cfg.width,
                cfg.depth_height or cfg.height,
            )
        found: dict[Any, tuple[int, Any]] = {}
        for stream, (fmt, w, h) in want.items():
            available = set()
            for idx, sensor in enumerate(device.query_sensors()):
                for p in sensor.get_stream_profiles():
                    if p.stream_type() != stream or not p.is_video_stream_profile():
                        continue
                    vp = p.as_video_stream_profile()
                    available.add(f"{vp.width()}x{vp.height()}@{p.fps()} {p.format().name}")
                    if (p.format(), vp.width(), vp.height(), p.fps()) == (fmt, w, h, fps):
                        found.setdefault(stream, (idx, p))
            if stream not in found:
                raise CameraError(
                    f"camera '{cfg.name}': {self._source} has no {stream.name} stream {w}x{h}@{fps} "
                    f"{fmt.name}; available: {sorted(available) or '(none)'} (change width/height/fps"
                    + (", depth_width/depth_height" if stream == rs.stream.depth else ", color_format")
                    + ")"
                )
        return found

    def _set_options(self, rs, sensor) -> None:
        options = dict(self.config.sensor_options)
        if self.config.global_time:
            options.setdefault("global_time_enabled", 1.0)
        for name, value in options.items():
            opt = getattr(rs.option, name, None)
            if opt is None:
                raise ConfigError(
                    f"camera '{self.config.name}': sensor_options: unknown librealsense option {name!r} "
                    "(names as in pyrealsense2.option, e.g. exposure, emitter_enabled)"
                )
            if sensor.supports(opt) and not sensor.is_option_read_only(opt):
                sensor.set_option(opt, float(value))

    # -- frames (librealsense's thread) -------------------------------------------------------
    def _on_frame(self, frame) -> None:
        arrival = time.monotonic()
        rs = self._rs
        frame.keep()  # hold the buffer beyond this callback (until paired or pushed out of the queue)
        stream = frame.profile.stream_type()
        with self._lock:
            if stream == rs.stream.color:
                self.stats.frame_number(int(frame.get_frame_number()))
                self._colors.append((frame, arrival))
            elif stream == rs.stream.depth:
                self._depths.append(frame)
            else:
                return
            pair = self._newest_pair()
        if pair is not None:
            self._slot.put(pair)

    def _newest_pair(self):
        """The newest colour frame that has its depth partner (or any colour frame without depth);
        older colour frames are then never completed and are counted as unpaired."""
        if not self._colors:
            return None
        if not self.config.depth:
            color, arrival = self._colors.pop()
            self._colors.clear()
            return color, None, arrival
        tol_ms = 500.0 / self.config.fps  # half a frame period
        for i in range(len(self._colors) - 1, -1, -1):
            color, arrival = self._colors[i]
            ts = color.get_timestamp()
            for depth in self._depths:
                if abs(depth.get_timestamp() - ts) <= tol_ms:
                    self._unpaired += i  # older colour frames that will never be completed
                    for _ in range(i + 1):
                        self._colors.popleft()
                    while self._depths and self._depths[0].get_timestamp() <= depth.get_timestamp():
                        self._depths.popleft()
                    return color, depth, arrival
        return None

    # -- read --------------------------------------------------------------------------------
    def read(self, timeout_s: float | None = None) -> Capture:
        self._require_connected()
        timeout = self._timeout(timeout_s)
        pair = self._slot.take(timeout)
        # A playback is "stopped" once its file is read, possibly before the last frames reached
        # the callbacks: the end is reported only when, in addition, nothing came within the timeout.
        if pair is None and self._device.is_playback() and self._playback_stopped():
            raise CameraError(
                f"camera '{self.config.name}': playback of {self.config.playback or 'the recording'} "
                f"ended after {self.stats.received} colour frames"
            )
        if pair is None:
            raise CameraTimeout(
                f"camera '{self.config.name}' ({self._source}): no new frame in {timeout:.2f} s "
                f"({self.stats.received} colour frames received so far); check the cable (USB 3) and fps"
            )
        color, depth, arrival = pair
        domain = color.get_frame_timestamp_domain().name
        clock = self._clocks["wall" if domain in _WALL_DOMAINS else "device"]
        self._domain = domain
        device_s = color.get_timestamp() / 1000.0
        stamp = clock.to_host(device_s, arrival)
        rgb = np.ascontiguousarray(_TO_RGB[self.config.color_format](np.asanyarray(color.get_data())))
        cam = self.config.name
        capture = Capture(
            color=Frame(image=rgb, stamp=stamp, camera=cam),
            number=int(color.get_frame_number()),
            device_stamp=device_s,
        )
        if depth is not None:
            aligned = self._align.process(self._composer(depth, color)).get_depth_frame()
            if not aligned:
                raise CameraError(f"camera '{cam}': depth alignment produced no frame")
            capture.depth = Frame(image=_to_mm(aligned), stamp=stamp, camera=cam)
        self.stats.returned(stamp, time.monotonic())
        return capture

    def _playback_stopped(self) -> bool:
        return self._device.as_playback().current_status() == self._rs.playback_status.stopped

    # -- intrinsics and status ---------------------------------------------------------------
    def device_intrinsics(self) -> Intrinsics:
        if self._color_profile is None:
            raise CameraError(
                f"camera '{self.config.name}': the device's intrinsics need connect() (or set intrinsics: "
                "to a calibration file)"
            )
        i = self._color_profile.as_video_stream_profile().get_intrinsics()
        model = i.model.name
        K = np.array([[i.fx, 0.0, i.ppx], [0.0, i.fy, i.ppy], [0.0, 0.0, 1.0]])
        return Intrinsics(
            K=K,
            dist=np.asarray(i.coeffs, dtype=np.float64),
            width=int(i.width),
            height=int(i.height),
            model=DISTORTION_MODEL if model in _OPENCV_MODELS else model,
            source=f"device:{self._serial or self._source}",
        )

    def status(self) -> dict[str, Any]:
        clock = self._clocks.get("wall" if self._domain in _WALL_DOMAINS else "device")
        return super().status() | {
            "serial": self._serial,
            "source": self._source,
            "timestamp_domain": self._domain,
            "clock": clock.kind if clock else None,
            "clock_offset_s": clock.offset_s if clock else None,
            "frames_unpaired": self._unpaired,
        }


def _info(rs, device, name: str) -> str:
    key = getattr(rs.camera_info, name)
    return device.get_info(key) if device.supports(key) else ""


def _stop(sensors) -> None:
    for s in sensors:
        for call in (s.stop, s.close):
            try:
                call()
            except RuntimeError:  # already stopped / closed
                pass


def _frameset_composer(rs):
    """A function (depth, color) -> frameset: ``rs.align`` needs one, and frames paired outside a
    syncer are separate frames. A processing block allocates the composite on librealsense's side."""
    out = rs.frame_queue(1, keep_frames=True)
    pending: list = []

    def compose(frame, source):
        source.frame_ready(source.allocate_composite_frame(pending))

    block = rs.processing_block(compose)
    block.start(out)
    lock = threading.Lock()

    def make(depth, color):
        with lock:
            pending[:] = [depth, color]
            block.invoke(color)
            pending.clear()
            return out.wait_for_frame(1000).as_frameset()

    return make, block


def _to_mm(depth_frame) -> np.ndarray:
    """Depth frame -> uint16 millimetres (D4xx units are 1 mm by default; others are rescaled)."""
    raw = np.asanyarray(depth_frame.get_data())
    units = float(depth_frame.get_units())
    if abs(units - 0.001) < 1e-7:
        return raw.copy()
    return np.clip(np.rint(raw.astype(np.float64) * units * 1000.0), 0, 65535).astype(np.uint16)


def _load_recording(ctx, path: str, wait_s: float = 10.0):
    """``ctx.load_device(path)``, waiting while the file is still locked: librealsense finalizes a
    recording in its writer thread after the recorder's last reference goes, so a playback opened
    right after recording (or while another process finishes one) finds the database locked."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return ctx.load_device(path)
        except RuntimeError as e:
            if "database is locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
