"""RL views of the simulated pick tasks: ``[-1, 1]`` end-effector-delta actions, compact observations.

Every env here has the same small contract (:class:`RLEnv`) that the experiment loop, the
simulated human and the actor of the RPC transport use:

* ``reset(seed) -> obs`` and ``step(action) -> (obs, success, info)``; an episode ends on
  success or after ``max_steps`` (time limit, not terminal).
* actions: ``[dx, dy, dz, dyaw, gripper]`` in ``[-1, 1]``; the gripper dimension is a command
  ``-1`` open / ``0`` stay / ``+1`` close (thresholds at +-0.5), the commanded state is the
  observation ``gripper_cmd`` (what the gripper critic's toggle penalty compares with).
* observations: ``state`` (1-D float32) and ``gripper_cmd``; in ``image`` mode the object's
  pose leaves ``state`` and camera frames ``<camera>_rgb`` come in.
* the scripted operator: ``expert_action(obs) -> action`` (what the expert would execute now,
  in the same action space), ``expert_takeover()`` (re-synchronise it with where the arm is) and
  ``progress() -> float`` (task progress for the simulated human's rule).

``tabletop`` (this project's MuJoCo scene, :mod:`robot_policy.sim.tabletop`): an action goes
end-effector delta -> differential IK (top-down grasp frame, yaw about world z) -> absolute
joint targets -> the robot's :class:`~robot_policy.hardware.safety.SafetyLayer` (the path every
command of the arbiter takes) -> the position-controlled arm. The human is the task's scripted
:class:`~robot_policy.sim.experts.LiftExpert`; its joint targets are mapped back to the action
space (forward kinematics), so its executed action is stored in the agent's terms.

``gym_hil`` (gym-hil 0.1.14 ``PandaPickCubeBase-v0``, the LeRobot HIL-SERL testbed, 10 Hz,
opspace control of a mocap target, success = cube 10 cm up and within 5 cm of the pinch
point): no yaw (the cube is axis aligned), so ``dyaw`` is ignored; its operator is a small
waypoint expert in end-effector space written here (above the cube, down, close, lift).
"""

from __future__ import annotations

import numpy as np

from robot_policy.hil.rl.gripper import GRIPPER_STATE_KEY

POS_SCALE = 0.03
"""Metres per control step of a full-scale position action (tabletop: 0.6 m/s at 20 Hz)."""
YAW_SCALE = 0.15
"""Radians per control step of a full-scale yaw action."""


def _grip_command(want_closed: bool, state: float) -> float:
    """Absolute gripper wish -> command relative to the commanded state (-1 open, 0 stay, 1 close)."""
    if want_closed and state < 0:
        return 1.0
    if not want_closed and state > 0:
        return -1.0
    return 0.0


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2 * np.pi) - np.pi)


