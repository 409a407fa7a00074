"""Damped-least-squares differential inverse kinematics on any MuJoCo model.

Used by the scripted experts (waypoints -> absolute joint targets) and by the end-effector
delta action mode. It runs on a private ``MjData`` so solving never disturbs the simulation.
"""

from __future__ import annotations

import mujoco
import numpy as np


def orientation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-frame rotation vector (small-angle) taking rotation matrix ``current`` to ``target``."""
    return 0.5 * sum(np.cross(current[:, i], target[:, i]) for i in range(3))


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_to_mat(quat_wxyz: np.ndarray) -> np.ndarray:
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat_wxyz, dtype=np.float64))
    return mat.reshape(3, 3)


def mat_to_quat(mat: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(mat, dtype=np.float64).reshape(9))
    return quat


class DiffIK:
    """Iterative DLS IK for one site driven by a set of hinge joints.

    Args:
        model: the MuJoCo model (shared with the env; only read).
        site_id: the end-effector site.
        qpos_adr / dof_adr: addresses of the arm joints in ``qpos`` / ``qvel``.
        lower / upper: joint limits; solutions are clipped to them.
        home: posture the null space is pulled towards (keeps redundant arms tidy).
    """

    def __init__(self, model, site_id, qpos_adr, dof_adr, lower, upper, home, damping=0.05, null_gain=0.1):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = int(site_id)
        self.qpos_adr = np.asarray(qpos_adr)
        self.dof_adr = np.asarray(dof_adr)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.home = np.asarray(home, dtype=np.float64)
        self.damping = damping
        self.null_gain = null_gain
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position and rotation matrix at joint positions ``q``."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(
            3, 3
        ).copy()

    def solve(
        self,
        q: np.ndarray,
        target_pos: np.ndarray,
        target_mat: np.ndarray | None = None,
        iters: int = 3,
        max_step: float = 0.2,
    ) -> np.ndarray:
        """Joint positions near ``q`` that bring the site to the target pose (orientation optional)."""
        q = np.array(q, dtype=np.float64)
        n = len(q)
        for _ in range(iters):
            pos, mat = self.fk(q)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            if target_mat is None:
                jac = self._jacp[:, self.dof_adr]
                err = target_pos - pos
            else:
                jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])
                err = np.concatenate([target_pos - pos, orientation_error(mat, target_mat)])
            jjt = jac @ jac.T + (self.damping**2) * np.eye(jac.shape[0])
            jpinv = jac.T @ np.linalg.solve(jjt, np.eye(jac.shape[0]))
            dq = jpinv @ err
            # Null-space pull towards the home posture: resolves the 7th DoF without fighting the task.
            dq += (np.eye(n) - jpinv @ jac) @ (self.null_gain * (self.home - q))
            norm = np.abs(dq).max()
            if norm > max_step:
                dq *= max_step / norm
            q = np.clip(q + dq, self.lower, self.upper)
        return q
