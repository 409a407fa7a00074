"""Inference-latency estimate over a recent window.

Asynchronous chunk execution must know how long the next inference will take, to start it
early enough and to drop the actions that will already be in the past when it arrives. A
lifetime maximum is the wrong estimate: one slow call (a page fault, a GC pause, the first
call after load) would inflate it forever and make every later chunk skip actions it did
not need to skip, so the executed trajectory jumps. We take a high percentile over the
last ``window`` measurements instead: it covers ordinary jitter and forgets old spikes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyConfig:
    """How the inference latency is estimated."""

    window: int = 20
    """Number of most recent measurements the estimate is taken over (older ones are forgotten)."""
    percentile: float = 90.0
    """Percentile of the window used as the estimate (90: covers jitter, ignores rare spikes)."""
    initial: float = 0.0
    """Estimate (seconds) before any measurement exists, e.g. a value from calibration/."""


class LatencyEstimator:
    """Percentile of the last ``window`` measured latencies (seconds).

    >>> est = LatencyEstimator(window=5)
    >>> for s in (0.5, 0.05, 0.05, 0.05, 0.05, 0.05):
    ...     est.add(s)
    >>> round(est.estimate(), 3)   # the 0.5 s spike has left the window
    0.05
    """

    def __init__(self, window: int = 20, percentile: float = 90.0, initial: float = 0.0):
        if window < 1:
            raise ValueError(f"LatencyEstimator: window must be >= 1, got {window}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"LatencyEstimator: percentile must be in [0, 100], got {percentile}")
        if not (math.isfinite(initial) and initial >= 0.0):
            raise ValueError(f"LatencyEstimator: initial must be a finite number >= 0, got {initial}")
        self.window = int(window)
        self.percentile = float(percentile)
        self.initial = float(initial)
        self._samples: deque[float] = deque(maxlen=self.window)

    @classmethod
    def from_config(cls, cfg: LatencyConfig) -> LatencyEstimator:
        return cls(window=cfg.window, percentile=cfg.percentile, initial=cfg.initial)

    def add(self, seconds: float) -> None:
        """Record one measured latency (seconds, finite, >= 0)."""
        seconds = float(seconds)
        if not (math.isfinite(seconds) and seconds >= 0.0):
            raise ValueError(f"LatencyEstimator.add: latency must be finite and >= 0 seconds, got {seconds}")
        self._samples.append(seconds)

    @contextmanager
    def measure(self, clock=time.monotonic) -> Iterator[None]:
        """``with est.measure(): chunk = engine.predict(obs)`` records the block's duration."""
        t0 = clock()
        yield
        self.add(clock() - t0)

    def estimate(self) -> float:
        """Latency (seconds) to plan with: the percentile of the window, or ``initial`` if empty."""
        if not self._samples:
            return self.initial
        return float(np.percentile(np.fromiter(self._samples, dtype=np.float64), self.percentile))

    def steps(self, dt: float) -> int:
        """Control ticks of period ``dt`` that elapse during one inference (rounded up)."""
        if dt <= 0:
            raise ValueError(f"LatencyEstimator.steps: dt must be > 0, got {dt}")
        # The small epsilon keeps an exact multiple (0.2 s at dt 0.1) from rounding up to 3.
        return max(0, math.ceil(self.estimate() / dt - 1e-9))

    def __len__(self) -> int:
        return len(self._samples)

    def reset(self) -> None:
        self._samples.clear()

    def summary(self) -> dict:
        """p50/p90/max/mean over the window plus the current estimate, for diagnostics."""
        if not self._samples:
            return {"n": 0, "estimate": self.initial}
        a = np.fromiter(self._samples, dtype=np.float64)
        return {
            "n": int(a.size),
            "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)),
            "max": float(a.max()),
            "mean": float(a.mean()),
            "estimate": self.estimate(),
        }


# -- seeding from calibration -------------------------------------------------------------------
LATENCY_FILE = "latency.json"
"""Written by ``robot-policy calibrate latency`` into ``calibration/<setup>/``."""


@dataclass(frozen=True)
class LatencySeed:
    """The starting latency estimate taken from a setup's calibrated latencies.

    Before the first inference has been timed, the scheduler plans with ``initial``; the
    calibrated camera latency (capture to host) plus arm latency (command to motion) is the
    measured part of the loop's delay, a better start than 0. Measured inference latencies
    replace it as they arrive (the window holds measurements only).
    """

    seconds: float
    """The seed: ``arm_s`` + ``camera_s`` (each 0 when not calibrated or not usable)."""
    arm_s: float
    """Calibrated arm latency used (s)."""
    camera_s: float
    """Largest calibrated latency among the cameras the policy uses (s)."""
    camera: str
    """Which camera that is ('' when none)."""
    source: str
    """The file it came from."""
    notes: tuple[str, ...] = ()
    """Entries skipped and why (a negative latency: stamps not on one clock)."""

    def apply(self, cfg: LatencyConfig) -> LatencyConfig:
        """``cfg`` starting from this seed."""
        return LatencyConfig(window=cfg.window, percentile=cfg.percentile, initial=self.seconds)

    def describe(self) -> str:
        parts = [f"arm {self.arm_s * 1e3:.1f} ms"]
        if self.camera:
            parts.append(f"camera {self.camera} {self.camera_s * 1e3:.1f} ms")
        return f"{self.seconds * 1e3:.1f} ms ({' + '.join(parts)}) from {self.source}"


def _entry_latency(entry, what: str, notes: list[str]) -> float:
    value = entry.get("latency_s") if isinstance(entry, dict) else None
    if value is None or not math.isfinite(float(value)):
        notes.append(f"{what}: no latency_s")
        return 0.0
    if float(value) < 0:
        notes.append(f"{what}: negative latency {float(value):.4f} s (stamps not on one clock), ignored")
        return 0.0
    return float(value)


def latency_seed(path, cameras=None) -> LatencySeed | None:
    """The seed from a ``latency.json`` (None when the file does not exist). ``cameras``: names of
    the cameras the policy reads (None: every camera in the file); the slowest one counts, since
    an observation is as old as its oldest input."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"latency calibration {path} cannot be read: {e}") from None
    if doc.get("kind", "latency") != "latency":
        raise ValueError(f"{path}: kind is {doc.get('kind')!r}, expected 'latency'")
    notes: list[str] = []
    arm = _entry_latency(doc["arm"], "arm", notes) if "arm" in doc else 0.0
    cams = doc.get("cameras") or {}
    wanted = list(cams) if cameras is None else [c for c in cameras if c in cams]
    per_camera = {c: _entry_latency(cams[c], f"camera {c}", notes) for c in wanted}
    camera = max(per_camera, key=per_camera.get, default="")
    cam_s = per_camera.get(camera, 0.0)
    return LatencySeed(arm + cam_s, arm, cam_s, camera, str(path), tuple(notes))


def seed_for_setup(folder, setup: str, cameras=None) -> tuple[LatencySeed | None, str]:
    """The seed of robot setup ``setup`` from ``<folder>/<setup>/latency.json`` and a one-line
    description for logs and ``/diagnostics`` (why there is none, when there is none).
    ``folder`` empty or None: seeding is off."""
    from pathlib import Path

    if not folder:
        return None, "off (no calibration folder)"
    path = Path(folder) / setup / LATENCY_FILE
    seed = latency_seed(path, cameras)
    if seed is None:
        return None, f"none: {path} does not exist (robot-policy calibrate latency --setup {setup})"
    text = seed.describe() + "".join(f"; {n}" for n in seed.notes)
    return seed, text
