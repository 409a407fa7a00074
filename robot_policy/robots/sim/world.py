"""The simulated world behind the ``sim`` arm backend: one sim task (arm, objects, cameras) in
one process, stepped once per control tick by the arm's controller.

The world is the one object that hosts both the arm and the cameras: the ``sim`` arm commands
it, and the ``sim`` camera backend (``robot_policy.cameras.sim``) renders from its ``model`` /
``data`` with its ``renderer`` (one GL context, bound to the loop thread that built the world).
It also carries what only a simulation has: episode resets with seeds, task success, and the
low-dimensional task state (object pose) that ``robot_node`` publishes on ``/sim/observation``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from robot_policy.conventions import GRIPPER, JOINT_POS, JOINT_STATE_KEYS, JOINT_VEL, is_image_key
from robot_policy.hardware.config import HardwareConfig
from robot_policy.types import JointState

STAMP_CAP = 0.25
"""An observation is stamped at most this fraction of a period after the tick's command time."""


class SimWorld:
    """A sim task env driven like a position-controlled arm: set targets, step once per tick."""

    def __init__(self, hw: HardwareConfig, task: str = "", seed: int = 0, randomization: Any = None):
        from robot_policy.sim import make_env

        self.hw = hw
        self.task = task or hw.task
        # No cameras in the env's observation: the cameras render from this world at their own
        # rate (robot_policy.cameras.sim), not at every physics step.
        self.env = make_env(self.task, cameras=None, randomization=randomization, seed=seed)
        u = self.env.unwrapped
        if len(u.joint_names) != len(hw.joint_names):
            self.env.close()
            raise ValueError(
                f"hardware config '{hw.name}' lists {len(hw.joint_names)} joints but sim task "
                f"'{self.task}' has {len(u.joint_names)} ({list(u.joint_names)})"
            )
        self.period = 1.0 / hw.control_hz
        self.next_seed = int(seed)
        self.episode_seed: int | None = None
        self.episode_success = False
        self.success_now = False
        self.steps = 0
        self.obs: dict[str, np.ndarray] = {}
        self.stamp = 0.0
        self.arm_target = np.zeros(len(hw.joint_names))
        self.gripper_command = -1.0
        self.reset()

    # -- what the cameras read ---------------------------------------------------------------
    @property
    def model(self):
        return self.env.unwrapped.model

    @property
    def data(self):
        return self.env.unwrapped.data

    @property
    def renderer(self):
        """The env's renderer, shared with the cameras (one GL context per world)."""
        return self.env.unwrapped.renderer

    def camera_fovy(self, camera: str) -> float:
        """Vertical field of view (degrees) of a scene camera, for CameraInfo."""
        import mujoco

        cid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        return float(self.model.cam_fovy[cid]) if cid >= 0 else 45.0

    # -- episodes ----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> int:
        """Reset the scene (next seed of the sequence unless given); the arm then holds still."""
        seed = self.next_seed if seed is None else int(seed)
        self.next_seed = seed + 1
        self.obs, _ = self.env.reset(seed=seed)
        self.stamp = time.monotonic()
        self.episode_seed = seed
        self.episode_success = self.success_now = False
        self.steps = 0
        self.hold()
        self.gripper_command = -1.0
        return seed

    def task_state(self) -> dict[str, np.ndarray]:
        """Low-dim observation keys other than the joint state (object pose, end effector)."""
        return {k: v for k, v in self.obs.items() if k not in JOINT_STATE_KEYS and not is_image_key(k)}

    # -- the arm -----------------------------------------------------------------------------
    def joint_state(self) -> JointState:
        """Measured arm joints (no gripper), stamped on the monotonic clock."""
        return JointState(
            position=np.asarray(self.obs[JOINT_POS], dtype=np.float64),
            stamp=self.stamp,
            velocity=np.asarray(self.obs[JOINT_VEL], dtype=np.float64),
            names=tuple(self.hw.joint_names),
        )

    def gripper_width(self) -> float:
        return float(self.obs[GRIPPER][0])

    def hold(self) -> None:
        """Make the measured joint positions the target (e-stop, reset)."""
        self.arm_target = np.asarray(self.obs[JOINT_POS], dtype=np.float64).copy()

    def step(self, t: float) -> None:
        """Advance one control period with the current targets. ``t``: the tick's command time
        (monotonic); the observation is stamped ``t`` plus the step's compute time, capped."""
        action = np.concatenate([self.arm_target, [self.gripper_command]]).astype(np.float32)
        t0 = time.monotonic()
        self.obs, _, _, _, info = self.env.step(action)
        self.stamp = t + min(time.monotonic() - t0, STAMP_CAP * self.period)
        self.steps += 1
        self.success_now = bool(info.get("success", False))
        self.episode_success |= self.success_now

    def close(self) -> None:
        self.env.close()
