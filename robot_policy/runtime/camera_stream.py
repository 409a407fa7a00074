"""ROS-free core of ``camera_node``: which cameras of a robot setup it drives, with which options,
and one capture thread per camera that hands every capture to a publish function.

- :func:`driver_cameras` picks the cameras of a hardware YAML that run on their own (every
  backend but ``sim``, whose frames the simulated world's robot node renders and publishes), or
  the ones named.
- :func:`camera_options` turns one ``cameras:`` entry into backend options and adds the
  intrinsics calibrated for it (``calibration/<setup>/<camera>_intrinsics.json``, written by
  ``robot-policy calibrate intrinsics --setup <setup> --camera <camera>``) when that file exists
  and the entry names none itself.
- :class:`CameraStream` reads one connected camera in its own thread (never in an executor),
  calls ``publish(capture)`` for each capture, reconnects after a stream error, and keeps the
  figures ``/diagnostics`` reports: rate from capture stamps, capture-to-publish latency,
  device drops, frames superseded before a read, timeouts, errors.
- :func:`clock_offset` maps capture stamps (``time.monotonic()``) onto another clock (the ROS
  graph's), measured at every frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robot_policy.calibration.results import default_path
from robot_policy.cameras import (
    CAMERAS,
    Camera,
    CameraError,
    CameraTimeout,
    Capture,
    camera_class,
    options_from_hardware,
)
from robot_policy.config import ConfigError

_log = logging.getLogger("robot_policy.camera_stream")


def driver_backends() -> list[str]:
    """Registered camera backends that camera_node can run on their own (all but ``sim``)."""
    return [n for n in CAMERAS.names() if camera_class(n).standalone]


def driver_cameras(hw: Any, names: list[str] | None = None) -> list[Any]:
    """The ``cameras:`` entries of hardware config ``hw`` that camera_node runs: the ones named in
    ``names`` (in that order), else every camera whose backend runs on its own (not ``sim``)."""
    known = {c.name: c for c in hw.cameras}
    if not names:
        return [c for c in hw.cameras if camera_class(c.backend).standalone]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"cameras: hardware config '{hw.name}' has no camera(s) {unknown}; its cameras are "
            f"{list(known) or '(none)'} (fix the cameras parameter or the YAML's cameras: list)"
        )
    hosted = [n for n in names if not camera_class(known[n].backend).standalone]
    if hosted:
        raise ConfigError(
            f"cameras: camera(s) {hosted} of '{hw.name}' have backend "
            f"'{known[hosted[0]].backend}', whose frames the simulated world's robot node "
            "(robot_node / sim_node) publishes; camera_node runs only driver backends "
            f"({', '.join(driver_backends())}): leave them out of the cameras parameter"
        )
    return [known[n] for n in names]


def calibration_file(setup: str, camera: str, root: str | Path = "calibration") -> Path | None:
    """``<root>/<setup>/<camera>_intrinsics.json`` when it exists, else None."""
    path = default_path(setup, "intrinsics", camera, root)
    return path if path.is_file() else None


def camera_options(
    hw: Any, camera: Any, calibration_root: str | Path | None = "calibration"
) -> dict[str, Any]:
    """Backend options of one ``cameras:`` entry (:func:`robot_policy.cameras.options_from_hardware`),
    with ``intrinsics`` set to the setup's calibration file for this camera when the entry names
    none and the file exists (``calibration_root`` empty or None: never look)."""
    options = options_from_hardware(camera)
    if not options.get("intrinsics") and calibration_root:
        found = calibration_file(hw.name, camera.name, calibration_root)
        if found is not None:
            options["intrinsics"] = str(found)
    return options


def clock_offset(now: Callable[[], float], mono: Callable[[], float] = time.monotonic) -> float:
    """``now() - mono()`` (s), reading ``now`` between two ``mono`` reads so the pair is consistent
    to the duration of one call. A capture stamp ``t`` on ``mono``'s clock is ``t + offset`` on
    ``now``'s. Measured per frame: the ROS clock is the wall clock, which NTP steps and slews."""
    m0 = mono()
    t = now()
    m1 = mono()
    return t - 0.5 * (m0 + m1)


def _ms(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q) * 1e3) if values.size else None


