"""The ROS-free core of ``robot_node``: any arm backend under one ``ArmController``, plus, when the
backend hosts a simulated world, that world's cameras and task state.

What the node does with it: convert messages to the calls below, and the :class:`RobotSample`
handed to ``on_sample`` back to messages. The control loop is the controller's own thread (never
the ROS executor); ``on_sample`` runs in it after the ticks that publish:

- a simulated world (``sim`` backend): every tick (its physics is stepped per tick at the
  control rate), cameras rendered in that thread (their GL context lives there) every
  ``control_hz / fps`` samples, and the task state (object pose) for ``/sim/observation``;
- a real arm: the loop runs at the backend's native rate (franka 50 Hz, UR 500 Hz) and samples
  are handed on at the hardware config's ``control_hz``.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_policy.cameras import Camera, Capture, make_camera, options_from_hardware
from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig
from robot_policy.hardware.kinematics import PoseSolver  # the one Cartesian solver (also teleop's)
from robot_policy.robots import ArmController, arm_config_from, make_arm
from robot_policy.robots.base import arm_class
from robot_policy.robots.loop import TickReport
from robot_policy.types import JointState


@dataclass
class RobotSample:
    """What the node publishes after a tick; stamps on the runtime's clock."""

    state: JointState
    """Measured joints + gripper opening (command order); ``/joint_states``."""
    command: JointState | None
    """Target sent this tick (command order); ``/joint_commands``. None: nothing was sent."""
    command_source: str = ""
    """The sender's tag of that command (``TickReport.command_source``); ``/joint_commands``
    carries it as its header ``frame_id``."""
    task_state: dict[str, np.ndarray] | None = None
    """A simulated world's other low-dim state (object pose...): ``/sim/observation``."""
    captures: dict[str, Capture] = field(default_factory=dict)
    """Cameras of a simulated world rendered this tick (name -> capture, stamped like ``state``)."""


def arm_overrides(hw: HardwareConfig, values: dict[str, Any]) -> tuple[HardwareConfig, list[str]]:
    """``hw`` with ``values`` merged into ``arm_config`` where the backend's config has such a
    field (node parameters such as ``seed`` or ``task`` for the sim backend). Returns the new config
    and the names that do not apply to this backend (for a warning)."""
    fields = {f.name for f in dataclasses.fields(arm_class(hw).config_class)}
    use = {k: v for k, v in values.items() if k in fields}
    unused = sorted(set(values) - fields)
    hw = dataclasses.replace(hw, arm_config={**hw.arm_config, **use})
    arm_config_from(hw)  # bad values fail here, naming the field
    return hw, unused


