"""Timed joint trajectories, executed like ros2_control's joint_trajectory_controller.

A trajectory is a list of points, each with its time relative to a start time. At any instant
the commanded target is the linear interpolation between the surrounding points, starting from
where the arm was commanded when the trajectory arrived; after the last point the last point is
held. A new trajectory replaces the current one. ROS-free: the sim node and the real-arm
drivers share it.
"""

from __future__ import annotations

import numpy as np


class TrajectoryExecutor:
    """Holds the active trajectory and answers "what is the target at time t"."""

    def __init__(self):
        self.times: np.ndarray | None = None  # absolute times (s), increasing
        self.points: np.ndarray | None = None  # (T, D)
        self._final_sent = False  # the last point itself was submitted after the end

    @property
    def active(self) -> bool:
        return self.times is not None

    @property
    def end_time(self) -> float:
        return float(self.times[-1]) if self.times is not None else -np.inf

    def set(
        self, start: float, time_from_start: np.ndarray, points: np.ndarray, now: float, current: np.ndarray
    ) -> int:
        """Replace the trajectory. ``start``: absolute start time (``<= 0`` means ``now``).

        Points whose time already passed are dropped; the first remaining segment starts from
        ``current`` (the target commanded now) at ``now``, as joint_trajectory_controller does, so
        a late trajectory never makes the arm jump. Returns how many points were dropped as late.
        """
        start = now if start <= 0 else start
        t = start + np.asarray(time_from_start, dtype=np.float64)
        pts = np.asarray(points, dtype=np.float64)
        if len(t) == 0:
            self.clear()
            return 0
        if np.any(np.diff(t) <= 0):
            raise ValueError("trajectory time_from_start values must be strictly increasing")
        late = int(np.sum(t < now))
        keep = t >= now
        if not keep.any():
            # Everything is in the past: go to (and hold) the last point.
            self.times, self.points = np.array([now]), pts[-1:].copy()
            self._final_sent = False
            return late
        t, pts = t[keep], pts[keep]
        if t[0] > now:
            t = np.concatenate([[now], t])
            pts = np.concatenate([np.asarray(current, dtype=np.float64)[None], pts])
        self.times, self.points = t, pts
        self._final_sent = False
        return late

    def clear(self) -> None:
        self.times = None
        self.points = None

    def feed(self, safety, now: float) -> None:
        """One control tick: make the target at ``now`` the desired command of ``safety`` (a
        :class:`~robot_policy.hardware.safety.SafetyLayer`).

        Points were validated on arrival; ``valid_for`` keeps the watchdog quiet until the last
        point. After it nothing is submitted: the last point is held until the watchdog timeout,
        then the trajectory is forgotten and the arm holds where it is. Nothing is submitted
        while the e-stop is latched.
        """
        desired = self.sample(now)
        if desired is not None and not safety.status.estopped and now <= self.end_time:
            safety.submit(desired, now, valid_for=self.end_time - now)
        elif desired is not None and not safety.status.estopped and not self._final_sent:
            # First tick past the end: command the last point itself (ticks rarely land on it
            # exactly, and holding the previous tick's sample would stop up to a period short).
            safety.submit(desired, now, valid_for=0.0)
            self._final_sent = True
        elif desired is not None and now > self.end_time + safety.timeout:
            self.clear()

    def sample(self, now: float) -> np.ndarray | None:
        """Target at ``now``: linear interpolation; the last point after the end; None if idle."""
        if self.times is None:
            return None
        t, p = self.times, self.points
        if now >= t[-1]:
            return p[-1].copy()
        if now <= t[0]:
            return p[0].copy()
        i = int(np.searchsorted(t, now, side="right"))
        a = (now - t[i - 1]) / (t[i] - t[i - 1])
        return (1 - a) * p[i - 1] + a * p[i]
