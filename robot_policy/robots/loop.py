"""Small pieces of the controller's loop thread: what a tick reports, and work handed to the thread.

A simulated world renders with a GL context bound to the thread that created it, so anything that
touches the world (a scene reset, a camera frame) must run in the controller's loop thread:
:class:`LoopJobs` queues such calls and the loop runs them between two ticks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robot_policy.types import JointState


@dataclass
class TickReport:
    """What one control tick did, handed to ``on_tick`` in the loop thread."""

    index: int
    """Tick number since start."""
    stamp: float
    """The tick's command time on the controller's clock (grid-paced: its due time)."""
    state: JointState | None
    """Measured state after the tick, command order (None before the first read)."""
    command: JointState | None
    """Target sent this tick, command order (None when nothing was sent: e-stop, fault)."""
    started: float = 0.0
    """When the tick actually began (``time.monotonic()``): loop jitter (``bench arm``)."""
    command_source: str = ""
    """The sender's tag of the command in force this tick (the ``source`` given with the last
    accepted forward target or trajectory; "" when none was given): an intervention arbiter
    learns from it which of its commands each executed step came from."""


class LoopJobs:
    """Calls queued for one thread (the loop) and run there by :meth:`run_pending`."""

    def __init__(self, what: str):
        self.what = what
        self.thread: threading.Thread | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        """Run ``fn`` in the loop thread and return its result (its exception is raised here).
        Runs at once when called from that thread, or when there is no loop."""
        if self.thread is None or threading.current_thread() is self.thread:
            return fn()
        done, box = threading.Event(), {}

        def job():
            try:
                box["value"] = fn()
            except Exception as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e
            done.set()

        self._queue.put(job)
        if not done.wait(timeout):
            raise TimeoutError(f"{self.what} did not run the request within {timeout} s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def run_pending(self) -> None:
        """In the loop thread, between ticks."""
        while not self._queue.empty():
            self._queue.get_nowait()()
