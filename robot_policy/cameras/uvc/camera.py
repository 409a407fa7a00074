"""UVC webcams and other V4L2 devices (and video files) through OpenCV's ``VideoCapture``.

A grab thread reads frames as the device delivers them and keeps only the newest, so ``read()``
never returns a frame that sat in the driver's queue. Capture stamps: for a V4L2 device the
driver's buffer timestamp (uvcvideo stamps the start of the frame on ``CLOCK_MONOTONIC``, the
clock of ``time.monotonic()``) when it is plausible, else the arrival time minus ``latency_s``
(a latency measured with ``robot-policy calibrate latency``). A video file stands in for a device
in tests: it is played at its frame rate (``realtime: true``) or frame by frame as read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robot_policy.camera_model import Intrinsics, pinhole_from_fovy
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
from robot_policy.config import ConfigError
from robot_policy.types import Frame


def _cv2():
    return import_sdk("cv2", backend="uvc", package="opencv-python (< 5)", extra="cameras")


@dataclass
class UVCConfig(CameraConfig):
    """A V4L2 / UVC camera (``backend: uvc``), or a video file standing in for one."""

    device: str = "0"
    """V4L2 index (``"0"``), device path (``/dev/video0``, ``/dev/v4l/by-id/...``) or a video file."""
    fourcc: Literal["MJPG", "YUYV", ""] = "MJPG"
    """Pixel format asked of the device: MJPG (compressed, needed for high resolution at 30 fps
    over USB 2) or YUYV (raw); empty: the driver's default. Ignored for files."""
    stamp: Literal["driver", "arrival"] = "driver"
    """Capture stamp source: the V4L2 buffer timestamp when plausible (else arrival), or always arrival."""
    latency_s: float = 0.0
    """Subtracted from arrival stamps: the camera's measured capture-to-arrival latency (s)."""
    fovy_deg: float = 60.0
    """Vertical field of view (degrees) for the nominal intrinsics used without a calibration file."""
    realtime: bool = True
    """Video files only: play at the file's frame rate like a live camera; false: one frame per read."""
    loop: bool = False
    """Video files only: start again at the end instead of ending the stream."""

    def __post_init__(self):
        super().__post_init__()
        if self.latency_s < 0:
            raise ConfigError(f"camera '{self.name}': latency_s must be >= 0, got {self.latency_s}")

    @property
    def is_file(self) -> bool:
        """A regular file (not a /dev node, not an index) is played as a video."""
        return not self.device.isdigit() and Path(self.device).is_file()


