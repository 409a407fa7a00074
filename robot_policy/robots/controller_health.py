"""Diagnostics and fault recovery of :class:`~robot_policy.robots.controller.ArmController`.

``ControllerHealth`` is the part of the controller that reports (``status``, ``pacing_status``,
the backend's ``status()`` snapshot) and that handles faults: a backend exception caught by the
loop becomes ``status()["fault"]``, the trajectory is dropped, and the loop thread retries
``arm.recover()`` with exponential backoff (``recover()`` asks for a try at the next tick).
It holds no state of its own: the controller's ``__init__`` creates every attribute it uses, and
its lock guards them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from robot_policy.hardware.safety import SafetyLayer
from robot_policy.hardware.trajectory import TrajectoryExecutor
from robot_policy.robots.base import Arm

# the controller's logger: fault and recovery messages read as the control loop's
log = logging.getLogger("robot_policy.robots.controller")


class ControllerHealth:
    """Status reporting and fault recovery, mixed into ``ArmController``."""

    # set up by ArmController.__init__ (declared here for readers and type checkers)
    arm: Arm
    safety: SafetyLayer
    traj: TrajectoryExecutor
    pacing: Any
    late_points: int
    _lock: threading.Lock
    _wake: threading.Event
    _thread: threading.Thread | None
    _fault: str
    _fault_count: int
    _recoveries: int
    _recover_error: str
    _backoff: float
    _next_recover: float
    _arm_status: dict[str, Any]
    _ticks: int
    _overruns: int
    _rate: float
    _tick_errors: int

    def recover(self) -> None:
        """Attempt recovery from a fault at the next tick (also when ``auto_recover`` is off)."""
        with self._lock:
            if self._fault:
                self._next_recover = -np.inf
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """Diagnostics for ``/diagnostics``: safety counters, fault, recovery, loop rate, backend status."""
        with self._lock:
            st = self.safety.status
            return {
                "backend": self.arm.name,
                "connected": bool(self._arm_status.get("connected", False)),
                "running": self._thread is not None and self._thread.is_alive(),
                "fault": self._fault,
                "fault_count": self._fault_count,
                "recoveries": self._recoveries,
                "last_recover_error": self._recover_error,
                "estopped": st.estopped,
                "watchdog_tripped": st.watchdog_tripped,
                "accepted": st.accepted,
                "rejected": st.rejected,
                "clamped": st.clamped,
                "last_rejection": st.last_rejection,
                "late_trajectory_points": self.late_points,
                "trajectory_active": self.traj.active,
                "loop_hz_target": self.arm.control_hz,
                "loop_hz": round(self._rate, 1),
                "ticks": self._ticks,
                "overruns": self._overruns,
                "tick_callback_errors": self._tick_errors,
                "arm": dict(self._arm_status),
            }

    def pacing_status(self) -> dict[str, Any]:
        """The grid pacer's timeline (late ticks run at once, stalls given up); {} when the arm
        paces itself."""
        pc = self.pacing
        if pc is None:
            return {}
        return {
            "ticks": pc.ticks,
            "late_ticks": pc.late_ticks,
            "max_lateness_ms": round(pc.max_lateness * 1e3, 1),
            "stalls": len(pc.stalls),
            "skipped_ticks": pc.skipped_ticks,
            "last_stall": pc.stalls[-1] if pc.stalls else None,
        }

    def _safe_status(self) -> dict[str, Any]:
        try:
            snap = dict(self.arm.status())
            if self.arm.gripper is not None:
                snap["gripper"] = self.arm.gripper.status()
            return snap
        except Exception as e:  # noqa: BLE001 - diagnostics must not fault the loop
            return {
                "connected": False,
                "mode": "unknown",
                "faults": [f"status(): {e}"],
                "protective_stop": False,
            }

    def _on_fault(self, e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}"
        snap = self._safe_status()  # the arm's own view now, not the last periodic snapshot
        with self._lock:
            self._arm_status = snap
            self._fault = msg
            self._fault_count += 1
            self.traj.clear()
            self._backoff = self.arm.config.recover_min_s
            self._next_recover = time.monotonic() + self._backoff if self.arm.config.auto_recover else np.inf
        log.error(
            "arm '%s' fault (control loop keeps running, recovery %s): %s",
            self.arm.name,
            "scheduled" if self.arm.config.auto_recover else "needs recover()",
            msg,
        )

    def _faulted_tick(self, offset: float) -> None:
        # Keep publishing what the arm measures when the SDK can still read it.
        try:
            js = self.arm.read()
            with self._lock:
                self._publish_state(js, offset)
        except Exception:  # noqa: BLE001 - expected while the connection is down
            pass
        if time.monotonic() < self._next_recover:
            return
        try:
            self.arm.recover()
        except Exception as e:  # noqa: BLE001
            snap = self._safe_status()  # fresh: status() must not report a stale "connected"
            with self._lock:
                self._arm_status = snap
                self._recover_error = f"{type(e).__name__}: {e}"
                self._backoff = min(self._backoff * 2.0, self.arm.config.recover_max_s)
                self._next_recover = (
                    time.monotonic() + self._backoff if self.arm.config.auto_recover else np.inf
                )
            log.warning("arm '%s' recovery failed (next try in %.1f s): %s", self.arm.name, self._backoff, e)
            return
        with self._lock:
            log.warning(
                "arm '%s' recovered from: %s; holding until a fresh command", self.arm.name, self._fault
            )
            self._fault = ""
            self._recover_error = ""
            self._recoveries += 1
            self._backoff = self.arm.config.recover_min_s
            self._next_recover = np.inf
            self._rearm()
