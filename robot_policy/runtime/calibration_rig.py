"""An arm, its kinematics and a camera, put together for live calibration (``robot-policy calibrate
capture`` and ``calibrate latency --live``).

:class:`ArmCameraRig` implements the guided capture's ``CaptureRig``
(:mod:`robot_policy.calibration.capture`) over the same pieces the robot node uses: any ``ARMS``
backend under the shared :class:`~robot_policy.robots.ArmController` (safety layer, trajectory
executor, watchdog), any ``CAMERAS`` backend, and the arm's kinematics from the hardware config's
``description`` (:class:`~robot_policy.hardware.kinematics.PoseSolver`). A simulated world's
camera renders in the controller's loop thread (its GL context lives there), together with the
joint read, so frame and joints are one instant; a real camera is read until a frame captured
after the arm came to rest arrives, and the joints are checked to be still at that moment.

:func:`record_excitation` commands a motion through the controller and records what was sent
and what was measured on every tick, with their stamps: the input of
:func:`robot_policy.calibration.latency.arm_latency`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_policy.calibration.latency import ExcitationConfig
from robot_policy.camera_model import Intrinsics, pose_matrix
from robot_policy.cameras import Camera, make_camera
from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig
from robot_policy.hardware.kinematics import PoseSolver
from robot_policy.robots import ArmController, make_arm
from robot_policy.runtime.camera_stream import camera_options


@dataclass
class RigConfig:
    """How the rig moves the arm and decides it is still."""

    speed: float = 0.3
    """Moves use at most this fraction of each joint's velocity limit."""
    min_move_s: float = 1.0
    """Shortest move (s), however small."""
    still_tol_rad: float = 0.0005
    """The arm is still when no joint moved more than this (rad) over ``still_s`` ..."""
    still_s: float = 0.4
    """... (s) ..."""
    target_tol_rad: float = 0.01
    """... and every joint is within this of the target (rad)."""
    settle_timeout_s: float = 10.0
    """A move that is not still this long after its end is reported as not settled."""
    frame_timeout_s: float = 3.0
    """How long to wait for a frame captured after the arm came to rest (s)."""
    ee_site: str = "tcp"
    """Site of the robot description whose pose is ``T_base_gripper`` (the gripper frame)."""

    def __post_init__(self):
        if not 0.0 < self.speed <= 1.0:
            raise ConfigError(f"rig: speed is a fraction of the velocity limits in (0, 1], got {self.speed}")


