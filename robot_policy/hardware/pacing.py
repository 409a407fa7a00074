"""Fixed-grid pacing for control loops, with bounded catch-up and stall reports.

A control loop that falls behind has two choices. Re-anchoring its schedule at "now" (what the
simulated robot did before) silently drops ticks: the streams it publishes get holes, the
recorder counts missing frames, and a person's demonstration is refused for a hiccup of one
period. Keeping the grid instead runs the late ticks at once, so every tick ``k`` still exists
and carries its due time ``t0 + k * period``; a real controller (ros2_control's update loop,
libfranka's 1 kHz loop) behaves the same way. Only a stall longer than ``max_catch_up`` (the
process was frozen, the machine swapped) gives up on the missed ticks: those are reported as a
:class:`Stall`, at once, so the operator hears about it while it matters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tick:
    """One scheduled tick."""

    index: int
    """Tick number since the pacer started (skipped ticks of a stall are not numbered)."""
    due: float
    """When the tick was due on the pacer's clock (seconds)."""
    lateness: float
    """How late it started (seconds, >= 0)."""


@dataclass(frozen=True)
class Stall:
    """Ticks given up because the loop fell further behind than ``max_catch_up``."""

    due: float
    """Due time of the first skipped tick (pacer clock)."""
    resumed: float
    """When the loop ran again (pacer clock)."""
    skipped: int
    """Ticks that never ran."""

    @property
    def seconds(self) -> float:
        return self.resumed - self.due


@dataclass
class PacingStats:
    """Counters for diagnostics."""

    ticks: int = 0
    late_ticks: int = 0
    """Ticks that started more than half a period late (run at once to keep the grid)."""
    max_lateness: float = 0.0
    skipped_ticks: int = 0
    stalls: list[Stall] = field(default_factory=list)


class TickPacer:
    """Sleep until the next tick of a fixed grid; run late ticks at once; report stalls.

    ``stop`` (a ``threading.Event``) interrupts the sleep. ``on_stall`` is called from the loop's
    thread as soon as a stall is detected.
    """

    def __init__(
        self,
        period: float,
        max_catch_up: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        on_stall: Callable[[Stall], None] | None = None,
    ):
        if not period > 0:
            raise ValueError(f"TickPacer period must be > 0 seconds, got {period}")
        if max_catch_up < period:
            raise ValueError(
                f"TickPacer max_catch_up ({max_catch_up} s) must be at least one period ({period} s)"
            )
        self.period = float(period)
        self.max_catch_up = float(max_catch_up)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.on_stall = on_stall
        self.stats = PacingStats()
        self._next_due: float | None = None
        self._index = 0

    def wait(self) -> Tick:
        """Block until the next tick is due (returns at once when it is already late)."""
        now = self.clock()
        if self._next_due is None:
            self._next_due = now
        due = self._next_due
        behind = now - due
        if behind > self.max_catch_up:
            skipped = int(behind / self.period + 1e-9)  # the ticks due before now
            stall = Stall(due=due, resumed=now, skipped=skipped)
            self.stats.stalls.append(stall)
            self.stats.skipped_ticks += skipped
            due += skipped * self.period
            if self.on_stall is not None:
                self.on_stall(stall)
        elif behind < 0:
            self.stop.wait(-behind)
        lateness = max(0.0, self.clock() - due)
        self._next_due = due + self.period
        tick = Tick(index=self._index, due=due, lateness=lateness)
        self._index += 1
        self.stats.ticks += 1
        if lateness > 0.5 * self.period:
            self.stats.late_ticks += 1
        self.stats.max_lateness = max(self.stats.max_lateness, lateness)
        return tick
