"""robosuite 1.5.1 tasks (Lift, Stack) behind the common ``SimEnv`` contract.

The arm runs robosuite's JOINT_POSITION controller in ``absolute`` mode, so the action is the
same as on the ROS interface: absolute joint targets plus a gripper command. Success is
robosuite's own ``_check_success``. robosuite's placement samplers draw from the global numpy
RNG, so a seeded reset seeds it around ``env.reset()`` and restores it afterwards.
Images are rendered with our own shadow-free ``mujoco.Renderer`` instead of robosuite's.
"""

from __future__ import annotations

import logging

import numpy as np

from robot_policy.sim.base import SimEnv
from robot_policy.sim.render import ensure_gl_backend

ARM_GAIN_KP = 150.0

JOINT_CONTROLLER = {
    "type": "JOINT_POSITION",
    # Absolute targets are passed through unscaled; limits are enforced by SimEnv.
    "input_max": 10,
    "input_min": -10,
    "output_max": 10,
    "output_min": -10,
    "kp": ARM_GAIN_KP,
    "damping_ratio": 1,
    "impedance_mode": "fixed",
    "kp_limits": [0, 1000],
    "damping_ratio_limits": [0, 10],
    "qpos_limits": None,
    "interpolation": None,
    "ramp_ratio": 0.2,
    "input_type": "absolute",
    "gripper": {"type": "GRIP"},
}


def _quiet_robosuite() -> None:
    # robosuite logs macro/robosuite_models warnings on every import; they are not actionable here.
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("robosuite"):
            logging.getLogger(name).setLevel(logging.ERROR)


