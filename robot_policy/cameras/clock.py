"""Mapping device timestamps to the host clock (``time.monotonic()``), the one clock of the stack.

Two situations, one class each:

Both report ``offset_s = host_monotonic - device_time`` (s), the value ``status()`` shows.

- The device (or its driver) already stamps frames on the host's wall clock: RealSense "global
  time" (hardware timestamps converted by librealsense to the host's system clock), "system time"
  (host arrival on the system clock). Only the wall-to-monotonic offset is needed:
  :class:`WallClock`.
- The device stamps frames on its own free-running clock (RealSense ``hardware_clock`` when
  global time is off). Its offset to the host clock is estimated from arrivals: every frame
  arrives after it was captured, so ``arrival - device_time`` is the offset plus a positive
  transport delay, and its minimum over a window is the best estimate (the frame that travelled
  fastest): :class:`DeviceClock`. The estimate is late by the smallest transport delay, which a
  measured camera latency (``calibration/<setup>/latency.json``) can remove (``bias_s``).
"""

from __future__ import annotations

import time
from collections import deque


def wall_minus_monotonic() -> float:
    """``time.time() - time.monotonic()`` now, read between two monotonic reads so the pair is
    consistent to about a microsecond. It changes when NTP steps or slews the wall clock, so it
    is measured again for every frame rather than once at start."""
    m0 = time.monotonic()
    w = time.time()
    m1 = time.monotonic()
    return w - 0.5 * (m0 + m1)


class WallClock:
    """Device timestamps already on the host's wall clock (seconds since the epoch)."""

    kind = "wall"

    def __init__(self):
        self.offset_s: float | None = -wall_minus_monotonic()
        """host_monotonic - device_time (s) in use: minus the wall-to-monotonic offset."""

    def to_host(self, device_s: float, arrival_s: float) -> float:
        self.offset_s = -wall_minus_monotonic()
        return device_s + self.offset_s


class DeviceClock:
    """A free-running device clock; offset estimated as the minimum ``arrival - device`` over a window."""

    kind = "device"

    def __init__(self, window: int = 300, bias_s: float = 0.0):
        self._diffs: deque[float] = deque(maxlen=window)
        self.bias_s = bias_s
        """Known smallest transport delay (s), subtracted from the estimate."""
        self.offset_s: float | None = None
        """host_monotonic - device_time (s) in use; None before the first frame."""

    def to_host(self, device_s: float, arrival_s: float) -> float:
        d = arrival_s - device_s
        if self._diffs and abs(d - min(self._diffs)) > 5.0:
            # The device clock restarted or wrapped (or playback jumped): start a new estimate.
            self._diffs.clear()
        self._diffs.append(d)
        self.offset_s = min(self._diffs) - self.bias_s
        return device_s + self.offset_s
