"""The safety layer every command passes through, whatever sends it (policy, teleop, script).

Written once and reused by every arm backend (simulated or real):

* ``submit(cmd, now)`` validates a desired target. Wrong length or NaN/inf is rejected, logged
  and never executed; out-of-limit positions are clamped to the joint limits.
* ``step(current, now)`` is called once per control tick and returns the target to send to the
  arm. It moves the previous output toward the desired target no faster than the velocity limits,
  holds position when the watchdog trips (no fresh command for ``watchdog_timeout`` seconds), and
  holds the position at which the e-stop was pressed until ``reset_estop()`` is called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from robot_policy.hardware.config import HardwareConfig

log = logging.getLogger("robot_policy.safety")

# How far ahead of the measured position a hold may be, in seconds of motion at the velocity
# limit: above a tracking arm's lag (franky-sim's FR3 ~80 ms), small enough that a blocked arm
# is not pushed on (see SafetyLayer._hold_point).
HOLD_LEAD_S = 0.15


class CommandRejected(ValueError):
    """A command that must not be executed (wrong length, NaN/inf, or e-stop latched)."""


@dataclass
class SafetyStatus:
    """Counters and flags the robot node reports on ``/diagnostics``."""

    accepted: int = 0
    """Commands accepted (possibly clamped)."""
    rejected: int = 0
    """Commands rejected and never executed."""
    clamped: int = 0
    """Accepted commands that had at least one entry clamped to its limits."""
    last_rejection: str = ""
    """Why the last command was rejected."""
    watchdog_tripped: bool = False
    """True while the arm holds position because commands stopped arriving."""
    estopped: bool = False
    """True while the e-stop is latched."""
    reasons: list[str] = field(default_factory=list)
    """Recent rejection reasons (last 20)."""


class SafetyLayer:
    """Validates, clamps and rate-limits joint-position commands; watchdog and latching e-stop.

    The command vector is the arm joints followed by the gripper command (if the config has
    one), which is clamped to [-1, 1] and not rate-limited (grippers have their own controller).
    """

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        self.n_arm = len(cfg.joint_names)
        self.dim = cfg.command_dim
        self.lower = np.array(list(cfg.position_lower) + [-1.0] * (self.dim - self.n_arm))
        self.upper = np.array(list(cfg.position_upper) + [1.0] * (self.dim - self.n_arm))
        self.vel = np.asarray(cfg.velocity_limits, dtype=np.float64)
        self.timeout = float(cfg.watchdog_timeout)
        self.status = SafetyStatus()
        self._desired: np.ndarray | None = None
        self._valid_until = -np.inf  # command time after which the watchdog may trip
        self._output: np.ndarray | None = None
        self._last_step: float | None = None
        self._hold: np.ndarray | None = None

    # -- command input -------------------------------------------------------------------
    def validate(self, cmd) -> np.ndarray:
        """Return ``cmd`` as float64 clamped to the limits, or raise :class:`CommandRejected`."""
        arr = np.asarray(cmd, dtype=np.float64).reshape(-1) if cmd is not None else np.zeros(0)
        if arr.shape[0] != self.dim:
            raise CommandRejected(
                f"command has {arr.shape[0]} entries, expected {self.dim} ({', '.join(self.cfg.command_names)})"
            )
        bad = ~np.isfinite(arr)
        if bad.any():
            names = [self.cfg.command_names[i] for i in np.flatnonzero(bad)]
            raise CommandRejected(f"command has non-finite values for {names}: {arr[bad].tolist()}")
        clamped = np.clip(arr, self.lower, self.upper)
        if not np.array_equal(clamped, arr):
            self.status.clamped += 1
            idx = np.flatnonzero(clamped != arr)
            log.warning(
                "clamped %s to joint limits: %s -> %s",
                [self.cfg.command_names[i] for i in idx],
                arr[idx].round(4).tolist(),
                clamped[idx].round(4).tolist(),
            )
        return clamped

    def submit(self, cmd, now: float, valid_for: float = 0.0) -> np.ndarray:
        """Set the desired target. ``valid_for``: seconds the command stays fresh beyond ``now``
        (a trajectory is valid until its last point), before the watchdog timeout counts.

        Raises :class:`CommandRejected` (after logging it) for commands that must not run.
        """
        try:
            if self.status.estopped:
                raise CommandRejected("e-stop is latched; call reset_estop() (the /estop_reset service)")
            target = self.validate(cmd)
        except CommandRejected as e:
            self.reject(str(e))
            raise
        self.status.accepted += 1
        self._desired = target
        self._valid_until = now + max(0.0, valid_for)
        if self.status.watchdog_tripped:
            log.info("fresh command: watchdog released")
        self.status.watchdog_tripped = False
        self._hold = None
        return target

    def reject(self, reason: str) -> None:
        """Count and log a command that will not be executed (for callers that validate batches)."""
        self.status.rejected += 1
        self.status.last_rejection = reason
        self.status.reasons = (self.status.reasons + [reason])[-20:]
        log.error("rejected command (not executed): %s", reason)

    @property
    def last_output(self) -> np.ndarray | None:
        """The target sent on the last tick (None before the first tick)."""
        return None if self._output is None else self._output.copy()

    # -- e-stop --------------------------------------------------------------------------
    def estop(self) -> None:
        """Latch the e-stop: hold position and reject every command until :meth:`reset_estop`."""
        if not self.status.estopped:
            log.error("E-STOP latched: holding position until reset")
        self.status.estopped = True
        self._desired = None
        self._hold = None

    def reset_estop(self) -> None:
        """Release the e-stop. The arm keeps holding until a fresh command arrives."""
        if self.status.estopped:
            log.warning("e-stop reset: waiting for a fresh command")
        self.status.estopped = False

    def _hold_point(self, current: np.ndarray) -> np.ndarray:
        """Where to stop: the last target sent, but no further from the measured position than
        ``HOLD_LEAD_S`` of motion at the velocity limit.

        A position-controlled arm tracks its target with a lag, so holding the *measured* position
        would command it backwards (franky-sim's FR3 lags ~80 ms: it stopped, then reversed 0.016
        rad). Holding the last target stops it where it was already going; the bound keeps a
        blocked arm (target far ahead of where it is) from pushing on. Never where the last
        *command* pointed: that is the motion being stopped.
        """
        hold = np.clip(current, self.lower, self.upper)
        if self._output is not None:
            lead = self.vel * HOLD_LEAD_S
            n = self.n_arm
            hold[:n] = hold[:n] + np.clip(self._output[:n] - hold[:n], -lead, lead)
            hold[n:] = self._output[n:]  # grippers keep their last command (open stays open)
        return hold

    # -- control tick --------------------------------------------------------------------
    def step(self, current, now: float) -> np.ndarray:
        """Target to send this tick, given the measured ``current`` positions (command order)."""
        current = np.asarray(current, dtype=np.float64).reshape(-1)
        if current.shape[0] != self.dim:
            raise ValueError(f"current state has {current.shape[0]} entries, expected {self.dim}")
        dt = 0.0 if self._last_step is None else max(0.0, now - self._last_step)
        self._last_step = now
        if self._output is None:
            self._output = np.clip(current, self.lower, self.upper)

        holding = self.status.estopped or self._desired is None
        if not holding and now > self._valid_until + self.timeout:
            if not self.status.watchdog_tripped:
                log.warning("watchdog: no command for %.2f s, holding position", now - self._valid_until)
            self.status.watchdog_tripped = True
            holding = True
        if holding:
            if self._hold is None:
                self._hold = self._hold_point(current)
            self._output = self._hold.copy()
            return self._output.copy()

        out = self._desired.copy()
        # Velocity limit on the arm joints: the output moves at most vel*dt per tick.
        step = np.clip(out[: self.n_arm] - self._output[: self.n_arm], -self.vel * dt, self.vel * dt)
        out[: self.n_arm] = self._output[: self.n_arm] + step
        self._output = out
        return out.copy()
