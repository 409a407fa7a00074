"""Native MuJoCo tabletop task: pick the cube up off the table (``sim/tabletop.xml``).

The default digital twin behind the simulated robot of the ROS graph: its robot description and
limits are referenced from ``hardware/sim_tabletop.yaml``. Position actuators take the absolute
joint targets directly, exactly like a ``forward_position_controller`` on a real arm.
"""

from __future__ import annotations

import mujoco
import numpy as np

from robot_policy import resources
from robot_policy.sim.base import SimEnv

SCENE = resources.data_path("sim/tabletop.xml")  # the checkout's sim/, else the installed copy
CUBE_X = (0.42, 0.58)
CUBE_Y = (-0.15, 0.15)
INIT_NOISE = 0.02  # rad, Gaussian on the home posture (like robosuite's default initialization noise)
LIFT_SUCCESS = 0.05  # m the cube bottom must rise above the table top


class TabletopEnv(SimEnv):
    """Panda-like arm, parallel gripper, one cube; success when the cube is 5 cm above the table."""

    task_name = "tabletop"
    control_hz = 20.0
    max_episode_steps = 200
    default_cameras = {"agentview": (84, 84), "wrist": (84, 84)}
    render_camera = "agentview"
    robot_name = "sim_tabletop"  # hardware/sim_tabletop.yaml

    def _load_model(self) -> mujoco.MjModel:
        """The compiled scene; variants (a calibration board on the table) override it."""
        return mujoco.MjModel.from_xml_path(str(resources.shipped_file("sim/tabletop.xml")))

    def _build(self) -> None:
        self.model = self._load_model()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.joint_names = tuple(f"panda_joint{i}" for i in range(1, 8))
        jids = [m.joint(n).id for n in self.joint_names]
        self.qpos_adr = np.array([m.jnt_qposadr[j] for j in jids])
        self.dof_adr = np.array([m.jnt_dofadr[j] for j in jids])
        self.joint_lower = m.jnt_range[jids, 0].copy()
        self.joint_upper = m.jnt_range[jids, 1].copy()
        key = m.key("home").id
        self.home_qpos = m.key_qpos[key][self.qpos_adr].copy()
        self.ee_site_id = m.site("tcp").id
        self._arm_act = np.array([m.actuator(n).id for n in self.joint_names])
        self._finger_act = np.array(
            [m.actuator("panda_finger_joint1").id, m.actuator("panda_finger_joint2").id]
        )
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(f"panda_finger_joint{i}").id] for i in (1, 2)])
        self.finger_joint_id = m.joint("panda_finger_joint1").id
        self._cube_qpos = m.jnt_qposadr[m.joint("cube").id]
        self._cube_body = m.body("cube").id
        self.object_body_ids = [self._cube_body]
        self.object_geom_ids = [m.geom("cube").id]
        self.table_geom_ids = [m.geom("table_top").id]
        self.object_dim = 7
        self.object_pos_idx = [0, 1, 2]
        self.object_half_sizes = [m.geom_size[m.geom("cube").id].copy()]
        self.object_bottom = [float(self.object_half_sizes[0][2])]
        self._table_z = float(m.geom_pos[m.geom("table_top").id][2] + m.geom_size[m.geom("table_top").id][2])
        self._n_substeps = int(round(1.0 / (self.control_hz * m.opt.timestep)))
        self._gain_nominal = (
            m.actuator_gainprm[self._arm_act, 0].copy(),
            m.actuator_biasprm[self._arm_act].copy(),
        )

    def set_gain_scale(self, scale: float) -> None:
        kp, bias = self._gain_nominal
        self.model.actuator_gainprm[self._arm_act, 0] = kp * scale
        self.model.actuator_biasprm[self._arm_act, 1] = bias[:, 1] * scale
        # Keep the damping ratio: kv scales with sqrt(kp).
        self.model.actuator_biasprm[self._arm_act, 2] = bias[:, 2] * np.sqrt(scale)

    def _backend_reset(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
        q = np.clip(self.home_qpos + rng.normal(0, INIT_NOISE, 7), self.joint_lower, self.joint_upper)
        d.qpos[self.qpos_adr] = q
        yaw = rng.uniform(-np.pi, np.pi)
        a = self._cube_qpos
        d.qpos[a : a + 3] = [
            rng.uniform(*CUBE_X),
            rng.uniform(*CUBE_Y),
            self._table_z + self.object_half_sizes[0][2],
        ]
        d.qpos[a + 3 : a + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        d.ctrl[self._arm_act] = q
        d.ctrl[self._finger_act] = 0.04
        mujoco.mj_forward(m, d)

    def _backend_step(self, q_target: np.ndarray, grip: float) -> None:
        self.data.ctrl[self._arm_act] = q_target
        # grip -1 (open) -> 4 cm per finger, +1 (closed) -> 0.
        self.data.ctrl[self._finger_act] = 0.02 * (1.0 - grip)
        mujoco.mj_step(self.model, self.data, nstep=self._n_substeps)

    def _object_state(self) -> np.ndarray:
        b = self._cube_body
        return np.concatenate([self.data.xpos[b], self.data.xquat[b]])

    def _gripper_width(self) -> float:
        return float(self.data.qpos[self._finger_qpos].sum())

    def _check_success(self) -> bool:
        bottom = self.data.xpos[self._cube_body][2] - self.object_half_sizes[0][2]
        return bool(bottom > self._table_z + LIFT_SUCCESS)

    def table_height(self) -> float:
        return self._table_z
