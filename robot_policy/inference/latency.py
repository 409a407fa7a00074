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