class RobotRuntime:
    """One arm backend (``arm:`` of the hardware config, through the ARMS registry) with its
    controller; for a simulated world also its cameras. Thread-safe entry points."""

    def __init__(
        self,
        hw: HardwareConfig,
        clock: Callable[[], float] = time.monotonic,
        on_sample: Callable[[RobotSample], None] | None = None,
        on_stall: Callable[[Any], None] | None = None,
        on_chunk_executed: Callable[[float, float, float], None] | None = None,
        on_captures: Callable[[dict[str, Capture]], None] | None = None,
        arm_kwargs: dict[str, Any] | None = None,
        ee_site: str = "tcp",
        latency_window_s: float = 60.0,
    ):
        if not latency_window_s > 0:
            raise ValueError(f"latency_window_s must be > 0 seconds, got {latency_window_s}")
        self.hw = hw
        self.on_sample = on_sample
        self.arm = make_arm(hw, **(arm_kwargs or {}))
        self.ctl = ArmController(self.arm, clock, on_tick=self._on_tick, on_stall=on_stall)
        self.period = 1.0 / hw.control_hz
        self.cameras: dict[str, tuple[Camera, int]] = {}
        # (arrival, latency) of recent commands; diagnostics cover the last latency_window_s, so
        # a start-up transient (DDS discovery, nodes warming up) leaves the figures once past.
        self.cmd_latency: collections.deque = collections.deque(maxlen=20000)
        self.latency_window_s = float(latency_window_s)
        self.clock = clock
        self.on_chunk_executed = on_chunk_executed
        self.on_captures = on_captures
        """Given, a simulated world's camera captures are handed on separately, after the
        state sample (``on_sample``) of the same tick; else they ride in ``RobotSample.captures``."""
        self._arrived: list[tuple[float, float]] = []  # (trajectory stamp, arrival) awaiting a tick
        self._arrived_lock = threading.Lock()
        self.ee_site = ee_site
        self._pose: PoseSolver | None = None
        self._next_pub = -np.inf
        self._published = 0
        self._capture_stamp = 0.0
        self._sample_cond = threading.Condition()
        self._handed_on = 0  # samples handed to on_sample (a reset waits for the next one)

    @property
    def world(self):
        """The simulated world the arm lives in, or None for a real arm."""
        return self.arm.world

    def start(self) -> RobotRuntime:
        """Connect the arm (errors raise here), open a simulated world's cameras, wait for the
        first state; on any failure everything started is closed again."""
        self.ctl.start()
        try:
            if self.world is not None:
                self.ctl.call_in_loop(self._open_cameras, timeout=60.0)
            self.ctl.wait_for_state(timeout=30.0)
        except BaseException:
            self.close()
            raise
        return self

    def _open_cameras(self) -> None:
        """In the loop thread: the world's cameras render with its GL context."""
        w = self.world
        for c in self.hw.cameras:
            if c.backend != "sim":
                raise ConfigError(
                    f"hardware config '{self.hw.name}': camera '{c.name}' has backend '{c.backend}' in a "
                    "simulated world; its cameras are rendered from the scene (backend: sim)"
                )
            cam = make_camera(
                "sim",
                options_from_hardware(c),
                model=w.model,
                data=w.data,
                renderer=w.renderer,
                clock=lambda: self._capture_stamp,
            )
            cam.connect()
            self.cameras[c.name] = (cam, max(1, round(self.hw.control_hz / c.fps)))

    def close(self) -> None:
        if self.cameras and self.ctl.status()["running"]:
            try:
                self.ctl.call_in_loop(self._close_cameras)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self.ctl.close()

    def _close_cameras(self) -> None:
        for cam, _ in self.cameras.values():
            cam.disconnect()
        self.cameras.clear()

    # -- the loop thread -------------------------------------------------------------------------
    def _on_tick(self, r: TickReport) -> None:
        if self._arrived and r.command is not None:
            self._report_executed(r.stamp)
        # Real arms: hand samples on at control_hz, on the loop tick nearest each publishing
        # time, not at the native loop rate. A simulated world publishes every tick.
        if r.state is None or r.stamp < self._next_pub - 0.499 / self.arm.control_hz:
            return
        self._next_pub = (
            self._next_pub + self.period if r.stamp - self._next_pub < self.period else r.stamp + self.period
        )
        n, self._published = self._published, self._published + 1
        sample = RobotSample(state=r.state, command=r.command, command_source=r.command_source)
        due = []
        if self.world is not None:
            sample.task_state = self.world.task_state()
            self._capture_stamp = r.state.stamp
            due = [(name, cam) for name, (cam, every) in self.cameras.items() if n % every == 0]
        try:
            if self.on_captures is not None:
                # The state goes out before the cameras render (several ms for two cameras):
                # a state-only consumer does not wait for pixels it does not use.
                if self.on_sample is not None:
                    self.on_sample(sample)
                if due:
                    self.on_captures({name: cam.read() for name, cam in due})
            else:
                sample.captures = {name: cam.read() for name, cam in due}
                if self.on_sample is not None:
                    self.on_sample(sample)
        finally:
            with self._sample_cond:
                self._handed_on += 1
                self._sample_cond.notify_all()

    # -- commands (any thread) ------------------------------------------------------------------
    def submit_trajectory(
        self, start: float, time_from_start, points, stamp: float | None = None, source: str = ""
    ) -> bool:
        """``stamp``: the trajectory's header stamp, for the chunk trace (``on_chunk_executed``).
        ``source``: the sender's tag (``ArmController.submit_trajectory``)."""
        arrival = self.clock()
        ok = self.ctl.submit_trajectory(time_from_start, points, start_time=start, source=source)
        if ok and stamp is not None and self.on_chunk_executed is not None:
            with self._arrived_lock:
                self._arrived.append((stamp, arrival))
        return ok

    def _report_executed(self, due: float) -> None:
        """In the loop thread, after a tick sent a command: the newest trajectory that arrived
        before the tick was due has now had its first action executed (reported as now, when the
        command has gone out); older ones were superseded unexecuted (NaN). One that arrived
        while a late tick ran counts from the next tick: conservative, never early."""
        now = self.clock()
        with self._arrived_lock:
            done = [a for a in self._arrived if a[1] <= due]
            self._arrived = [a for a in self._arrived if a[1] > due]
        for i, (stamp, arrival) in enumerate(done):
            executed = now if i == len(done) - 1 else float("nan")
            self.on_chunk_executed(stamp, arrival, executed)

    def submit_target(self, target, source: str = "") -> bool:
        return self.ctl.submit_target(target, source)

    def submit_pose(self, position, quat_wxyz) -> bool:
        """A Cartesian target: IK to joints from the current state, then a forward command
        (same safety layer: clamp, rate limit, watchdog). False when refused."""
        state = self.ctl.state()
        try:
            if self._pose is None:
                self._pose = PoseSolver(self.hw, self.ee_site)
            if state is None:
                raise ValueError("no arm state yet")
            n = len(self.hw.joint_names)
            q = self._pose.solve(state.position[:n], position, quat_wxyz)
        except (ValueError, ConfigError) as e:
            self.ctl.reject(f"target_pose: {e}")
            return False
        cmd = self.ctl.current_command()
        cmd[:n] = q
        return self.ctl.submit_target(cmd)

    def reject(self, reason: str) -> None:
        self.ctl.reject(reason)

    def note_command_stamp(self, latency: float) -> None:
        """Arrival minus the header stamp of a command (observation-to-command latency)."""
        self.cmd_latency.append((self.clock(), latency))

    def estop(self) -> None:
        self.ctl.estop()

    def reset_estop(self) -> None:
        self.ctl.reset_estop()

    # -- a simulated world's episodes -----------------------------------------------------------
    def _require_world(self, what: str):
        if self.world is None:
            raise RuntimeError(f"{what}: arm backend '{self.arm.name}' is a real arm, not a simulated world")
        return self.world

    def reset_scene(self, timeout: float = 10.0) -> int:
        """New episode of the simulated world (next seed); the arm then holds, gripper open.
        Returns once the first sample of the new episode was handed on, so whoever asked for
        the reset sees the new scene in the next state it reads."""
        w = self._require_world("scene reset")
        mark = {}

        def reset() -> int:
            seed = w.reset()
            mark["n"] = self._handed_on  # in the loop thread: the next sample is the new scene's
            return seed

        seed = self.ctl.call_in_loop(reset, timeout=timeout, rearm=True)
        with self._sample_cond:
            self._sample_cond.wait_for(lambda: self._handed_on > mark["n"], timeout)
        return seed

    def episode(self) -> dict[str, Any]:
        """``seed``, ``success`` (any time this episode), ``success_now``, ``steps``."""
        w = self._require_world("episode state")
        return {
            "seed": w.episode_seed,
            "success": w.episode_success,
            "success_now": w.success_now,
            "steps": w.steps,
        }

    # -- diagnostics ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        st = self.ctl.status()
        since = self.clock() - self.latency_window_s
        lat = np.asarray([v for t, v in list(self.cmd_latency) if t >= since], dtype=np.float64)
        st["cmd_latency_n"] = int(lat.size)
        for q in (50, 90, 99):
            st[f"cmd_latency_ms_p{q}"] = f"{np.percentile(lat, q) * 1e3:.1f}" if lat.size else "nan"
        if self.world is not None:
            st["episode_seed"] = self.world.episode_seed
            st["steps"] = self.world.steps
        return st