class TabletopPick:
    """The tabletop pick task for RL (see the module docstring)."""

    name = "tabletop"
    action_dim = 5

    def __init__(
        self,
        obs_mode: str = "state",
        image_size: int = 64,
        max_steps: int = 120,
        expert_noise: float = 1.0,
        cameras: tuple[str, ...] = ("agentview", "wrist"),
    ):
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.sim import make_env, make_expert

        self.obs_mode = obs_mode
        cams = {c: (image_size, image_size) for c in cameras} if obs_mode == "image" else None
        self.env = make_env("tabletop", cameras=cams, action_mode="joint")
        self.u = self.env.unwrapped
        self.hw = load_hardware_config(self.u.robot_name)
        self.expert = make_expert("tabletop", self.env, noise=expert_noise)
        self.max_steps = int(max_steps)
        self.control_hz = float(self.u.control_hz)
        self.cameras = tuple(cams or ())
        self.raw: dict[str, np.ndarray] = {}
        state_dim = 6 if obs_mode == "image" else 12
        self.obs_spec: dict[str, tuple[int, ...]] = {"state": (state_dim,), GRIPPER_STATE_KEY: (1,)}
        for c in self.cameras:
            self.obs_spec[f"{c}_rgb"] = (image_size, image_size, 3)
        _, home_mat = self.u.ik.fk(self.u.home_qpos)
        self.down_mat = self.expert.down_mat

    # ------------------------------------------------------------------ geometry helpers
    def _yaw_of(self, mat: np.ndarray) -> float:
        """Yaw of an end-effector frame relative to the top-down grasp frame (the expert's yaw)."""
        r = mat @ self.down_mat.T
        return float(np.arctan2(r[1, 0], r[0, 0]))

    def tcp(self) -> tuple[np.ndarray, float]:
        pos, mat = self.u.ee_pose()
        return pos, self._yaw_of(mat)

    def _obs(self) -> dict[str, np.ndarray]:
        from robot_policy.sim.experts import cube_yaw

        raw = self.raw
        tcp, yaw = self.tcp()
        width = float(raw["gripper"][0])
        if self.obs_mode == "image":
            state = np.array([*tcp, np.sin(yaw), np.cos(yaw), width * 10])
        else:
            cube = raw["object"][:3]
            yaw_err = _wrap(cube_yaw(raw["object"][3:7]) - yaw)
            yaw_err = (yaw_err + np.pi / 4) % (np.pi / 2) - np.pi / 4  # a cube repeats every 90 degrees
            lift = cube[2] - self.table_z - float(self.u.object_half_sizes[0][2])
            state = np.array([*tcp, *cube, *(cube - tcp), yaw_err, width * 10, lift * 10])
        obs = {"state": state.astype(np.float32), GRIPPER_STATE_KEY: np.array([self.grip], np.float32)}
        for c in self.cameras:
            obs[f"{c}_rgb"] = raw[f"{c}_rgb"]
        return obs

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> dict[str, np.ndarray]:
        from robot_policy.hardware.safety import SafetyLayer

        self.raw, _ = self.env.reset(seed=int(seed))
        self.seed = int(seed)
        self.t = 0
        self.grip = -1.0
        self.safety = SafetyLayer(self.hw)
        self.table_z = float(self.u.table_height())
        self.cube_start = self.raw["object"][:3].copy()
        self.expert.reset(self.seed)
        self._expert_live = False
        return self._obs()

    def joint_target(self, action: np.ndarray) -> np.ndarray:
        """Agent action -> absolute joint targets + gripper (command order), before the safety layer."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        pos, yaw = self.tcp()
        target_pos = pos + a[:3] * POS_SCALE
        from robot_policy.sim.ik import yaw_matrix

        target_mat = yaw_matrix(yaw + a[3] * YAW_SCALE) @ self.down_mat
        q = self.u.ik.solve(self.raw["joint_pos"], target_pos, target_mat, iters=5)
        g = a[4]
        grip = 1.0 if g > 0.5 else (-1.0 if g < -0.5 else self.grip)
        return np.concatenate([q, [grip]])

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool, dict]:
        desired = self.joint_target(action)
        now = self.t / self.control_hz
        self.safety.submit(desired, now)
        executed = self.safety.step(np.concatenate([self.raw["joint_pos"], [self.grip]]), now)
        self.grip = float(executed[-1])
        self.prev_raw, self.last_executed = self.raw, executed.astype(np.float32)  # for joint-space recording
        self.raw, _, _, _, info = self.env.step(self.last_executed)
        self.t += 1
        success = bool(info.get("success"))
        return self._obs(), success, {"success": success, "timeout": self.t >= self.max_steps}

    # ------------------------------------------------------------------ the scripted operator
    def expert_takeover(self) -> None:
        """Re-synchronise the expert with the arm: its command starts where the arm is, and it
        resumes at the lift if the cube is already in the closed hand, else at the approach."""
        e = self.expert
        e.phase, e.phase_steps, e.memory = 0, 0, {}
        e.q_cmd = np.asarray(self.raw["joint_pos"], dtype=np.float64).copy()
        e.cmd_pos, _ = self.u.ik.fk(e.q_cmd)
        e.cmd_yaw = self.tcp()[1]
        if self.grasped():
            e.phase = 3
            e.memory = {"grasp": e.cmd_pos.copy(), "yaw": e.cmd_yaw}
        self._expert_live = True

    def expert_action(self, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """What the scripted expert executes now, in the action space (advances its plan)."""
        if not self._expert_live:
            self.expert_takeover()
        q = np.asarray(self.expert.act(self.raw), dtype=np.float64)
        pos, mat = self.u.ik.fk(q[:-1])
        tcp, yaw = self.tcp()
        a = np.zeros(self.action_dim)
        a[:3] = (pos - tcp) / POS_SCALE
        a[3] = _wrap(self._yaw_of(mat) - yaw) / YAW_SCALE
        a[4] = _grip_command(q[-1] > 0, self.grip)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def expert_release(self) -> None:
        """The expert stops driving (its plan is re-synchronised at the next takeover)."""
        self._expert_live = False

    def grasped(self) -> bool:
        """The gripper is commanded closed and the cube sits between the fingertips."""
        tcp, _ = self.tcp()
        return self.grip > 0 and float(np.linalg.norm(self.raw["object"][:3] - tcp)) < 0.03

    def progress(self) -> float:
        """Task progress (m): minus the fingertip-to-cube distance, plus 3x the cube's lift;
        the simulated human watches whether it keeps improving."""
        tcp, _ = self.tcp()
        cube = self.raw["object"][:3]
        lift = max(0.0, cube[2] - self.cube_start[2])
        return float(-np.linalg.norm(cube - tcp) + 3.0 * lift)

    def knocked(self) -> float:
        """How far (m) the cube was pushed on the table (not lifted) from where it started."""
        cube = self.raw["object"][:3]
        return 0.0 if self.grasped() else float(np.linalg.norm(cube[:2] - self.cube_start[:2]))

    def close(self) -> None:
        self.env.close()


class GymHilPick:
    """gym-hil's ``PandaPickCubeBase-v0`` for RL (state observations; see the module docstring)."""

    name = "gym_hil"
    action_dim = 5
    POS = 0.02  # m per step of a full-scale action (10 Hz)

    def __init__(self, obs_mode: str = "state", max_steps: int = 100, random_block: bool = True, **_):
        import gymnasium as gym

        import robot_policy.sim  # noqa: F401 - selects the headless GL backend before gym_hil loads mujoco

        if obs_mode != "state":
            raise ValueError("the gym-hil env is wired for state observations only here")
        import gym_hil  # noqa: F401 - registers the env ids

        self.env = gym.make("gym_hil/PandaPickCubeBase-v0", random_block_position=random_block).unwrapped
        self.max_steps = int(max_steps)
        self.control_hz = 10.0
        self.cameras = ()
        self.obs_spec = {"state": (11,), GRIPPER_STATE_KEY: (1,)}

    def _sensors(self) -> tuple[np.ndarray, np.ndarray, float]:
        d = self.env._data
        return (
            d.sensor("2f85/pinch_pos").data.copy(),
            d.sensor("block_pos").data.copy(),
            float(self.env.get_gripper_pose()[0]) / 255.0,
        )

    def _obs(self) -> dict[str, np.ndarray]:
        tcp, block, width = self._sensors()
        lift = block[2] - self.z0
        state = np.array([*tcp, *block, *(block - tcp), width, lift * 10], np.float32)
        return {"state": state, GRIPPER_STATE_KEY: np.array([self.grip], np.float32)}

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        # gym-hil draws the block with the global numpy RNG: seed it so episodes are reproducible.
        np.random.seed(int(seed) % (2**32))
        self.env.reset(seed=int(seed))
        self.t, self.grip, self.phase, self.phase_steps = 0, -1.0, 0, 0
        _, block, _ = self._sensors()
        self.z0 = float(block[2])
        self.block_start = block.copy()
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool, dict]:
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        g = 1.0 if a[4] > 0.5 else (-1.0 if a[4] < -0.5 else self.grip)
        grasp = 1.0 if g > 0 else -1.0  # gym-hil integrates the command: +-1 saturates closed / open
        self.grip = g
        self.env.step(np.array([*(a[:3] * self.POS), 0.0, 0.0, 0.0, grasp]))
        self.t += 1
        tcp, block, _ = self._sensors()
        success = bool(np.linalg.norm(block - tcp) < 0.05 and block[2] - self.z0 > 0.1)
        return self._obs(), success, {"success": success, "timeout": self.t >= self.max_steps}

    def expert_takeover(self) -> None:
        self.phase, self.phase_steps = (3 if self.grasped() else 0), 0

    def expert_release(self) -> None:
        pass

    def expert_action(self, obs=None) -> np.ndarray:
        """Waypoints: 6 cm above the block, down to it, close 5 steps, lift 15 cm."""
        tcp, block, _ = self._sensors()
        want_closed = self.phase >= 2
        if self.phase == 0:
            target = block + [0, 0, 0.06]
            if np.linalg.norm(target - tcp) < 0.01:
                self.phase, self.phase_steps = 1, 0
        elif self.phase == 1:
            target = block + [0, 0, 0.0]
            if np.linalg.norm(target - tcp) < 0.008 or self.phase_steps > 30:
                self.phase, self.phase_steps = 2, 0
        elif self.phase == 2:
            target = tcp.copy()
            if self.phase_steps >= 5:
                self.phase, self.phase_steps = 3, 0
        else:
            target = np.array([*tcp[:2], self.z0 + 0.15])
        self.phase_steps += 1
        a = np.zeros(self.action_dim, np.float32)
        a[:3] = np.clip((target - tcp) / self.POS, -1, 1)
        a[4] = _grip_command(want_closed, self.grip)
        return a

    def grasped(self) -> bool:
        tcp, block, _ = self._sensors()
        return self.grip > 0 and float(np.linalg.norm(block - tcp)) < 0.03

    def progress(self) -> float:
        tcp, block, _ = self._sensors()
        return float(-np.linalg.norm(block - tcp) + 3.0 * max(0.0, block[2] - self.z0))

    def knocked(self) -> float:
        _, block, _ = self._sensors()
        return 0.0 if self.grasped() else float(np.linalg.norm(block[:2] - self.block_start[:2]))

    def close(self) -> None:
        self.env.close()


ENVS = {"tabletop": TabletopPick, "gym_hil": GymHilPick}
"""Env name -> class (``--env`` of ``robot-policy hil run``)."""


def make_rl_env(name: str, **kwargs):
    if name not in ENVS:
        raise ValueError(f"unknown RL env {name!r}; choose one of {sorted(ENVS)}")
    return ENVS[name](**kwargs)
