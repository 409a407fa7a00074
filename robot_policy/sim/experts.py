"""Scripted experts: end-effector waypoints -> differential IK -> absolute joint targets.

The expert keeps its own commanded joint vector and moves a commanded end-effector pose
towards the current waypoint at a bounded speed, solving IK from the previous command. That
yields smooth joint-target trajectories (what a policy should imitate) that do not depend on
how well the controller tracks. Phases advance on what the observation shows (end-effector
reached, timers), so latency and noise from domain randomization are absorbed.

Noise: each episode draws a small grasp offset and a speed factor, and joint targets get
small Gaussian noise, so demonstrations are diverse but still succeed.
"""

from __future__ import annotations

import numpy as np

from robot_policy.sim.ik import quat_to_mat, yaw_matrix


def _wrap_quarter(yaw: float) -> float:
    """A cube looks the same every 90 degrees: the smallest equivalent rotation in [-pi/4, pi/4)."""
    return (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4


def cube_yaw(quat_wxyz: np.ndarray) -> float:
    r = quat_to_mat(quat_wxyz)
    return _wrap_quarter(float(np.arctan2(r[1, 0], r[0, 0])))


class WaypointExpert:
    """Phase machine over end-effector waypoints; subclasses define ``_plan``."""

    fast = 0.015  # m per control step in free space
    slow = 0.007  # m per control step near objects
    yaw_rate = 0.04  # rad per control step
    # Below the de-rated Franka limits of hardware/*.yaml (1.09-1.3 rad/s), so the same commands
    # pass the safety layer's rate limiter unchanged on the ROS sim robot and on the real arm.
    max_joint_speed = 0.9  # rad/s

    def __init__(self, env, noise: float = 1.0):
        self.env = env.unwrapped
        self.noise = noise
        _, home_mat = self.env.ik.fk(self.env.home_qpos)
        # Direction the fingers close along, in the end-effector frame (for obstacle-aware grasps).
        axis_world = self.env.ik.data.xaxis[self.env.finger_joint_id]
        self.finger_axis_ee = home_mat.T @ axis_world
        # Straight top-down grasp frame closest to the home orientation (home may be tilted a little).
        z = np.array([0.0, 0.0, -1.0])
        x = home_mat[:, 0] - home_mat[:, 0] @ z * z
        x /= np.linalg.norm(x)
        self.down_mat = np.column_stack([x, np.cross(z, x), z])
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.phase = 0
        self.phase_steps = 0
        self.q_cmd = None
        self.grasp_offset = self.rng.uniform(-0.004, 0.004, 2) * self.noise
        self.speed = 1.0 + self.rng.uniform(-0.15, 0.15) * self.noise
        self.memory: dict[str, np.ndarray] = {}

    # -- motion primitive ------------------------------------------------------------------------
    def _track(self, obs, target_pos, target_yaw, grip, speed) -> np.ndarray:
        delta = np.asarray(target_pos) - self.cmd_pos
        step = speed * self.speed
        dist = np.linalg.norm(delta)
        self.cmd_pos = self.cmd_pos + (delta if dist <= step else delta * step / dist)
        self.cmd_yaw += float(np.clip(target_yaw - self.cmd_yaw, -self.yaw_rate, self.yaw_rate))
        target_mat = yaw_matrix(self.cmd_yaw) @ self.down_mat
        q_new = self.env.ik.solve(self.q_cmd, self.cmd_pos, target_mat, iters=2)
        max_dq = self.max_joint_speed / self.env.control_hz
        self.q_cmd = self.q_cmd + np.clip(q_new - self.q_cmd, -max_dq, max_dq)
        q = self.q_cmd + self.rng.normal(0.0, 0.001 * self.noise, len(self.q_cmd))
        return np.concatenate([q, [grip]]).astype(np.float32)

    def _grasp_yaw(self, obj_quat, obj_pos, obstacles=()) -> float:
        """Yaw aligning the fingers with the cube's faces; of the two choices, the one whose
        fingers stay clear of nearby objects (else the smaller wrist rotation)."""
        yaw = cube_yaw(obj_quat)
        if not len(obstacles):
            return yaw
        best, best_cost = yaw, np.inf
        for cand in (yaw, yaw + np.pi / 2 if yaw < 0 else yaw - np.pi / 2):
            axis = (yaw_matrix(cand) @ self.down_mat @ self.finger_axis_ee)[:2]
            cost = 0.1 * abs(cand)
            for ob in obstacles:
                d = np.asarray(ob[:2]) - obj_pos[:2]
                dist = np.linalg.norm(d)
                # Fingers reach ~6 cm from the cube centre along their axis: penalize obstacles there.
                if dist < 0.14:
                    cost += abs(axis @ d / dist) * (0.14 - dist) * 10
            if cost < best_cost:
                best, best_cost = cand, cost
        return best

    def _reached(self, obs, target, tol) -> bool:
        cmd_done = np.linalg.norm(self.cmd_pos - np.asarray(target)) < 0.003
        cmd_done = cmd_done and abs(self.cmd_yaw - self.memory.get("yaw", self.cmd_yaw)) < 0.02
        return cmd_done and np.linalg.norm(obs["ee_pos"] - np.asarray(target)) < tol

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.q_cmd is None:
            self.q_cmd = np.asarray(obs["joint_pos"], dtype=np.float64).copy()
            self.cmd_pos, _ = self.env.ik.fk(self.q_cmd)
            self.cmd_yaw = 0.0
        target, yaw, grip, speed, done = self._plan(obs)
        action = self._track(obs, target, yaw, grip, speed)
        self.phase_steps += 1
        if done:
            self.phase += 1
            self.phase_steps = 0
        return action

    def _plan(self, obs):
        """-> (target_pos, target_yaw, grip, speed, phase_done)."""
        raise NotImplementedError

    # -- shared phases ---------------------------------------------------------------------------
    def _grasp_phases(self, obs, obj_pos, obj_quat, half_height, obstacles=(), grasp_dz=-0.003):
        """Phases 0-2: above the object, down around it, close. Returns None once they are done."""
        if self.phase == 0:
            yaw = self._grasp_yaw(obj_quat, obj_pos, obstacles)
            self.memory["yaw"] = yaw
            target = obj_pos + np.array([*self.grasp_offset, half_height + 0.08])
            return target, yaw, -1.0, self.fast, self._reached(obs, target, 0.02) or self.phase_steps > 80
        if self.phase == 1:
            if "grasp" not in self.memory or self.phase_steps < 3:
                self.memory["grasp"] = obj_pos + np.array([*self.grasp_offset, grasp_dz])
            target = self.memory["grasp"]
            return (
                target,
                self.memory["yaw"],
                -1.0,
                self.slow,
                self._reached(obs, target, 0.01) or self.phase_steps > 60,
            )
        if self.phase == 2:
            return self.memory["grasp"], self.memory["yaw"], 1.0, self.slow, self.phase_steps >= 10
        return None


class LiftExpert(WaypointExpert):
    """Grasp the single object and lift it well above the table."""

    lift_height = 0.15

    def _plan(self, obs):
        pos, quat = obs["object"][:3], obs["object"][3:7]
        half = float(self.env.object_half_sizes[0][2])
        out = self._grasp_phases(obs, pos, quat, half)
        if out is not None:
            return out
        target = self.memory["grasp"] + np.array([0.0, 0.0, self.lift_height])
        return target, self.memory["yaw"], 1.0, self.fast, False


class StackExpert(WaypointExpert):
    """Grasp cube A, carry it above cube B, lower it until it rests on B, release, back off."""

    def _plan(self, obs):
        a_pos, a_quat = obs["object"][:3], obs["object"][3:7]
        b_pos = obs["object"][7:10]
        ha = float(self.env.object_half_sizes[0][2])
        hb = float(self.env.object_half_sizes[1][2])
        out = self._grasp_phases(obs, a_pos, a_quat, ha, obstacles=[b_pos])
        if out is not None:
            return out
        yaw = self.memory["yaw"]
        carry_z = b_pos[2] + hb + 2 * ha + 0.06
        if self.phase == 3:  # lift straight up
            target = np.array([*self.memory["grasp"][:2], carry_z])
            return target, yaw, 1.0, self.fast, self._reached(obs, target, 0.02) or self.phase_steps > 60
        if self.phase == 4:  # carry above B, aligning with B's faces
            # Where the cube sits in the hand, measured once it hangs still.
            self.memory["in_hand"] = a_pos - obs["ee_pos"]
            target = np.array([*(b_pos[:2] - self.memory["in_hand"][:2]), carry_z])
            self.memory["b"] = b_pos.copy()
            return target, yaw, 1.0, self.fast, self._reached(obs, target, 0.01) or self.phase_steps > 80
        if self.phase == 5:  # lower until A rests just above B
            off = self.memory["in_hand"]
            place_z = self.memory["b"][2] + hb + ha + 0.008 - off[2]
            target = np.array([*(self.memory["b"][:2] - off[:2]), place_z])
            return target, yaw, 1.0, self.slow, self._reached(obs, target, 0.008) or self.phase_steps > 60
        if self.phase == 6:  # release
            target = self.cmd_pos.copy()
            return target, yaw, -1.0, self.slow, self.phase_steps >= 10
        target = self.cmd_pos.copy()
        target[2] = self.memory["b"][2] + hb + 2 * ha + 0.08
        return target, yaw, -1.0, self.slow, False


class PickPlaceExpert(WaypointExpert):
    """Grasp the object, lift it over the bin walls, carry it above the target, lower, release, back off."""

    clearance = 0.12  # m above the target bin's floor while carrying

    def _plan(self, obs):
        pos = obs["object"][:3]
        bottom = float(self.env.object_bottom[0])
        # A can is round: keep the wrist as it is (yaw 0) instead of aligning to faces.
        # Grip the can 1.5 cm above its body origin: lower, the fingertips meet the bin floor.
        out = self._grasp_phases(obs, pos, np.array([1.0, 0, 0, 0]), 0.0, grasp_dz=0.015)
        if out is not None:
            return out
        target = self.env.target_position()
        carry_z = target[2] + bottom + self.clearance + 0.08
        if self.phase == 3:  # straight up, out of the source bin
            goal = np.array([*self.memory["grasp"][:2], carry_z])
            return goal, 0.0, 1.0, self.fast, self._reached(obs, goal, 0.02) or self.phase_steps > 60
        if self.phase == 4:  # across, above the target
            self.memory["in_hand"] = pos - obs["ee_pos"]
            goal = np.array([*(target[:2] - self.memory["in_hand"][:2]), carry_z])
            return goal, 0.0, 1.0, self.fast, self._reached(obs, goal, 0.015) or self.phase_steps > 100
        if self.phase == 5:  # down until the object is just above the bin floor
            off = self.memory["in_hand"]
            goal = np.array([*(target[:2] - off[:2]), target[2] + bottom + 0.03 - off[2]])
            return goal, 0.0, 1.0, self.slow, self._reached(obs, goal, 0.01) or self.phase_steps > 60
        if self.phase == 6:  # release
            return self.cmd_pos.copy(), 0.0, -1.0, self.slow, self.phase_steps >= 8
        goal = self.cmd_pos.copy()
        goal[2] = carry_z
        return goal, 0.0, -1.0, self.fast, False
