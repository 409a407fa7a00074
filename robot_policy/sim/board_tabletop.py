"""The tabletop task with a ChArUco calibration board: hand-eye calibration in simulation.

Two sim tasks, driven like any other through the ``sim`` arm backend, so a guided capture
(``robot-policy calibrate capture``) runs against them exactly as against a real arm:

- ``tabletop_board``: the board lies on the table beside the cube's area; the ``wrist`` camera
  (on the hand) sees it: eye-in-hand calibration (``hardware/sim_calibration.yaml``).
- ``tabletop_held_board``: the board is fixed to the hand like a paddle held in the gripper, in
  front of the fingers; the static ``agentview`` camera sees it: eye-to-hand calibration
  (``hardware/sim_calibration_held.yaml``).

At reset the arm stands where the camera sees the board (as a user jogs it before a capture).
The board (:data:`BOARD`, the definition of ``calibration/boards/charuco_7x5_40mm.yaml``) is
textured at load time with OpenCV's own ChArUco generator, laid out as
``robot_policy.calibration.board.board_image`` prints it (a test checks they agree). The cube
and the scripted lift expert are unchanged: the board is visual only. Ground truth for the
calibration tests: :meth:`BoardTabletopEnv.true_mount` and :meth:`BoardTabletopEnv.board_pose`,
from the model.
"""

from __future__ import annotations

import numpy as np

from robot_policy import resources
from robot_policy.camera_model import MJ_TO_CV, invert_pose, pose_matrix
from robot_policy.sim.tabletop import TabletopEnv

BOARD = {
    "squares": [7, 5],
    "square_length": 0.04,
    "marker_length": 0.03,
    "dictionary": "DICT_5X5_100",
}
"""The rendered board (a board YAML's fields: 7 x 5 squares of 40 mm, 30 mm markers)."""

TEXTURE_DPI = 300.0
"""Resolution of the board texture (dots per inch)."""

TABLE_BOARD_CENTER = (0.42, -0.30)
"""Where the board lies on the table (x, y of its centre, m): beside the cube's area."""

BOARD_HALF_THICKNESS = 0.001
"""Half the thickness of the board's box (m): the printed face is this far above its centre."""

HELD_BOARD_CENTER = (0.14, 0.0, 0.06)
"""Centre of the held board in the hand frame (m): in front of the fingers, clear of the hand."""
HELD_BOARD_TILT_DEG = 36.0
"""The held board's face is turned this far from the hand's x axis towards the wrist (degrees),
so it faces agentview (looking down 36 degrees) when the tool points straight down."""


def board_size_m() -> tuple[float, float]:
    """Width and height of the chessboard area (m)."""
    return BOARD["squares"][0] * BOARD["square_length"], BOARD["squares"][1] * BOARD["square_length"]


def board_texture(dpi: float = TEXTURE_DPI) -> np.ndarray:
    """The board as printed: greyscale, ``dpi`` dots per inch, a white margin of half a square."""
    import cv2

    ppm = dpi / 0.0254
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, BOARD["dictionary"]))
    board = cv2.aruco.CharucoBoard(
        tuple(BOARD["squares"]), BOARD["square_length"], BOARD["marker_length"], dictionary
    )
    board.setLegacyPattern(False)
    margin = int(round(BOARD["square_length"] / 2 * ppm))
    w_m, h_m = board_size_m()
    size = (int(round(w_m * ppm)) + 2 * margin, int(round(h_m * ppm)) + 2 * margin)
    return board.generateImage(size, marginSize=margin, borderBits=1)


def _add_board(spec, body, pos, quat) -> None:
    """A thin textured box showing :data:`BOARD` on its +z face (visual only) on ``body``."""
    import cv2
    import mujoco

    img = board_texture()
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("could not encode the board texture")
    spec.assets = {**dict(spec.assets or {}), "board.png": png.tobytes()}
    spec.add_texture(name="board", type=mujoco.mjtTexture.mjTEXTURE_2D, file="board.png")
    mat = spec.add_material(name="board", specular=0.0, shininess=0.0)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "board"
    ppm = TEXTURE_DPI / 0.0254
    body.add_geom(
        name="calibration_board",
        type=mujoco.mjtGeom.mjGEOM_BOX,  # planes are only allowed on static bodies
        size=[img.shape[1] / ppm / 2, img.shape[0] / ppm / 2, BOARD_HALF_THICKNESS],
        pos=list(pos),
        quat=list(quat),
        material="board",
        contype=0,
        conaffinity=0,
        group=1,
    )


