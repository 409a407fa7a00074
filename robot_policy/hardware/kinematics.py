"""The arm's kinematics from its robot description: Cartesian pose -> joint target (IK) and back.

One solver for every Cartesian input: ``robot_node``'s ``target_pose`` (PoseStamped) and the
Cartesian teleop devices (SpaceMouse, gamepad) go through the same damped-least-squares IK
(:class:`robot_policy.sim.ik.DiffIK`) on the MJCF named by the hardware config's
``description``, and the resulting joint target then through the same safety layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_policy.config import ConfigError
from robot_policy.hardware.config import HardwareConfig


class PoseSolver:
    """Cartesian target -> joint target: the project's damped-least-squares IK
    (:class:`robot_policy.sim.ik.DiffIK`) on the robot's MJCF (``description:`` of the hardware
    config), end-effector site ``site``. Poses are in the model's world frame."""

    POSITION_TOL = 0.01
    """m: a solution further than this from the target is refused (unreachable), not executed."""
    ROTATION_TOL = 0.05
    """rad: the same for the orientation error."""

    def __init__(self, hw: HardwareConfig, site: str = "tcp"):
        import mujoco

        from robot_policy import resources
        from robot_policy.sim.ik import DiffIK

        if not hw.description:
            raise ConfigError(
                f"hardware config '{hw.name}' has no description: Cartesian targets need an MJCF of the "
                "arm (description: path/to/robot.xml) with its joints and an end-effector site"
            )
        path = Path(hw.description)
        path = path if path.is_file() else resources.shipped_file(hw.description)
        model = mujoco.MjModel.from_xml_path(str(path))
        try:
            jids = [model.joint(n).id for n in hw.joint_names]
            site_id = model.site(site).id
        except KeyError as e:
            raise ConfigError(
                f"hardware config '{hw.name}': description {path} has no {e.args[0]} (needs the joints "
                f"{hw.joint_names} and the end-effector site '{site}', parameter ee_site)"
            ) from None
        lower, upper = np.asarray(hw.position_lower), np.asarray(hw.position_upper)
        qadr = np.array([model.jnt_qposadr[j] for j in jids])
        home = (lower + upper) / 2
        if model.nkey and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home") >= 0:
            home = np.clip(model.key("home").qpos[qadr], lower, upper)
        self.ik = DiffIK(model, site_id, qadr, [model.jnt_dofadr[j] for j in jids], lower, upper, home)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position (3,) and quaternion (w, x, y, z) at arm joints ``q``."""
        from robot_policy.sim.ik import mat_to_quat

        pos, mat = self.ik.fk(np.asarray(q, dtype=np.float64))
        return pos, mat_to_quat(mat)

    def solve(self, q: np.ndarray, position, quat_wxyz) -> np.ndarray:
        """Joint positions near ``q`` reaching the pose (an all-zero quaternion: position only);
        ValueError when the pose is out of reach."""
        from robot_policy.sim.ik import orientation_error, quat_to_mat

        pos = np.asarray(position, dtype=np.float64)
        quat = np.asarray(quat_wxyz, dtype=np.float64)
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))):
            raise ValueError(f"target pose has non-finite values: position {pos}, orientation {quat}")
        norm = np.linalg.norm(quat)
        mat = None if norm == 0 else quat_to_mat(quat / norm)
        sol = self.ik.solve(q, pos, mat, iters=100, max_step=0.1)
        p, m = self.ik.fk(sol)
        dp = float(np.linalg.norm(p - pos))
        dr = 0.0 if mat is None else float(np.linalg.norm(orientation_error(m, mat)))
        if dp > self.POSITION_TOL or dr > self.ROTATION_TOL:
            raise ValueError(
                f"target pose {pos.round(3).tolist()} out of reach within the joint limits: IK ends "
                f"{dp * 100:.1f} cm / {dr:.2f} rad away; not executed"
            )
        return sol