@register_camera("uvc")
class UVCCamera(Camera):
    """One V4L2 colour stream (no depth)."""

    config_class = UVCConfig
    extra = "cameras"

    def __init__(self, config: UVCConfig):
        super().__init__(config)
        self.config: UVCConfig = config
        self._cap = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slot = LatestSlot(self.stats)
        self._consumed = threading.Semaphore(0)
        self._driver_stamps = 0
        self._count = 0
        self._is_file = False
        self._last_stamp: float | None = None
        self._last_number = 0
        self._actual: dict[str, Any] = {}

    @property
    def connected(self) -> bool:
        return self._cap is not None

    def connect(self) -> None:
        if self.connected:
            return
        cv2 = _cv2()
        cfg = self.config
        self._is_file = cfg.is_file
        if self._is_file:
            cap = cv2.VideoCapture(cfg.device)
        else:
            source: int | str = int(cfg.device) if cfg.device.isdigit() else cfg.device
            cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise CameraError(
                f"camera '{cfg.name}': cannot open {cfg.device!r} (check `v4l2-ctl --list-devices`, "
                "permissions on /dev/video*, or the file path)"
            )
        if not self._is_file:
            # Order matters for V4L2: pixel format first, then size, then rate.
            if cfg.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
        self._actual = {"width": w, "height": h, "fps": fps, "fourcc": fourcc.strip("\x00")}
        if (w, h) != (cfg.width, cfg.height):
            cap.release()
            raise CameraError(
                f"camera '{cfg.name}': {cfg.device!r} delivers {w}x{h}, config asks {cfg.width}x{cfg.height}; "
                "set width/height to a mode it supports (`v4l2-ctl -d DEV --list-formats-ext`)"
            )
        self._cap = cap
        self._stop.clear()
        self._consumed = threading.Semaphore(0)
        self._slot = LatestSlot(self.stats)
        self._period = 1.0 / (fps if self._is_file and fps > 0 else cfg.fps)
        self._thread = threading.Thread(target=self._grab_loop, name=f"uvc-{cfg.name}", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        if self._cap is None:
            return
        self._stop.set()
        self._consumed.release()  # wake a file reader waiting for the consumer
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._cap.release()
        self._cap = None
        self._slot.close(f"camera '{self.config.name}': disconnected")

    # -- the grab thread -------------------------------------------------------------------------
    def _grab_loop(self) -> None:
        cv2 = _cv2()
        cfg = self.config
        cap = self._cap
        start = time.monotonic()
        index = 0
        while not self._stop.is_set():
            if self._is_file and cfg.realtime:
                # Pace the file like a live camera: frame i is "captured" at start + i * period.
                delay = start + index * self._period - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
            ok = cap.grab()
            arrival = time.monotonic()
            if not ok:
                if self._is_file and cfg.loop:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self._slot.close(
                    f"camera '{cfg.name}': {cfg.device!r} "
                    + ("ended" if self._is_file else "stopped delivering frames (unplugged?)")
                    + f" after {self._count} frames"
                )
                return
            stamp = self._capture_stamp(cap.get(cv2.CAP_PROP_POS_MSEC), arrival)
            number = int(cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1 if self._is_file else self._number_from(stamp)
            ok, bgr = cap.retrieve()
            if not ok:
                continue
            self._count += 1
            self.stats.frame_number(number)
            self._slot.put((bgr, stamp, number))
            index += 1
            if self._is_file and not cfg.realtime:
                self._consumed.acquire()  # one frame per read: wait until this one was taken

    def _number_from(self, stamp: float) -> int:
        """V4L2 through OpenCV exposes no sequence number: count frame periods between stamps, so
        a gap of two periods is one dropped frame (incremental, so a 29.97 vs 30 Hz clock never adds up)."""
        last = self._last_stamp
        self._last_stamp = stamp
        if last is None:
            self._last_number = 0
        else:
            self._last_number += max(1, round((stamp - last) / self._period))
        return self._last_number

    def _capture_stamp(self, driver_ms: float, arrival: float) -> float:
        """The V4L2 buffer timestamp (monotonic ms) when it lies within a second before arrival."""
        if self.config.stamp == "driver" and not self._is_file:
            driver_s = driver_ms / 1000.0
            if arrival - 1.0 < driver_s <= arrival:
                self._driver_stamps += 1
                return driver_s
        return arrival - self.config.latency_s

    # -- read ------------------------------------------------------------------------------------
    def read(self, timeout_s: float | None = None) -> Capture:
        self._require_connected()
        timeout = self._timeout(timeout_s)
        item = self._slot.take(timeout)
        if item is None:
            raise CameraTimeout(
                f"camera '{self.config.name}' ({self.config.device}): no new frame in {timeout:.2f} s "
                f"({self._count} frames so far)"
            )
        if self._is_file and not self.config.realtime:
            self._consumed.release()
        bgr, stamp, number = item
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        self.stats.returned(stamp, time.monotonic())
        return Capture(color=Frame(image=rgb, stamp=stamp, camera=self.config.name), number=number)

    def device_intrinsics(self) -> Intrinsics:
        # UVC devices report no intrinsics: a nominal pinhole from the configured field of view.
        cfg = self.config
        return pinhole_from_fovy(cfg.fovy_deg, cfg.width, cfg.height, source=f"nominal:fovy={cfg.fovy_deg}")

    def status(self) -> dict[str, Any]:
        return super().status() | {
            "device": self.config.device,
            "mode": self._actual,
            "driver_stamps": self._driver_stamps,
        }