class BoardTabletopEnv(TabletopEnv):
    """The tabletop task with a ChArUco board on the table (eye-in-hand: the ``wrist`` camera)."""

    task_name = "tabletop_board"
    robot_name = "sim_calibration"
    calibration_camera = "wrist"
    """The camera this scene calibrates."""
    mount = "eye_in_hand"
    """Which hand-eye problem the scene poses."""

    def _load_model(self):
        import mujoco

        spec = mujoco.MjSpec.from_file(str(resources.shipped_file("sim/tabletop.xml")))
        self._place_board(spec)
        return spec.compile()

    def _place_board(self, spec) -> None:
        x, y = TABLE_BOARD_CENTER
        # Printed face (+z of the box) up, resting on the table top (z = 0).
        _add_board(spec, spec.worldbody, (x, y, BOARD_HALF_THICKNESS), (1.0, 0.0, 0.0, 0.0))

    START_DISTANCE = 0.30
    """At reset the arm stands where the camera sees the board from this far (m), as a user
    would jog it before a capture."""

    def _backend_reset(self, seed: int) -> None:
        import mujoco

        super()._backend_reset(seed)
        if getattr(self, "_start_q", None) is None:
            self._start_q = self._start_posture()
        self.data.qpos[self.qpos_adr] = self._start_q
        self.data.ctrl[self._arm_act] = self._start_q
        mujoco.mj_forward(self.model, self.data)

    def _start_posture(self) -> np.ndarray:
        """Joints putting the wrist camera straight above the board's centre, tool pointing down."""
        w_m, h_m = board_size_m()
        center = (self.board_pose() @ np.array([w_m / 2, h_m / 2, 0.0, 1.0]))[:3]
        T_tcp = self._frame("site", "tcp")
        T_cam = T_tcp @ self.true_mount()
        T_target_cam = T_cam.copy()
        T_target_cam[:3, 3] = center + np.array([0.0, 0.0, self.START_DISTANCE])
        return self._solve_tcp(T_target_cam @ invert_pose(self.true_mount()))

    def _solve_tcp(self, T_tcp: np.ndarray) -> np.ndarray:
        q = self.ik.solve(self.home_qpos, T_tcp[:3, 3], T_tcp[:3, :3], iters=200, max_step=0.1)
        pos, mat = self.ik.fk(q)
        if np.linalg.norm(pos - T_tcp[:3, 3]) > 0.01:  # a start posture needs no precision
            raise RuntimeError(f"{self.task_name}: start posture out of reach ({pos} vs {T_tcp[:3, 3]})")
        return q

    # -- ground truth --------------------------------------------------------------------------
    def _frame(self, kind, name: str) -> np.ndarray:
        import mujoco

        m, d = self.model, self.data
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_camlight(m, d)  # camera poses are not part of mj_kinematics
        if kind == "site":
            i = m.site(name).id
            return pose_matrix(d.site_xmat[i].reshape(3, 3), d.site_xpos[i])
        if kind == "camera":
            i = m.camera(name).id
            return pose_matrix(d.cam_xmat[i].reshape(3, 3) @ MJ_TO_CV, d.cam_xpos[i])
        i = m.geom(name).id
        return pose_matrix(d.geom_xmat[i].reshape(3, 3), d.geom_xpos[i])

    def board_pose(self) -> np.ndarray:
        """``T_world_board`` of the ChArUco board frame (origin at the first square's outer
        corner, x along columns, y down the rows, z into the board)."""
        w_m, h_m = board_size_m()
        # The texture's top-left corner is at (-w/2, +h/2) of the printed face, rows along -y.
        T_geom_board = pose_matrix(np.diag([1.0, -1.0, -1.0]), [-w_m / 2, h_m / 2, BOARD_HALF_THICKNESS])
        return self._frame("geom", "calibration_board") @ T_geom_board

    def true_mount(self, ee_site: str = "tcp") -> np.ndarray:
        """What hand-eye calibration must find: ``T_gripper_cam`` (eye-in-hand; the gripper frame
        is the ``ee_site``) or ``T_base_cam`` (eye-to-hand; the base is the world: the arm's base
        link sits at the origin), OpenCV camera axes."""
        T_cam = self._frame("camera", self.calibration_camera)
        if self.mount == "eye_to_hand":
            return T_cam
        return invert_pose(self._frame("site", ee_site)) @ T_cam


class HeldBoardTabletopEnv(BoardTabletopEnv):
    """The tabletop task with a ChArUco board held by the hand (eye-to-hand: ``agentview``)."""

    task_name = "tabletop_held_board"
    robot_name = "sim_calibration_held"
    calibration_camera = "agentview"
    mount = "eye_to_hand"

    def _place_board(self, spec) -> None:
        import mujoco

        # In the hand frame (tool axis +z): the printed face's normal (+z of the geom) is the hand's
        # +x tilted back by HELD_BOARD_TILT_DEG about its y axis, so with the tool pointing down
        # (the home wrist, joints mid-range) the board faces agentview; geom x = hand y.
        a = np.radians(HELD_BOARD_TILT_DEG)
        z = np.array([np.cos(a), 0.0, -np.sin(a)])
        x = np.array([0.0, 1.0, 0.0])
        R = np.stack([x, np.cross(z, x), z], axis=1)  # columns: geom axes in the hand frame
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, R.reshape(-1))
        _add_board(spec, spec.body("hand"), HELD_BOARD_CENTER, quat)

    START_DISTANCE = 0.50

    def _start_posture(self) -> np.ndarray:
        """Joints holding the board facing ``agentview`` on its optical axis, board x level."""
        w_m, h_m = board_size_m()
        T_cam = self._frame("camera", self.calibration_camera)
        z = T_cam[:3, 2]  # optical axis; the board's z (into the board) points the same way
        x = np.cross([0.0, 0.0, 1.0], z)
        x /= np.linalg.norm(x)
        T_target_board = pose_matrix(np.stack([x, np.cross(z, x), z], axis=1), T_cam[:3, 3])
        T_target_board[:3, 3] += self.START_DISTANCE * z - T_target_board[:3, :3] @ [w_m / 2, h_m / 2, 0.0]
        T_tcp_board = invert_pose(self._frame("site", "tcp")) @ self.board_pose()
        return self._solve_tcp(T_target_board @ invert_pose(T_tcp_board))