class RobosuiteEnv(SimEnv):
    """Shared plumbing for robosuite single-arm Panda tasks."""

    env_name = ""
    default_cameras = {"agentview": (84, 84), "robot0_eye_in_hand": (84, 84)}
    render_camera = "frontview"
    hidden_geom_groups = (0,)  # collision meshes
    robot_name = "robosuite_panda"
    object_names: tuple[str, ...] = ()
    box_objects = True

    def _build(self) -> None:
        ensure_gl_backend()
        # robosuite warns on import about optional extras (private macros, robosuite_models, mink)
        # that these tasks do not use; silence only the import.
        logging.disable(logging.WARNING)
        try:
            import robosuite as suite
            from robosuite.controllers import load_composite_controller_config
        finally:
            logging.disable(logging.NOTSET)
        _quiet_robosuite()
        cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
        cfg["body_parts"] = {"right": dict(JOINT_CONTROLLER)}
        # Lift draws its cube size from the global numpy RNG at build time: fix it per task.
        state = np.random.get_state()
        np.random.seed(0)
        self.rs = suite.make(
            self.env_name,
            robots="Panda",
            controller_configs=cfg,
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            use_object_obs=True,
            control_freq=int(self.control_hz),
            horizon=10**7,
            ignore_done=True,
            hard_reset=False,  # keep one MjModel so randomization and renderers stay attached
            reward_shaping=False,
        )
        self.rs.reset()
        np.random.set_state(state)
        _quiet_robosuite()
        self.model = self.rs.sim.model._model
        self.data = self.rs.sim.data._data
        robot = self.rs.robots[0]
        self.robot = robot
        self.joint_names = tuple(robot.robot_joints)
        jids = [self.model.joint(n).id for n in self.joint_names]
        self.qpos_adr = np.array([self.model.jnt_qposadr[j] for j in jids])
        self.dof_adr = np.array([self.model.jnt_dofadr[j] for j in jids])
        self.joint_lower = self.model.jnt_range[jids, 0].copy()
        self.joint_upper = self.model.jnt_range[jids, 1].copy()
        self.home_qpos = np.array(robot.init_qpos, dtype=np.float64)
        self.ee_site_id = int(robot.eef_site_id["right"])
        self._gripper_qpos = np.array(robot._ref_gripper_joint_pos_indexes["right"])
        self.finger_joint_id = int(np.flatnonzero(self.model.jnt_qposadr == self._gripper_qpos[0])[0])
        objs = self._task_objects()
        self.object_body_ids = [self.model.body(o.root_body).id for o in objs]
        self.object_geom_ids = [self.model.geom(g).id for o in objs for g in o.contact_geoms + o.visual_geoms]
        self.table_geom_ids = [
            i for i in range(self.model.ngeom) if (self.model.geom(i).name or "").startswith("table")
        ]
        self.object_dim = 7 * len(objs)
        self.object_pos_idx = [7 * k + i for k in range(len(objs)) for i in range(3)]
        self.object_half_sizes = [self._half_size(o) for o in objs]
        # Distance from each object's body origin down to its bottom (placing needs it).
        self.object_bottom = [float(-o.bottom_offset[2]) for o in objs]
        self._gain_scale = 1.0

    def _task_objects(self) -> list:
        return [getattr(self.rs, n) for n in self.object_names]

    @staticmethod
    def _half_size(obj) -> np.ndarray:
        if hasattr(obj, "size"):  # BoxObject
            return np.array(obj.size, dtype=np.float64)
        r = obj.horizontal_radius  # mesh objects: bounding cylinder
        return np.array([r, r, (obj.top_offset[2] - obj.bottom_offset[2]) / 2])

    def set_gain_scale(self, scale: float) -> None:
        self._gain_scale = scale
        ctrl = self.robot.part_controllers["right"]
        ctrl.kp = np.full(ctrl.control_dim, ARM_GAIN_KP * scale)
        ctrl.kd = 2 * np.sqrt(ctrl.kp)

    def _backend_reset(self, seed: int) -> None:
        state = np.random.get_state()
        try:
            np.random.seed(seed % 2**32)
            self.rs.reset()
        finally:
            np.random.set_state(state)
        # robosuite rebuilds its controllers on reset: re-apply the drawn gain.
        self.set_gain_scale(self._gain_scale)
        # The cube sizes of Lift are drawn at model build; read the compiled ones.
        for k, b in enumerate(self.object_body_ids if self.box_objects else ()):
            geoms = [g for g in self.object_geom_ids if self.model.geom_bodyid[g] == b]
            if geoms:
                self.object_half_sizes[k] = self.model.geom_size[geoms[0]].copy()

    def _backend_step(self, q_target: np.ndarray, grip: float) -> None:
        self.rs.step(np.concatenate([q_target, [grip]]))

    def _object_state(self) -> np.ndarray:
        return np.concatenate(
            [np.concatenate([self.data.xpos[b], self.data.xquat[b]]) for b in self.object_body_ids]
        )

    def _gripper_width(self) -> float:
        return float(np.abs(self.data.qpos[self._gripper_qpos]).sum())

    def _check_success(self) -> bool:
        return bool(self.rs._check_success())

    def table_height(self) -> float:
        return float(self.rs.model.mujoco_arena.table_offset[2])


class LiftEnv(RobosuiteEnv):
    """robosuite Lift: pick the cube up above the table (success: cube 4 cm above the table)."""

    task_name = "lift"
    env_name = "Lift"
    max_episode_steps = 200
    object_names = ("cube",)


class StackEnv(RobosuiteEnv):
    """robosuite Stack: put cube A (red, small) on cube B (green) and let go."""

    task_name = "stack"
    env_name = "Stack"
    max_episode_steps = 300
    object_names = ("cubeA", "cubeB")


class PickPlaceCanEnv(RobosuiteEnv):
    """robosuite PickPlaceCan: move the can from the left bin into its quadrant of the right bin."""

    task_name = "pick_place_can"
    env_name = "PickPlaceCan"
    max_episode_steps = 300
    default_cameras = {"agentview": (84, 84), "robot0_eye_in_hand": (84, 84)}
    box_objects = False

    def _task_objects(self) -> list:
        return [self.rs.objects[self.rs.object_id]]

    def target_position(self) -> np.ndarray:
        """Where the can should go: inside its success quadrant, on the side nearest the robot.

        The quadrant's centre (robosuite's ``target_bin_placements``) is at the edge of the Panda's
        reach with a top-down grasp; success only needs the can anywhere in the quadrant.
        """
        lo = np.array([self.rs.bin2_pos[0], self.rs.bin2_pos[1]])
        return np.array([lo[0] + 0.05, lo[1] + 0.06, self.rs.bin2_pos[2]])