class ArmCameraRig:
    """A started :class:`ArmController`, a connected camera and the arm's kinematics."""

    def __init__(
        self, controller: ArmController, camera: Camera, solver: PoseSolver, config: RigConfig | None = None
    ):
        self.ctl = controller
        self.camera = camera
        self.solver = solver
        self.cfg = config or RigConfig()
        self.n = controller.n_arm
        self.vmax = np.asarray(controller.hw.velocity_limits, dtype=np.float64)
        self.simulated = controller.arm.world is not None
        self._still_since = 0.0

    # -- kinematics ----------------------------------------------------------------------------
    def joints(self) -> np.ndarray:
        return self.ctl.wait_for_state().position[: self.n].copy()

    def fk(self, q: np.ndarray) -> np.ndarray:
        pos, mat = self.solver.ik.fk(np.asarray(q, dtype=np.float64))
        return pose_matrix(mat, pos)

    def ik(self, T_base_gripper: np.ndarray, q_seed: np.ndarray) -> np.ndarray:
        from robot_policy.sim.ik import mat_to_quat

        T = np.asarray(T_base_gripper, dtype=np.float64)
        return self.solver.solve(np.asarray(q_seed, dtype=np.float64), T[:3, 3], mat_to_quat(T[:3, :3]))

    def intrinsics(self) -> Intrinsics:
        return self.camera.intrinsics()

    # -- motion --------------------------------------------------------------------------------
    def move_to(self, q: np.ndarray) -> str:
        """A minimum-jerk joint move at ``speed`` of the limits, then wait until still at ``q``."""
        q = np.asarray(q, dtype=np.float64)
        cur = self.ctl.current_command()
        start = cur[: self.n]
        dur = max(
            self.cfg.min_move_s, 1.875 * float(np.max(np.abs(q - start) / (self.cfg.speed * self.vmax)))
        )
        s = np.linspace(0.0, 1.0, max(2, int(dur * 20)) + 1)[1:]
        blend = 10 * s**3 - 15 * s**4 + 6 * s**5  # minimum jerk: peak speed 1.875 x the mean
        points = start + blend[:, None] * (q - start)
        points = np.hstack([points, np.repeat(cur[None, self.n :], len(s), axis=0)])
        if not self.ctl.submit_trajectory(s * dur, points):
            return f"move refused by the controller: {self.ctl.status()['last_rejection']}"
        time.sleep(dur)
        return self._settle(np.concatenate([q, cur[self.n :]]))

    def _settle(self, hold: np.ndarray) -> str:
        deadline = time.monotonic() + self.cfg.settle_timeout_s
        history: list[tuple[float, np.ndarray]] = []
        while time.monotonic() < deadline:
            self.ctl.submit_target(hold)  # a standing command: the watchdog stays quiet
            js = self.ctl.state()
            q = js.position[: self.n]
            history.append((js.stamp, q.copy()))
            window = [p for t, p in history if t >= js.stamp - self.cfg.still_s]
            if history[0][0] <= js.stamp - self.cfg.still_s and window:
                w = np.asarray(window)
                moving = float(np.max(w.max(0) - w.min(0)))
                off = float(np.max(np.abs(q - hold[: self.n])))
                if moving <= self.cfg.still_tol_rad and off <= self.cfg.target_tol_rad:
                    self._still_since = js.stamp - self.cfg.still_s
                    return ""
            time.sleep(0.02)
        q = self.ctl.state().position[: self.n]
        return (
            f"not still within {self.cfg.settle_timeout_s} s (largest offset from the target "
            f"{np.max(np.abs(q - hold[: self.n])):.4f} rad)"
        )

    # -- frames --------------------------------------------------------------------------------
    def grab(self) -> tuple[np.ndarray, np.ndarray]:
        if self.simulated:
            # Rendered in the loop thread between two physics steps: the frame and the joints are
            # the same instant.
            def both():
                return self.camera.read().color.image, self.ctl.arm.read().position[: self.n].copy()

            return self.ctl.call_in_loop(both)
        deadline = time.monotonic() + self.cfg.frame_timeout_s
        while True:
            cap = self.camera.read()
            if cap.stamp >= self._still_since or time.monotonic() > deadline:
                break
        if cap.stamp < self._still_since:
            raise TimeoutError(
                f"camera '{self.camera.config.name}': no frame captured after the arm came to rest within "
                f"{self.cfg.frame_timeout_s} s (are its stamps on the host's monotonic clock?)"
            )
        js = self.ctl.state()
        while js.stamp < cap.stamp and time.monotonic() < deadline:
            time.sleep(0.005)
            js = self.ctl.state()
        return cap.color.image, js.position[: self.n].copy()

    def close(self) -> None:
        try:
            if self.simulated:
                self.ctl.call_in_loop(self.camera.disconnect)
            else:
                self.camera.disconnect()
        finally:
            self.ctl.close()


@contextlib.contextmanager
def open_rig(
    hw: HardwareConfig,
    camera: str | None,
    calibration_root: str | Path | None = "calibration",
    config: RigConfig | None = None,
    arm_kwargs: dict[str, Any] | None = None,
) -> Iterator[ArmCameraRig]:
    """Start the arm of ``hw`` (any backend) and connect its camera ``camera`` (a ``cameras:`` entry;
    None: no camera, for latency excitation). The camera's intrinsics file is picked up from
    ``<calibration_root>/<setup>/`` as ``camera_node`` does. Everything is closed on exit."""
    cfg = config or RigConfig()
    entry = None
    if camera is not None:
        names = [c.name for c in hw.cameras]
        if camera not in names:
            raise ConfigError(f"hardware config '{hw.name}' has no camera {camera!r}; cameras: {names}")
        entry = hw.cameras[names.index(camera)]
    solver = PoseSolver(hw, cfg.ee_site) if camera is not None else None
    ctl = ArmController(make_arm(hw, **(arm_kwargs or {})))
    ctl.start()
    cam = None
    try:
        ctl.wait_for_state(timeout=30.0)
        if entry is not None:
            world = ctl.arm.world
            if world is not None:
                if entry.backend != "sim":
                    raise ConfigError(
                        f"camera '{entry.name}' has backend '{entry.backend}' in a simulated world (use sim)"
                    )

                def open_sim():
                    c = make_camera(
                        "sim",
                        camera_options(hw, entry, calibration_root),
                        model=world.model,
                        data=world.data,
                        renderer=world.renderer,
                        clock=time.monotonic,
                    )
                    c.connect()
                    return c

                cam = ctl.call_in_loop(open_sim, timeout=60.0)
            else:
                cam = make_camera(entry.backend, camera_options(hw, entry, calibration_root))
                cam.connect()
        rig = ArmCameraRig(ctl, cam, solver, cfg)
    except BaseException:
        ctl.close()
        raise
    try:
        yield rig
    finally:
        if cam is not None:
            rig.close()
        else:
            ctl.close()


