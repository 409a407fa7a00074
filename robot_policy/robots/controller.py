"""The control loop written once for every arm backend: ``ArmController``.

It owns one :class:`~robot_policy.robots.base.Arm` and runs its fast loop in a thread of its own
at the arm's native rate (never in a ROS executor, never waiting on inference). Each tick:

    arm.read() -> TrajectoryExecutor.sample(now) -> SafetyLayer.step (rate limit, watchdog,
    e-stop hold) -> arm.write(joints) + gripper.command(last entry)

Thread-safe entry points (what ``robot_node`` calls from its callbacks): ``submit_trajectory``
(a JointTrajectory-like timed chunk), ``submit_target`` (forward position command), ``estop``,
``reset_estop``, ``recover``, ``state``, ``last_command``, ``status``. They only touch the safety
layer and the trajectory under a lock; SDK calls happen in the loop thread alone.

Faults: any exception from the backend (SDK error, lost connection, reflex) is caught, reported
in ``status()["fault"]``, the trajectory is dropped and commands are refused; the loop keeps
running (still publishing the measured state when the SDK can read it) and calls
``arm.recover()`` with exponential backoff. After recovery the arm holds where it is until a
fresh command arrives. Status reporting and this recovery live in ``controller_health`` (a mixin).

Pacing: real arms pace the loop themselves (``period_start``/``period_wait``: sleep out the
period, or UR's initPeriod/waitPeriod). A simulated arm stepped once per tick gets a fixed grid
(``arm.make_pacer``: ``hardware.pacing.TickPacer``): a late tick runs at once and its command is
stamped with its due time; its observation with that time plus the step's compute time (capped
at a quarter period), so the recorder pairs each observation with the command that followed it.

After every tick ``on_tick(TickReport)`` runs in the loop thread (``robot_node`` publishes from
it; a simulated world's cameras render there, where its GL context lives). ``call_in_loop(fn)``
runs other work between ticks in that thread (a scene reset).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robot_policy.hardware.safety import CommandRejected, SafetyLayer
from robot_policy.hardware.trajectory import TrajectoryExecutor
from robot_policy.robots.base import Arm
from robot_policy.robots.controller_health import ControllerHealth
from robot_policy.robots.loop import LoopJobs, TickReport
from robot_policy.types import JointState

log = logging.getLogger("robot_policy.robots.controller")

STATUS_HZ = 10.0
"""How often the loop refreshes the backend's ``status()`` snapshot (SDK calls stay in the loop)."""
GRIPPER_READ_HZ = 20.0
"""How often the loop reads the gripper (a network round trip on most grippers)."""


