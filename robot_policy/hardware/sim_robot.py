"""The simulated robot behind ``sim_node``: a sim task stepped at the control rate, every command
through the safety layer, trajectories executed at their times. ROS-free (plain Python).

Command path:  trajectory / forward command -> SafetyLayer.submit (validate, clamp)
               -> each tick: TrajectoryExecutor.sample -> SafetyLayer.step (rate limit, watchdog,
               e-stop) -> env.step(target).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from robot_policy.conventions import JOINT_POS
from robot_policy.hardware.config import HardwareConfig
from robot_policy.hardware.safety import CommandRejected, SafetyLayer
from robot_policy.hardware.trajectory import TrajectoryExecutor

log = logging.getLogger("robot_policy.sim_robot")


@dataclass
class TickResult:
    """What one control tick produced."""

    obs: dict[str, np.ndarray]
    """Observation dict of the sim task (images under ``<camera>_rgb``)."""
    stamp: float
    """Capture time of ``obs`` (seconds, the caller's clock)."""
    command: np.ndarray
    """Target actually sent to the arm this tick (after the safety layer)."""
    success: bool
    """Task success at this tick."""


class SimRobot:
    """A sim task that behaves like a position-controlled arm with cameras."""

    def __init__(self, hw: HardwareConfig, task: str | None = None, seed: int = 0, randomization=None):
        from robot_policy.sim import make_env

        self.hw = hw
        self.task = task or hw.task
        cams = {c.name: (c.height, c.width) for c in hw.cameras}
        self.env = make_env(self.task, cameras=cams, randomization=randomization, seed=seed)
        u = self.env.unwrapped
        if len(u.joint_names) != len(hw.joint_names):
            raise ValueError(
                f"hardware config '{hw.name}' lists {len(hw.joint_names)} joints but sim task "
                f"'{self.task}' has {len(u.joint_names)} ({list(u.joint_names)})"
            )
        self.n_arm = len(hw.joint_names)
        self._depth = {c.name: (c.height, c.width) for c in hw.cameras if c.depth}
        self._depth_renderers: dict = {}
        self.safety = SafetyLayer(hw)
        self.traj = TrajectoryExecutor()
        self.next_seed = int(seed)
        self.episode_seed: int | None = None
        self.episode_success = False
        self.steps = 0
        self._gripper_cmd = -1.0
        self.obs: dict[str, np.ndarray] = {}
        self.late_points = 0
        self.reset()

    # -- episodes ------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict:
        """Reset the scene (next seed of the sequence unless given); the arm then holds still."""
        seed = self.next_seed if seed is None else int(seed)
        self.next_seed = seed + 1
        self.obs, info = self.env.reset(seed=seed)
        self.episode_seed = seed
        self.episode_success = False
        self.steps = 0
        self._gripper_cmd = -1.0
        self.traj.clear()
        status = self.safety.status
        self.safety = SafetyLayer(self.hw)  # forget targets of the previous episode...
        status.watchdog_tripped = False
        self.safety.status = status  # ...but keep the counters and a latched e-stop
        return info

    def current_command_state(self) -> np.ndarray:
        """Measured joint positions plus the current gripper command (command order)."""
        q = np.asarray(self.obs[JOINT_POS], dtype=np.float64)
        return np.concatenate([q, [self._gripper_cmd]]) if self.hw.gripper_joint else q

    # -- commands ------------------------------------------------------------------------
    def command(self, target, now: float) -> bool:
        """Forward position command (replaces any trajectory). False when rejected."""
        try:
            self.safety.submit(target, now)
        except CommandRejected:
            return False
        self.traj.clear()
        return True

    def trajectory(self, start: float, time_from_start, points, now: float) -> bool:
        """Timed trajectory (points in command order). The whole trajectory is rejected when any
        point is invalid: executing its first half and then stopping would be worse."""
        try:
            pts = np.asarray(points, dtype=np.float64)
            if pts.ndim != 2 or len(pts) == 0:
                raise CommandRejected(f"trajectory needs at least one point, got shape {pts.shape}")
            if self.safety.status.estopped:
                raise CommandRejected("e-stop is latched; call the /estop_reset service")
            pts = np.stack([self.safety.validate(p) for p in pts])
        except CommandRejected as e:
            self.safety.reject(str(e))
            return False
        anchor = (
            self.safety.last_output if self.safety.last_output is not None else self.current_command_state()
        )
        try:
            self.late_points += self.traj.set(start, time_from_start, pts, now, anchor)
        except ValueError as e:
            self.safety.reject(str(e))
            return False
        # Make the trajectory the desired command now (also when all its points are already late).
        self.safety.submit(self.traj.sample(now), now, valid_for=max(0.0, self.traj.end_time - now))
        return True

    def estop(self) -> None:
        self.traj.clear()
        self.safety.estop()

    def reset_estop(self) -> None:
        self.safety.reset_estop()

    # -- control tick --------------------------------------------------------------------
    def tick(self, now: float) -> TickResult:
        """Advance one control period: execute the command in effect and step the physics."""
        self.traj.feed(self.safety, now)
        target = self.safety.step(self.current_command_state(), now)
        if self.hw.gripper_joint:
            self._gripper_cmd = float(target[-1])
            action = target
        else:
            action = np.concatenate([target, [self._gripper_cmd]])
        self.obs, _, _, _, info = self.env.step(action.astype(np.float32))
        self.steps += 1
        success = bool(info.get("success", False))
        self.episode_success |= success
        return TickResult(obs=self.obs, stamp=now, command=target, success=success)

    def camera_fovy(self, camera: str) -> float:
        """Vertical field of view (degrees) of a scene camera, for CameraInfo."""
        import mujoco

        m = self.env.unwrapped.model
        cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        return float(m.cam_fovy[cid]) if cid >= 0 else 45.0

    def render_depth(self) -> dict[str, np.ndarray]:
        """Depth images (uint16 millimetres, 0 = no return) of the cameras with ``depth: true``,
        like realsense2_camera's ``/<camera>/depth/image_rect_raw`` (aligned to colour here)."""
        import mujoco

        u = self.env.unwrapped
        out = {}
        for name, (h, w) in self._depth.items():
            r = self._depth_renderers.get(name)
            if r is None:
                u.model.vis.global_.offheight = max(u.model.vis.global_.offheight, h)
                u.model.vis.global_.offwidth = max(u.model.vis.global_.offwidth, w)
                r = mujoco.Renderer(u.model, h, w)
                r.enable_depth_rendering()
                self._depth_renderers[name] = r
            r.update_scene(u.data, camera=name)
            d = r.render()
            out[name] = np.where(np.isfinite(d) & (d < 65.0), np.round(d * 1000.0), 0).astype(np.uint16)
        return out

    def close(self) -> None:
        for r in self._depth_renderers.values():
            try:
                r._gl_context.make_current()
                r.close()
            except Exception:  # noqa: BLE001 - GL teardown is best effort
                pass
        self._depth_renderers.clear()
        self.env.close()