def record_excitation(
    rig: ArmCameraRig, excitation: ExcitationConfig, lead_s: float = 0.3, tail_s: float = 1.0
) -> dict[str, np.ndarray]:
    """Command ``excitation`` on its joint around where the arm stands, recording on every control
    tick the target sent and the joints measured, with their stamps (the controller's clock).
    Returns ``t_commanded``, ``q_commanded``, ``t_measured``, ``q_measured`` (arm joints)."""
    ctl, n = rig.ctl, rig.n
    names = list(ctl.hw.joint_names)
    joint = excitation.joint or names[-1]
    if joint not in names:
        raise ConfigError(f"excitation joint {joint!r} is not one of {names}")
    j = names.index(joint)
    vmax = float(rig.vmax[j])
    if excitation.peak_velocity() > 0.9 * vmax:
        raise ConfigError(
            f"excitation of {joint} peaks at {excitation.peak_velocity():.2f} rad/s, above 90 % of its "
            f"velocity limit {vmax} rad/s (the safety layer would clip it): lower amplitude_deg"
        )
    cur = ctl.current_command()
    amp = np.radians(excitation.amplitude_deg)
    if not (ctl.hw.position_lower[j] + amp < cur[j] < ctl.hw.position_upper[j] - amp):
        raise ConfigError(
            f"{joint} at {cur[j]:.3f} rad is too close to its limits for a {amp:.3f} rad excitation"
        )
    t = np.arange(1.0 / excitation.rate_hz, excitation.duration_s, 1.0 / excitation.rate_hz)
    points = np.repeat(cur[None, :], len(t), axis=0)
    points[:, j] += excitation.offsets(t)
    rec: dict[str, list] = {"tc": [], "qc": [], "tm": [], "qm": []}
    limit = max(3.0 * amp, 0.05)  # rad: an arm this far from its command is not following it
    strayed: list[float] = []
    previous = ctl.on_tick

    def on_tick(r):
        if r.command is not None:
            rec["tc"].append(r.command.stamp)
            rec["qc"].append(r.command.position[:n].copy())
        if r.state is not None:
            rec["tm"].append(r.state.stamp)
            rec["qm"].append(r.state.position[:n].copy())
            if r.command is not None and abs(r.state.position[j] - r.command.position[j]) > limit:
                strayed.append(float(r.state.position[j] - r.command.position[j]))
        if previous is not None:
            previous(r)

    ctl.on_tick = on_tick
    try:
        if not ctl.submit_trajectory(t, points, start_time=ctl.clock() + lead_s):
            raise RuntimeError(f"excitation refused by the controller: {ctl.status()['last_rejection']}")
        end = time.monotonic() + lead_s + excitation.duration_s + tail_s
        while time.monotonic() < end and not strayed:
            if time.monotonic() > end - tail_s:  # hold at the start (where the motion ends)
                ctl.submit_target(cur)
            time.sleep(0.05)
        if strayed:
            ctl.estop()  # stop within one tick, then hold where it stopped
            time.sleep(0.2)
            ctl.reset_estop()
            raise RuntimeError(
                f"excitation stopped: {joint} was {strayed[0]:+.3f} rad away from its command (limit "
                f"{limit:.3f} rad); the arm does not follow the motion (backend or dynamics limits: "
                "try a smaller --amplitude-deg, or check the arm with slow moves)"
            )
    finally:
        ctl.on_tick = previous
    return {
        "t_commanded": np.asarray(rec["tc"]),
        "q_commanded": np.asarray(rec["qc"]),
        "t_measured": np.asarray(rec["tm"]),
        "q_measured": np.asarray(rec["qm"]),
    }