class ArmController(ControllerHealth):
    """Safety layer + trajectory executor + gripper + e-stop + watchdog around one :class:`Arm`."""

    def __init__(
        self,
        arm: Arm,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[TickReport], None] | None = None,
        on_stall: Callable[[Any], None] | None = None,
    ):
        """``clock``: the time base of commands and stamps (``robot_node``: the graph's ROS clock);
        backends stamp on ``time.monotonic()`` and the loop maps their stamps onto it.
        ``on_tick``: called in the loop thread after every tick. ``on_stall``: grid-paced arms
        only, called at once when the loop fell more than ``max_catch_up_s`` behind."""
        self.arm = arm
        self.hw = arm.hw
        self.clock = clock
        self.on_tick = on_tick
        self.on_stall = on_stall
        self.pacing = None  # PacingStats of a grid-paced loop
        self._jobs = LoopJobs(f"the control loop of arm '{arm.name}'")
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._tick_errors = 0
        self.n_arm = arm.n_joints
        self.names = tuple(self.hw.command_names)
        self.safety = SafetyLayer(self.hw)
        self.traj = TrajectoryExecutor()
        self.late_points = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()  # cuts the period wait short (e-stop)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._has_state = threading.Event()
        self._state: JointState | None = None
        self._sent: JointState | None = None
        self._source = ""  # sender's tag of the last accepted command (TickReport.command_source)
        self._sent_source = ""  # ... of the command in force on the last tick
        self._gripper_cmd = -1.0  # current gripper command (command-order state entry)
        self._gripper_width = float("nan")
        self._stop_pending = False
        self._prev: tuple[float, np.ndarray] | None = None  # (time, joints) of the last target sent
        self._fault = ""
        self._fault_count = 0
        self._recoveries = 0
        self._recover_error = ""
        self._backoff = arm.config.recover_min_s
        self._next_recover = np.inf
        self._arm_status: dict[str, Any] = {}
        self._ticks = 0
        self._overruns = 0
        self._rate = 0.0
        self._clock_offset: float | None = None  # see _offset()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ArmController:
        """Connect the arm (errors raise here: missing SDK, wrong address) and start the loop."""
        if self._thread is not None:
            return self
        if self.hw.gripper_joint and self.arm.config.gripper is False:
            raise ValueError(
                f"hardware config '{self.hw.name}' names gripper_joint '{self.hw.gripper_joint}' but "
                f"arm_config.gripper is false; set gripper_joint: null to run without a gripper"
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"arm-{self.arm.name}", daemon=True)
        self._jobs.thread = self._thread
        if not self.arm.connect_in_loop:
            self._connect()
            self._thread.start()
            return self
        self._thread.start()  # connects in the loop thread (GL context of a simulated world)
        self._started.wait()
        if self._start_error is not None:
            self._thread.join(timeout=10.0)
            self._thread = self._jobs.thread = None
            raise self._start_error
        return self

    def _connect(self) -> None:
        try:
            self.arm.connect()
        except BaseException:
            self._quietly(self.arm.disconnect)  # e.g. a franky-sim it started before failing
            raise
        if self.hw.gripper_joint and self.arm.gripper is None:
            self.arm.disconnect()
            raise ValueError(
                f"hardware config '{self.hw.name}' names gripper_joint '{self.hw.gripper_joint}' but arm "
                f"backend '{self.arm.name}' drives no gripper; set gripper_joint: null"
            )
        self._arm_status = self._safe_status()

    def close(self) -> None:
        """Stop the loop, then stop and disconnect the arm (in the loop thread for arms that
        connect there)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = self._jobs.thread = None
        if not self.arm.connect_in_loop:
            self._quietly(self.arm.stop)
            self._quietly(self.arm.disconnect)

    def call_in_loop(self, fn: Callable[[], Any], timeout: float = 10.0, rearm: bool = False) -> Any:
        """Run ``fn`` in the loop thread between two ticks and return its result (its exception is
        raised here). ``rearm``: afterwards forget all targets, as after a recovery (the arm holds
        where it now is, gripper open), keeping counters and a latched e-stop: a scene reset."""

        def job():
            value = fn()
            if rearm:
                self._after_reset()
            return value

        return self._jobs.call(job, timeout)

    def _after_reset(self) -> None:
        js = self.arm.read()
        width = self.arm.gripper.read().width if self.arm.gripper is not None else float("nan")
        with self._lock:
            self._rearm()
            self._gripper_cmd = -1.0
            self._gripper_width = width
            self._publish_state(js, self._offset())

    @staticmethod
    def _quietly(fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - best effort on a possibly dead connection
            log.warning("%s during close: %s", getattr(fn, "__name__", fn), e)

    def __enter__(self) -> ArmController:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commands (any thread) -------------------------------------------------------------
    def submit_target(self, target, source: str = "") -> bool:
        """Forward position command in command order (replaces any trajectory). False: rejected.
        ``source``: the sender's tag, reported with every tick it is in force
        (``TickReport.command_source``)."""
        now = self.clock()
        with self._lock:
            if not self._accepting():
                return False
            try:
                self.safety.submit(target, now)
            except CommandRejected:
                return False
            self.traj.clear()
            self._source = source
            return True

    def submit_trajectory(self, time_from_start, points, start_time: float = 0.0, source: str = "") -> bool:
        """Timed trajectory like ``trajectory_msgs/JointTrajectory``: ``points`` (T, D) in command
        order reached at ``start_time + time_from_start`` (``start_time`` on this controller's
        clock; ``<= 0``: now). Points already in the past are dropped; the first segment starts
        from the target commanded now, so a late chunk never makes the arm jump. The whole
        trajectory is rejected (False) when any point is invalid. ``source`` as for
        :meth:`submit_target`."""
        now = self.clock()
        with self._lock:
            if not self._accepting():
                return False
            try:
                if self.safety.status.estopped:
                    raise CommandRejected("e-stop is latched; call reset_estop() (the /estop_reset service)")
                pts = np.asarray(points, dtype=np.float64)
                if pts.ndim != 2 or len(pts) == 0:
                    raise CommandRejected(
                        f"trajectory needs (T, {self.safety.dim}) points, got shape {pts.shape}"
                    )
                if len(np.atleast_1d(time_from_start)) != len(pts):
                    raise CommandRejected(
                        f"trajectory has {len(pts)} points but {len(np.atleast_1d(time_from_start))} times"
                    )
                pts = np.stack([self.safety.validate(p) for p in pts])
                anchor = self.safety.last_output if self.safety.last_output is not None else self._current()
                self.late_points += self.traj.set(start_time, time_from_start, pts, now, anchor)
            except (CommandRejected, ValueError) as e:
                self.safety.reject(str(e))
                return False
            self.safety.submit(self.traj.sample(now), now, valid_for=max(0.0, self.traj.end_time - now))
            self._source = source
            return True

    def estop(self) -> None:
        """Latch the e-stop: drop the trajectory, stop the arm within one tick, refuse commands
        until :meth:`reset_estop`."""
        with self._lock:
            self.traj.clear()
            self.safety.estop()
            self._stop_pending = True
        self._wake.set()

    def reset_estop(self) -> None:
        """Release the e-stop; the arm holds where it is now until a fresh command."""
        with self._lock:
            if self.safety.status.estopped:
                self.safety.reset_estop()
                self._rearm()

    def reject(self, reason: str) -> None:
        """Count and report a command refused before it reached the controller (a message that
        could not be converted)."""
        with self._lock:
            self.safety.reject(reason)

    # -- observations (any thread) ---------------------------------------------------------
    def current_command(self) -> np.ndarray:
        """Measured joints plus the current gripper command (a forward command that holds)."""
        with self._lock:
            if self._state is None:
                raise ValueError("no arm state yet")
            return self._current()

    def state(self) -> JointState | None:
        """Latest measured state in command order (joints, then gripper width in m); None before
        the first read."""
        with self._lock:
            return self._state

    def wait_for_state(self, timeout: float = 5.0) -> JointState:
        """Block until the loop has read the arm once."""
        if not self._has_state.wait(timeout):
            raise TimeoutError(
                f"no state from arm '{self.arm.name}' within {timeout} s: {self.status()['fault']}"
            )
        return self.state()

    def last_command(self) -> JointState | None:
        """Target actually sent on the last tick (command order), stamped when sent."""
        with self._lock:
            return self._sent

    # -- internals -------------------------------------------------------------------------
    def _accepting(self) -> bool:
        """Called under the lock: refuse commands while faulted or before the first state."""
        if self._fault:
            self.safety.reject(f"arm fault, command not executed: {self._fault}")
            return False
        if self._state is None:
            self.safety.reject("no arm state yet: start() the controller and wait_for_state()")
            return False
        return True

    def _current(self) -> np.ndarray:
        """Measured joints plus the current gripper command (the safety layer's command order)."""
        q = self._state.position[: self.n_arm]
        return np.concatenate([q, [self._gripper_cmd]]) if self.hw.gripper_joint else q.copy()

    def _rearm(self) -> None:
        """Forget targets (hold where the arm is at the next tick), keep counters and e-stop."""
        status = self.safety.status
        status.watchdog_tripped = False
        self.safety = SafetyLayer(self.hw)
        self.safety.status = status
        self.traj.clear()
        self._prev = None
        self._source = ""

    def _offset(self) -> float:
        """This clock minus ``time.monotonic()`` (backends stamp on the latter, the pacer's grid
        too), held steady. The two clocks cannot be read at one instant, and a read pair split by
        a preemption or a GIL switch (ROS time is read through rclpy) is off by up to
        milliseconds: computed afresh each tick, that jitter went into every tick's interval on
        this clock, i.e. into the safety layer's rate limit (a step up to 0.4% over the velocity
        limit per period was measured) and into the stamps the recorder pairs by. Each call now
        brackets the clock read between two monotonic reads, which bound the true offset; the
        estimate moves only when it falls outside that bound (a clock step or slew), and then
        only to its edge, so a grid-paced loop's ticks stay exactly one period apart."""
        if self.clock is time.monotonic:
            return 0.0
        m1 = time.monotonic()
        c = self.clock()
        m2 = time.monotonic()
        lo, hi = c - m2, c - m1  # the true offset lies in [lo, hi]
        est = self._clock_offset
        # The first read: the bound's middle; then the smallest move that agrees with the bound.
        self._clock_offset = est = 0.5 * (lo + hi) if est is None else min(max(est, lo), hi)
        return est

    def _run(self) -> None:
        if self.arm.connect_in_loop:
            try:
                self._connect()
            except BaseException as e:  # raised by start()
                self._start_error = e
                return
            finally:
                self._started.set()
        try:
            self._loop()
        finally:
            if self.arm.connect_in_loop:
                self._quietly(self.arm.stop)
                self._quietly(self.arm.disconnect)

    def _loop(self) -> None:
        hz = self.arm.control_hz
        status_every = max(1, round(hz / STATUS_HZ))
        gripper_every = max(1, round(hz / GRIPPER_READ_HZ))
        pacer = self.arm.make_pacer(self._stop, self.on_stall)
        self.pacing = pacer.stats if pacer is not None else None
        window_start, window_ticks = time.monotonic(), 0
        while not self._stop.is_set():
            due, token = None, None
            if pacer is not None:
                due = pacer.wait().due
                if self._stop.is_set():
                    break
            else:
                try:
                    token = self.arm.period_start()
                except Exception:  # noqa: BLE001 - SDK timing unavailable while disconnected
                    token = None
            t0 = time.monotonic()
            self._wake.clear()
            self._jobs.run_pending()
            offset = self._offset()
            sent = None
            if self._fault:
                self._faulted_tick(offset)
            else:
                try:
                    sent = self._tick(self._ticks % gripper_every == 0, due, offset)
                except Exception as e:  # noqa: BLE001 - any backend failure is a fault, never a crash
                    self._on_fault(e)
            try:
                if self.arm.step(t0 if due is None else due):
                    self._read_state(True, offset)
            except Exception as e:  # noqa: BLE001
                if not self._fault:  # while faulted, recovery owns the backoff
                    self._on_fault(e)
            self._report(
                sent, (t0 if due is None else due) + offset, t0, self._sent_source if sent is not None else ""
            )
            self._ticks += 1
            window_ticks += 1
            if self._ticks % status_every == 0:
                snap = self._safe_status()
                with self._lock:
                    self._arm_status = snap
            if time.monotonic() - window_start >= 1.0:
                self._rate = window_ticks / (time.monotonic() - window_start)
                window_start, window_ticks = time.monotonic(), 0
            if time.monotonic() - t0 > 1.0 / hz:
                self._overruns += 1
            if pacer is not None:
                continue
            try:
                if token is None:
                    raise RuntimeError
                self.arm.period_wait(token, self._wake)
            except Exception:  # noqa: BLE001
                self._wake.wait(max(0.0, t0 + 1.0 / hz - time.monotonic()))

    def _report(self, sent: JointState | None, stamp: float, started: float, source: str = "") -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick(TickReport(self._ticks, stamp, self.state(), sent, started, source))
        except Exception:  # noqa: BLE001 - a publisher's failure must not stop the arm
            self._tick_errors += 1
            if self._tick_errors in (1, 10, 100) or self._tick_errors % 1000 == 0:
                log.exception("on_tick callback failed (%d times so far)", self._tick_errors)

    def _read_state(self, read_gripper: bool, offset: float) -> JointState:
        js = self.arm.read()  # SDK I/O outside the lock: commands never wait on the network
        gripper = self.arm.gripper
        if gripper is not None and read_gripper:
            self._gripper_width = gripper.read().width
        with self._lock:
            self._publish_state(js, offset)
        return js

    def _tick(self, read_gripper: bool, due: float | None, offset: float) -> JointState | None:
        """One tick; returns what was sent (None while e-stopped)."""
        self._read_state(read_gripper, offset)
        gripper = self.arm.gripper
        now = self.clock() if due is None else due + offset
        with self._lock:
            stop_now, self._stop_pending = self._stop_pending, False
            if self.traj.active and now > self.traj.end_time and not self.safety.status.estopped:
                # feed() stops submitting after the end, leaving the sample of the last tick
                # before it (up to one period short) as the command: make the last point itself
                # the standing command, stale from end_time on, so the watchdog timing is unchanged.
                self.safety.submit(self.traj.points[-1], self.traj.end_time)
            self.traj.feed(self.safety, now)  # the trajectory's target at now -> safety layer
            target = self.safety.step(self._current(), now)
            estopped = self.safety.status.estopped
            source = self._source
        if stop_now:
            self.arm.stop()
            if gripper is not None:
                gripper.stop()
        if estopped:
            self._prev = None
            return None  # stopped by arm.stop(); nothing is sent until reset_estop()
        q = target[: self.n_arm]
        # Feed-forward velocity: the slope of the (interpolated, rate-limited) target itself.
        prev = self._prev
        dq = (q - prev[1]) / (now - prev[0]) if prev is not None and now > prev[0] else np.zeros_like(q)
        self._prev = (now, q.copy())
        if gripper is not None:
            # Before the joints: a backend that sends both in one message (ros2_control) then
            # sends this tick's gripper command, not the previous one.
            gripper.command(float(target[-1]))
        sent = self.arm.write(q, dq)
        cmd = np.concatenate([sent, target[self.n_arm :]])
        with self._lock:
            if self.hw.gripper_joint:
                self._gripper_cmd = float(target[-1])
            self._sent = JointState(position=cmd, stamp=now, names=self.names)
            self._sent_source = source
            return self._sent

    def _publish_state(self, js: JointState, offset: float) -> None:
        """Under the lock: store the measured state in command order (gripper width appended),
        its stamp moved from the backend's monotonic clock onto this controller's clock."""
        pos = np.asarray(js.position, dtype=np.float64)
        vel = None if js.velocity is None else np.asarray(js.velocity, dtype=np.float64)
        if self.hw.gripper_joint:
            pos = np.append(pos, self._gripper_width)
            vel = None if vel is None else np.append(vel, 0.0)
        self._state = JointState(position=pos, stamp=js.stamp + offset, velocity=vel, names=self.names)
        self._has_state.set()
