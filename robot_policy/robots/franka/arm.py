"""Franka (FR3 / Panda) through franky (``pip install 'robot_policy[franka]'``), Franka Hand included.

How targets are streamed: every tick sends ``robot.move(JointMotion(q), asynchronous=True)``.
franky plans each target with Ruckig (jerk-limited, scaled by ``relative_dynamics_factor``)
inside libfranka's 1 kHz loop, and a new asynchronous motion takes over the running one
seamlessly, so the arm tracks the controller's interpolated, rate-limited targets without our
Python code having to meet 1 kHz deadlines. franky re-raises a motion's error (reflex, lost
connection) at the next call, so every write polls the running motion first.

Recovery: a reflex with the connection up is cleared with ``recover_from_errors()``; a lost
connection is rebuilt (new ``franky.Robot``), restarting franky-sim too when this backend started it.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig
from robot_policy.robots.base import Arm, ArmConfig, ArmError, Gripper, GripperState, import_sdk, register_arm
from robot_policy.robots.franka.sim_server import FrankySimServer
from robot_policy.sdk import keep_thread_scheduling
from robot_policy.types import JointState

log = logging.getLogger("robot_policy.robots.franka")

_KEEP_ALIVE: list = []
"""Gripper objects with an action still pending when dropped (see FrankyGripper.release)."""
PROTECTIVE_MODES = ("Reflex", "UserStopped")
"""franky RobotMode names during which the robot refuses motion until recovered / released."""


def _franky():
    return import_sdk("franky", backend="franka", package="franky-control", extra="franka")


@dataclass
class FrankaConfig(ArmConfig):
    """``arm_config:`` of a ``franka`` hardware config."""

    hostname: str = ""
    """FCI address of the robot (or of franky-sim: a loopback address such as 127.0.0.2)."""
    relative_dynamics_factor: float = 0.2
    """Scales franky's velocity/acceleration/jerk limits for every motion, in (0, 1]."""
    realtime: bool = False
    """Enforce a realtime kernel (franky RealtimeConfig.Enforce); false: Ignore (workstations, franky-sim)."""
    start_sim: bool = False
    """Start franky-sim on ``hostname`` at connect (and again after it died) and stop it at disconnect."""
    sim_start_timeout_s: float = 60.0
    """How long to wait for franky-sim to accept connections (s)."""
    gripper_speed: float = 0.05
    """Franka Hand finger speed (m/s)."""
    gripper_force: float = 20.0
    """Grasp force (N) when the gripper command closes (> 0)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.hostname:
            raise ConfigError(
                "arm_config.hostname is empty: give the robot's FCI address (franky-sim: 127.0.0.2)"
            )
        if not 0 < self.relative_dynamics_factor <= 1:
            raise ConfigError(
                f"arm_config.relative_dynamics_factor must be in (0, 1], got {self.relative_dynamics_factor}"
            )
        if self.start_sim and not ipaddress.ip_address(self.hostname).is_loopback:
            raise ConfigError(
                f"arm_config.start_sim needs a loopback hostname (127.x.y.z), got {self.hostname!r}"
            )
        if self.gripper_speed <= 0 or self.gripper_force <= 0:
            raise ConfigError("arm_config.gripper_speed and gripper_force must be > 0")


class FrankyGripper(Gripper):
    """Franka Hand as a binary gripper: command > 0 grasps (with force), <= 0 opens.

    One gripper action runs at a time (the Hand executes commands sequentially); a command that
    arrives while one runs is sent when it finishes (only the latest wish counts).
    """

    def __init__(self, franky, hostname: str, config: FrankaConfig):
        self._franky, self._device = franky, f"Franka Hand at {hostname}"
        self._g = franky.Gripper(hostname)
        self._cfg = config
        self.max_width = float(self._g.max_width) or 0.08
        self._future = None
        self._sent: bool | None = None  # True: closed/grasping, False: open, None: unknown
        self._last_result = ""

    def command(self, value: float) -> None:
        closed = float(value) > 0.0
        if self._future is not None:
            if not self._future.wait(0.0):
                return
            try:
                ok = self._future.get()
                self._last_result = "ok" if ok else "finished without reaching the target (nothing grasped?)"
            except Exception as e:  # noqa: BLE001 - a failed gripper action is reported, not an arm fault
                self._last_result = f"error: {e}"
                self._sent = None
            self._future = None
        if closed == self._sent:
            return
        with keep_thread_scheduling():
            if closed:
                # epsilon_outer = max width: any closed width counts as success (object or not).
                self._future = self._g.grasp_async(
                    0.0,
                    self._cfg.gripper_speed,
                    self._cfg.gripper_force,
                    epsilon_inner=0.005,
                    epsilon_outer=self.max_width,
                )
            else:
                self._future = self._g.move_async(self.max_width, self._cfg.gripper_speed)
        self._sent = closed

    def read(self) -> GripperState:
        with _SDKCall(self._franky, self._device, "read the gripper state"):
            st = self._g.state
        moving = self._future is not None and not self._future.wait(0.0)
        return GripperState(
            width=float(st.width), stamp=time.monotonic(), grasped=bool(st.is_grasped), moving=moving
        )

    def stop(self) -> None:
        # Deliberately not franky's Gripper.stop(): with franky 2.0 / franky-sim a stop during a
        # move leaves the action's future unresolved and the next gripper command hanging. The
        # Hand finishes its current action (at most ~2 s, force-limited); the arm is what stops.
        pass

    def release(self, wait_s: float) -> None:
        """Drop the SDK objects. An unfinished action's future must not outlive its Gripper
        (franky 2.0 segfaults deleting it afterwards): wait for it, else keep both alive."""
        f = self._future
        if f is not None and not f.wait(wait_s):
            _KEEP_ALIVE.append((self._g, f))
        self._future = None

    def status(self) -> dict[str, Any]:
        state = {True: "closed", False: "open", None: "unknown"}[self._sent]
        return {"commanded": state, "last_result": self._last_result}


@register_arm("franka")
class FrankaArm(Arm):
    """FR3 / Panda: joint-position targets streamed as asynchronous franky JointMotions."""

    config_class = FrankaConfig
    extra = "franka"
    native_hz = 50.0

    def __init__(self, config: FrankaConfig, hw: HardwareConfig):
        super().__init__(config, hw)
        if self.n_joints != 7:
            raise ConfigError(
                f"hardware config '{hw.name}': a Franka arm has 7 joints, joint_names lists {self.n_joints}"
            )
        self.config: FrankaConfig = config
        self._franky = None
        self._robot = None
        self._lost = False
        self._sim: FrankySimServer | None = None
        self._last_sent: np.ndarray | None = None
        self._last_dq: np.ndarray | None = None
        self._dq_max = np.zeros(7)
        self._brake = np.zeros(7)
        self._mode = "disconnected"
        self._faults: list[str] = []
        self._last_error = ""

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._robot is not None and not self._lost

    def connect(self) -> None:
        franky = self._franky = _franky()
        cfg = self.config
        if cfg.start_sim and (self._sim is None or not self._sim.running):
            self._sim = FrankySimServer(cfg.hostname, start_timeout_s=cfg.sim_start_timeout_s).start()
        rt = franky.RealtimeConfig.Enforce if cfg.realtime else franky.RealtimeConfig.Ignore
        with keep_thread_scheduling():
            try:
                robot = franky.Robot(cfg.hostname, realtime_config=rt)
                robot.relative_dynamics_factor = cfg.relative_dynamics_factor
                # Ruckig rejects a target velocity above its (scaled) limit: keep the feed-forward below.
                self._dq_max = (
                    0.95 * cfg.relative_dynamics_factor * np.asarray(robot.joint_velocity_limit.get())
                )
                self._brake = (
                    0.5 * cfg.relative_dynamics_factor * np.asarray(robot.joint_acceleration_limit.get())
                )
                gripper = (
                    FrankyGripper(franky, cfg.hostname, cfg)
                    if cfg.gripper and self.hw.gripper_joint
                    else None
                )
            except (franky.Exception, RuntimeError) as e:
                raise ArmError(f"cannot connect to the Franka at {cfg.hostname}: {e}") from e
        self._robot, self.gripper, self._lost, self._last_sent = robot, gripper, False, None
        self._mode = "connected"

    def disconnect(self) -> None:
        if self.connected:
            try:
                self._robot.stop()
            except Exception as e:  # noqa: BLE001 - the connection may be half gone
                log.debug("stop at disconnect: %s", e)
        self._drop()
        if self._sim is not None:
            self._sim.stop()
            self._sim = None

    def recover(self) -> None:
        franky = self._franky
        if self.connected:
            try:
                if self._robot.has_errors and not self._robot.recover_from_errors():
                    raise ArmError("recover_from_errors() failed")
                self._robot.state  # noqa: B018 - proves the connection answers
                self._last_sent = None
                self._faults = []
                return
            except (franky.Exception, RuntimeError) as e:
                log.warning("Franka: in-place recovery failed (%s); reconnecting", e)
                self._lost = True
        self._drop()
        self.connect()

    def _drop(self) -> None:
        # Dropping the last reference closes libfranka's connection. A live Hand gets a few
        # seconds to finish its action; a lost one none (its future will never resolve).
        if isinstance(self.gripper, FrankyGripper):
            self.gripper.release(wait_s=0.0 if self._lost else 5.0)
        self._robot, self.gripper, self._last_sent = None, None, None
        self._mode = "disconnected"

    # -- the fast loop ---------------------------------------------------------------------
    def read(self) -> JointState:
        with self._sdk("read the robot state"):
            st = self._robot.state
        stamp = time.monotonic()
        self._mode = st.robot_mode.name
        errors = str(st.current_errors)
        self._faults = [] if errors == "[]" else [errors]
        return JointState(
            position=np.asarray(st.q, dtype=np.float64).copy(),
            stamp=stamp,
            velocity=np.asarray(st.dq, dtype=np.float64).copy(),
            names=tuple(self.hw.joint_names),
        )

    def _send(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        franky = self._franky
        with self._sdk("poll the running motion"):
            self._poll()
        # Arrive at q moving at dq: planning to stop at every streamed target would make the arm
        # crawl behind a moving target. return_when_finished=False keeps the control loop alive
        # (holding the last target), so the next target takes over without restarting it.
        # Arrive slowly enough near a joint limit to stop before it (a target velocity at the limit
        # would make the planner overshoot it): |dq| <= sqrt(2 * a * distance to the limit ahead).
        ahead = np.where(dq > 0, self.upper - q, q - self.lower)
        cap = np.minimum(self._dq_max, np.sqrt(2.0 * self._brake * np.maximum(ahead, 0.0)))
        dq = np.clip(dq, -cap, cap)
        if (
            self._last_sent is not None
            and np.array_equal(q, self._last_sent)
            and np.array_equal(dq, self._last_dq)
        ):
            return q.copy()  # already the active motion: a new one would only replan
        # A target that stops moving (the end of a trajectory) repeats with dq = 0 and must be
        # sent again: the running motion arrives there still moving at the last slope, and the
        # arm overshot by up to 0.26 rad on franky-sim before this was resent as "arrive at rest".
        motion = franky.JointMotion(franky.JointState(q, dq), return_when_finished=False)
        with self._sdk("send a JointMotion"):
            try:
                self._robot.move(motion, asynchronous=True)
            except franky.ControlException as e:
                if not _preempted(e):
                    raise
                self._robot.move(motion, asynchronous=True)  # the stale preemption was re-raised: send again
        self._last_sent, self._last_dq = q.copy(), dq.copy()
        return q.copy()

    def _poll(self) -> None:
        try:
            self._robot.poll_motion()
        except self._franky.ControlException as e:
            if not _preempted(e):  # our own stop() / a newer motion: not a fault
                raise

    def stop(self) -> None:
        if not self.connected:
            return
        with self._sdk("stop"):
            self._robot.stop()
        self._last_sent = None

    def status(self) -> dict[str, Any]:
        # Cached from the last read(): no SDK call here.
        return {
            "connected": self.connected,
            "mode": self._mode,
            "faults": list(self._faults),
            "protective_stop": self._mode in PROTECTIVE_MODES,
            "hostname": self.config.hostname,
            "franky_sim": self._sim is not None and self._sim.running,
            "last_error": self._last_error,
        }

    def _sdk(self, what: str) -> _SDKCall:
        if self._robot is None:
            raise ArmError(f"Franka at {self.config.hostname}: cannot {what}: not connected")
        return _SDKCall(self._franky, f"Franka at {self.config.hostname}", what, self._on_error)

    def _on_error(self, exc: Exception, network: bool) -> None:
        if network:
            self._lost = True
            self._mode = "connection lost"
        self._last_error = f"{type(exc).__name__}: {exc}"


def _preempted(e: Exception) -> bool:
    return "preempted" in str(e)


class _SDKCall:
    """Turns franky exceptions into ArmError naming the device, the action and whether the
    connection is lost (franky raises NetworkException, or a bare RuntimeError('Net Exception')
    from a property read; other RuntimeErrors, e.g. the motion planner's, are robot errors)."""

    def __init__(self, franky, device: str, what: str, on_error=None):
        self.franky, self.device, self.what, self.on_error = franky, device, what, on_error

    def __enter__(self):
        self._sched = keep_thread_scheduling()
        self._sched.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._sched.__exit__(None, None, None)
        if exc is None or isinstance(exc, ArmError):
            return False
        if not isinstance(exc, (self.franky.Exception, self.franky.GripperException, RuntimeError)):
            return False  # a bug, not a robot condition: let it surface as it is
        network = isinstance(exc, self.franky.NetworkException) or (
            isinstance(exc, RuntimeError) and "net" in str(exc).lower()
        )
        if self.on_error is not None:
            self.on_error(exc, network)
        kind = "connection lost" if network else "robot error"
        raise ArmError(f"{self.device}: {kind} while trying to {self.what}: {exc}") from exc
