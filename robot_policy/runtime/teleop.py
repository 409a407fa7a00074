"""Teleoperation sources behind ``teleop_node`` (ROS-free): a keyboard joint jogger for a person
at a terminal, and the sim task's scripted expert driven from observations, so recording runs
end to end without a person. Both produce absolute joint-position targets + gripper command."""

from __future__ import annotations

import numpy as np

# Key pairs (+, -) per joint, one row of the keyboard each: q/a jogs joint 1, w/s joint 2, ...
JOG_KEYS = ["qa", "ws", "ed", "rf", "tg", "yh", "uj"]
KEY_HELP = (
    "keyboard teleop: q/a w/s e/d r/f t/g y/h u/j jog joints 1-7 (+/-), space toggles the gripper,\n"
    "  n: new episode (reset + start recording), m: mark success and commit, b: discard, x: e-stop, z: reset e-stop"
)


class KeyboardJogger:
    """Turns key presses into joint targets: each press moves one joint by ``step`` rad."""

    def __init__(self, n_joints: int, step: float = 0.05):
        self.n = n_joints
        self.step = step
        self.target: np.ndarray | None = None
        self.gripper = -1.0

    def sync(self, joint_pos: np.ndarray) -> None:
        """Start jogging from the measured position (after a reset or before the first key)."""
        self.target = np.asarray(joint_pos, dtype=np.float64)[: self.n].copy()

    def key(self, ch: str) -> bool:
        """Apply one key; True when it changed the command."""
        if self.target is None:
            return False
        if ch == " ":
            self.gripper = -self.gripper
            return True
        for j, (plus, minus) in enumerate(JOG_KEYS[: self.n]):
            if ch == plus:
                self.target[j] += self.step
                return True
            if ch == minus:
                self.target[j] -= self.step
                return True
        return False

    def command(self) -> np.ndarray | None:
        if self.target is None:
            return None
        return np.concatenate([self.target, [self.gripper]])


class ScriptedSource:
    """The sim task's scripted expert, fed observations assembled from the graph.

    Builds a private copy of the task (no cameras) only for the expert's kinematic model; the
    robot it drives is whatever publishes the observations.
    """

    def __init__(self, task: str):
        from robot_policy.sim import make_env, make_expert

        self.env = make_env(task, cameras=None)
        self.expert = make_expert(task, self.env)
        self.max_steps = int(self.env.unwrapped.max_episode_steps)

    def reset(self, seed: int | None) -> None:
        self.expert.reset(seed)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.expert.act(obs), dtype=np.float64)

    def close(self) -> None:
        self.env.close()