class CameraStream:
    """Reads one camera in its own thread and hands each capture to ``publish``.

    ``camera`` is connected by the caller (so a wrong serial or file fails at start, loudly). A read
    timeout is counted and reading goes on. Any other error (stream ended, device unplugged) is
    counted and logged; the camera is disconnected and connected again every ``reconnect_s``
    until it streams again (``reconnect_s <= 0``: the stream stays down, state ``failed``).
    """

    def __init__(
        self,
        camera: Camera,
        publish: Callable[[Capture], None],
        *,
        reconnect_s: float = 1.0,
        read_timeout_s: float | None = None,
        window: int = 300,
        clock: Callable[[], float] = time.monotonic,
        warn: Callable[[str], None] | None = None,
        error: Callable[[str], None] | None = None,
        info: Callable[[str], None] | None = None,
    ):
        self.camera = camera
        self.name = camera.config.name
        self._publish = publish
        self.reconnect_s = float(reconnect_s)
        self.read_timeout_s = read_timeout_s
        self._clock = clock
        self._warn = warn or _log.warning
        self._error = error or _log.error
        self._info = info or _log.info
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._latency: deque[float] = deque(maxlen=window)
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)  # (publish time, capture stamp)
        self.state = "connected" if camera.connected else "disconnected"
        self.published = 0
        self.timeouts = 0
        self.errors = 0
        self.publish_errors = 0
        self.reconnects = 0
        self.last_error = ""
        self.last_publish: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and disconnect the camera (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        try:
            self.camera.disconnect()
        except Exception as e:  # noqa: BLE001 - shutting down: report, do not raise
            self._warn(f"camera '{self.name}': error while disconnecting: {e}")
        self.state = "stopped"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the capture thread ----------------------------------------------------------------------
    def _run(self) -> None:
        self.state = "streaming"
        while not self._stop.is_set():
            try:
                capture = self.camera.read(self.read_timeout_s)
            except CameraTimeout as e:
                if self._stop.is_set():
                    return
                self.timeouts += 1
                self.last_error = str(e)
                if self.timeouts == 1 or self.timeouts % 10 == 0:
                    self._warn(f"{e} [{self.timeouts} timeouts]")
                continue
            except Exception as e:  # noqa: BLE001 - CameraError or an SDK error: reconnect
                if self._stop.is_set():
                    return
                self.errors += 1
                self.last_error = (
                    str(e) if isinstance(e, CameraError) else f"camera '{self.name}': {type(e).__name__}: {e}"
                )
                if not self._recover():
                    return
                continue
            try:
                self._publish(capture)
            except Exception as e:  # noqa: BLE001 - a publish failure must not kill the stream
                self.publish_errors += 1
                self.last_error = f"camera '{self.name}': publish failed: {type(e).__name__}: {e}"
                if self._stop.is_set():
                    return
                if self.publish_errors == 1 or self.publish_errors % 100 == 0:
                    self._error(f"{self.last_error} [{self.publish_errors} failures]")
                continue
            now = self._clock()
            with self._lock:
                self.published += 1
                self.last_publish = now
                self._latency.append(now - capture.stamp)
                self._recent.append((now, capture.stamp))

    def _recover(self) -> bool:
        """Reconnect until the camera streams again; False when the stream stays down."""
        if self.reconnect_s <= 0:
            self._error(f"{self.last_error}; not reconnecting (reconnect_s <= 0)")
            self.state = "failed"
            return False
        self._error(f"{self.last_error}; reconnecting every {self.reconnect_s:g} s")
        self.state = "reconnecting"
        attempts = 0
        while not self._stop.wait(self.reconnect_s):
            attempts += 1
            try:
                self.camera.disconnect()
                self.camera.connect()
            except Exception as e:  # noqa: BLE001 - keep trying; the reason is in diagnostics
                self.last_error = f"camera '{self.name}': reconnect failed: {e}"
                if attempts == 1 or attempts % 10 == 0:
                    self._warn(f"{self.last_error} [attempt {attempts}]")
                continue
            self.reconnects += 1
            self.state = "streaming"
            self._info(f"camera '{self.name}': reconnected after {attempts} attempt(s)")
            return True
        return False

    # -- figures ---------------------------------------------------------------------------------
    def status(self, window_s: float = 2.0) -> dict[str, Any]:
        """The camera's own ``status()`` plus this stream's figures:

        ``rate_hz`` (from the capture stamps of the frames published in the last ``window_s``),
        ``capture_to_publish_ms_p50/p99/max`` (host clock at the end of ``publish`` minus the
        capture stamp, last ``window`` frames), ``frames_published``, ``read_timeouts``,
        ``errors``, ``publish_errors``, ``reconnects``, ``state``, ``last_error``.
        """
        now = self._clock()
        with self._lock:
            lat = np.asarray(self._latency, dtype=np.float64)
            recent = [s for t, s in self._recent if t >= now - window_s]
            published = self.published
        rate = 0.0
        if len(recent) >= 2 and max(recent) > min(recent):
            rate = (len(recent) - 1) / (max(recent) - min(recent))
        try:
            cam = self.camera.status()
        except Exception as e:  # noqa: BLE001 - diagnostics must not fail with the camera
            cam = {"camera": self.name, "status_error": str(e)}
        return cam | {
            "state": self.state,
            "frames_published": published,
            "rate_hz": rate,
            "capture_to_publish_ms_p50": _ms(lat, 50),
            "capture_to_publish_ms_p99": _ms(lat, 99),
            "capture_to_publish_ms_max": float(lat.max() * 1e3) if lat.size else None,
            "read_timeouts": self.timeouts,
            "errors": self.errors,
            "publish_errors": self.publish_errors,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }


__all__ = [
    "CameraStream",
    "calibration_file",
    "camera_options",
    "clock_offset",
    "driver_backends",
    "driver_cameras",
]
