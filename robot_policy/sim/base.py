"""Base gymnasium environment shared by every simulated task.

A task backend (native MuJoCo or robosuite) provides the physics; this class provides the
contract every caller relies on: the observation dict, the action space (absolute joint targets
plus gripper, or end-effector deltas), seeded resets, domain randomization drawn from the episode
seed, action latency and noise, observation noise, and camera images.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

from robot_policy.conventions import image_key
from robot_policy.sim.ik import DiffIK, mat_to_quat
from robot_policy.sim.render import CameraRenderer

# End-effector delta mode: an action of 1.0 moves this far per control step (like robosuite's OSC).
EE_DELTA_POS_SCALE = 0.05
EE_DELTA_ROT_SCALE = 0.5


class SimEnv(gym.Env):
    """Common contract; subclasses implement the ``_backend_*`` hooks and set the attributes below.

    Set by ``_build``: ``model``, ``data`` (raw MuJoCo), ``joint_names``, ``qpos_adr``, ``dof_adr``,
    ``joint_lower``, ``joint_upper``, ``home_qpos``, ``ee_site_id``, ``object_body_ids``,
    ``object_geom_ids``, ``table_geom_ids``, ``object_dim``, ``object_pos_idx``, ``finger_joint_id``,
    ``object_half_sizes``.
    """

    metadata = {"render_modes": ["rgb_array"]}
    task_name = ""
    control_hz = 20.0
    max_episode_steps = 200
    default_cameras: dict[str, tuple[int, int]] = {}
    render_camera = ""
    hidden_geom_groups: tuple[int, ...] = ()
    robot_name = "sim"

    def __init__(
        self,
        cameras: dict[str, tuple[int, int]] | None = None,
        randomization=None,
        seed: int | None = None,
        action_mode: str = "joint",
    ):
        from robot_policy.sim.randomization import Randomizer

        if action_mode not in ("joint", "ee_delta"):
            raise ValueError(f"action_mode must be 'joint' or 'ee_delta', got {action_mode!r}")
        self.action_mode = action_mode
        self._build()
        self.n_arm = len(self.joint_names)
        self.cameras = dict(cameras or {})
        for name in self.cameras:
            if self._camera_id(name) < 0:
                raise ValueError(
                    f"task {self.task_name!r} has no camera {name!r}; cameras: {self.camera_names}"
                )
        self._renderer = CameraRenderer(self.model, self.data, self.hidden_geom_groups)
        self.randomizer = Randomizer.from_any(randomization, self)
        self._next_seed = seed
        self.ik = DiffIK(
            self.model,
            self.ee_site_id,
            self.qpos_adr,
            self.dof_adr,
            self.joint_lower,
            self.joint_upper,
            self.home_qpos,
        )
        self.observation_space = self._make_obs_space()
        self.action_space = self._make_action_space()
        self.episode_seed: int | None = None
        self.draw: dict[str, float] = {}
        self._t = 0

    # ---- spaces -------------------------------------------------------------------------------
    def _make_obs_space(self) -> gym.spaces.Dict:
        n, inf = self.n_arm, np.inf
        spaces = {
            "joint_pos": gym.spaces.Box(-inf, inf, (n,), np.float32),
            "joint_vel": gym.spaces.Box(-inf, inf, (n,), np.float32),
            "gripper": gym.spaces.Box(-inf, inf, (1,), np.float32),
            "ee_pos": gym.spaces.Box(-inf, inf, (3,), np.float32),
            "ee_quat": gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
            "object": gym.spaces.Box(-inf, inf, (self.object_dim,), np.float32),
        }
        for name, (h, w) in self.cameras.items():
            spaces[image_key(name)] = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
        return gym.spaces.Dict(spaces)

    def _make_action_space(self) -> gym.spaces.Box:
        if self.action_mode == "ee_delta":
            return gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        low = np.concatenate([self.joint_lower, [-1.0]]).astype(np.float32)
        high = np.concatenate([self.joint_upper, [1.0]]).astype(np.float32)
        return gym.spaces.Box(low, high, dtype=np.float32)

    @property
    def camera_names(self) -> list[str]:
        import mujoco

        return [mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(self.model.ncam)]

    def _camera_id(self, name: str) -> int:
        import mujoco

        return mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name)

    # ---- gym API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._next_seed is not None:
            seed = self._next_seed
        self._next_seed = None
        super().reset(seed=seed)
        if seed is None:
            # Unseeded reset: still pick a concrete seed so the episode can be replayed.
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self.episode_seed = int(seed)
        draw_ss, physics_ss, noise_ss = np.random.SeedSequence(self.episode_seed).spawn(3)
        if options and options.get("randomization") is not None:
            # Replay: reuse a recorded draw instead of re-drawing (robust to config edits since).
            self.draw = dict(options["randomization"])
        else:
            self.draw = self.randomizer.draw(np.random.default_rng(draw_ss))
        self.randomizer.apply(self, self.draw)
        self._noise_rng = np.random.default_rng(noise_ss)
        self._backend_reset(int(physics_ss.generate_state(1)[0]))
        self._latency = int(self.draw.get("control.action_latency_steps", 0))
        self._action_noise = float(self.draw.get("control.action_noise_std", 0.0))
        self._obs_noise = float(self.draw.get("control.obs_noise_std", 0.0))
        hold = (self.data.qpos[self.qpos_adr].copy(), -1.0)
        # Latency: the first actions of an episode execute only after `latency` steps of holding still.
        self._queue = deque([hold] * self._latency)
        self._t = 0
        obs = self._get_obs()
        return obs, {"success": False, "seed": self.episode_seed, "randomization": dict(self.draw)}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN/inf: {action}")
        if self.action_mode == "ee_delta":
            q_target = self._ee_delta_to_joint(action[:6])
        else:
            q_target = action[: self.n_arm]
        grip = float(np.clip(action[-1], -1.0, 1.0))
        if self._action_noise > 0:
            q_target = q_target + self._noise_rng.normal(0.0, self._action_noise, self.n_arm)
        q_target = np.clip(q_target, self.joint_lower, self.joint_upper)
        self._queue.append((q_target, grip))
        q_exec, g_exec = self._queue.popleft()
        self._backend_step(q_exec, g_exec)
        self._t += 1
        success = bool(self._check_success())
        obs = self._get_obs()
        truncated = self._t >= self.max_episode_steps
        return obs, float(success), False, truncated, {"success": success}

    def render(self):
        return self.render_frame()

    @property
    def renderer(self) -> CameraRenderer:
        """The scene's renderer (hidden geom groups applied): cameras reading this world share it."""
        return self._renderer

    def render_frame(self, camera: str | None = None, height: int = 240, width: int = 320) -> np.ndarray:
        """A larger frame for videos (not part of observations)."""
        return self._renderer.render(camera or self.render_camera, height, width)

    def close(self):
        self._renderer.close()

    # ---- helpers ------------------------------------------------------------------------------
    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position and rotation matrix (world frame, noise-free)."""
        return self.data.site_xpos[self.ee_site_id].copy(), self.data.site_xmat[self.ee_site_id].reshape(
            3, 3
        ).copy()

    def _ee_delta_to_joint(self, delta: np.ndarray) -> np.ndarray:
        from robot_policy.sim.ik import quat_to_mat

        pos, mat = self.ee_pose()
        target_pos = pos + np.clip(delta[:3], -1, 1) * EE_DELTA_POS_SCALE
        rotvec = np.clip(delta[3:6], -1, 1) * EE_DELTA_ROT_SCALE
        angle = np.linalg.norm(rotvec)
        if angle > 1e-9:
            axis = rotvec / angle
            dq = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])
            target_mat = quat_to_mat(dq) @ mat
        else:
            target_mat = mat
        return self.ik.solve(self.data.qpos[self.qpos_adr], target_pos, target_mat, iters=5)

    def _get_obs(self) -> dict[str, np.ndarray]:
        pos, mat = self.ee_pose()
        obs = {
            "joint_pos": self.data.qpos[self.qpos_adr].astype(np.float32),
            "joint_vel": self.data.qvel[self.dof_adr].astype(np.float32),
            "gripper": np.array([self._gripper_width()], dtype=np.float32),
            "ee_pos": pos.astype(np.float32),
            "ee_quat": mat_to_quat(mat).astype(np.float32),
            "object": np.asarray(self._object_state(), dtype=np.float32),
        }
        if self._obs_noise > 0:
            r = self._noise_rng
            for key in ("joint_pos", "joint_vel", "ee_pos"):
                obs[key] = obs[key] + r.normal(0, self._obs_noise, obs[key].shape).astype(np.float32)
            idx = np.asarray(self.object_pos_idx)
            obs["object"][idx] += r.normal(0, self._obs_noise, idx.shape).astype(np.float32)
        for name, (h, w) in self.cameras.items():
            obs[image_key(name)] = self._renderer.render(name, h, w)
        return obs

    def describe(self) -> dict:
        """Name, observation keys with shapes, action dimension and control rate (for ``sim tasks``)."""
        return {
            "name": self.task_name,
            "observation": {k: list(s.shape) for k, s in self.observation_space.spaces.items()},
            "action_dim": int(self.action_space.shape[0]),
            "action": "absolute joint-position targets (rad) + gripper [-1 open, 1 closed]",
            "control_hz": float(self.control_hz),
            "max_episode_steps": int(self.max_episode_steps),
            "joint_names": list(self.joint_names),
            "cameras": self.camera_names,
            "default_cameras": {k: list(v) for k, v in self.default_cameras.items()},
        }

    # ---- backend hooks ------------------------------------------------------------------------
    def _build(self) -> None:
        raise NotImplementedError

    def _backend_reset(self, seed: int) -> None:
        raise NotImplementedError

    def _backend_step(self, q_target: np.ndarray, grip: float) -> None:
        raise NotImplementedError

    def _object_state(self) -> np.ndarray:
        raise NotImplementedError

    def _gripper_width(self) -> float:
        raise NotImplementedError

    def _check_success(self) -> bool:
        raise NotImplementedError

    def set_gain_scale(self, scale: float) -> None:
        """Scale the arm's position-control gains (domain randomization of actuator gains)."""
        raise NotImplementedError
