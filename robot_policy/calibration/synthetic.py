"""Rendered ground truth: a ChArUco board and cameras in MuJoCo, with exactly known intrinsics and poses.

``sim/calibration_board.xml`` holds a board on a mocap body ("board") and a camera on another
mocap body ("gripper", standing in for the arm's flange), plus a fixed camera. The board image
is generated from a :class:`~robot_policy.calibration.board.BoardConfig` and used as the texture,
so what is rendered is what would be printed. Truth:

- intrinsics from the camera's ``fovy`` and the image size (:func:`robot_policy.camera_model.pinhole_from_fovy`);
- camera poses from the model (converted to OpenCV axes), so hand-eye results can be compared
  with the camera's true mount on the gripper (eye-in-hand) or its true pose in the world (eye-to-hand).

Used by the calibration tests and docs to state measured errors, not by the calibration itself.
"""

from __future__ import annotations

import numpy as np

from robot_policy import resources
from robot_policy.calibration.board import BoardConfig, board_image, cv2_module
from robot_policy.camera_model import MJ_TO_CV, Intrinsics, invert_pose, pinhole_from_fovy, pose_matrix

SCENE = "sim/calibration_board.xml"


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_cam`` (OpenCV axes: z forward, y down) of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return pose_matrix(np.stack([x, y, z], axis=1), eye)


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation about ``axis`` by ``degrees``."""
    cv2 = cv2_module()
    a = np.asarray(axis, dtype=np.float64)
    R, _ = cv2.Rodrigues(a / np.linalg.norm(a) * np.radians(degrees))
    return R


def orbit_views(center, n: int, rng: np.random.Generator, tilt_deg=(15.0, 45.0), dist_m=(0.25, 0.45)):
    """``n`` camera poses (``T_world_cam``) around ``center``, looking at it from above: azimuths
    spread around the circle, tilts from the board normal and distances drawn from the ranges, a
    roll of up to 30 degrees. Spread like this, the views constrain focal length, principal point
    and distortion, and the rotations between them span every axis (what hand-eye needs)."""
    center = np.asarray(center, dtype=np.float64)
    out = []
    for i in range(n):
        az = 2 * np.pi * i / n + rng.uniform(-0.3, 0.3)
        tilt = np.radians(rng.uniform(*tilt_deg))
        dist = rng.uniform(*dist_m)
        eye = center + dist * np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])
        target = center + np.r_[rng.uniform(-0.03, 0.03, 2), 0.0]
        T = look_at(eye, target, up=(0.0, 1.0, 0.0))
        T[:3, :3] = T[:3, :3] @ rotation([0.0, 0.0, 1.0], rng.uniform(-30.0, 30.0))
        out.append(T)
    return out


def board_views(
    T_world_cam, board: BoardConfig, n: int, rng: np.random.Generator, dist_m=(0.3, 0.45), tilt_deg=35.0
):
    """``n`` board poses (``T_world_board``) in front of a fixed camera: the board centre near the
    optical axis at a distance drawn from ``dist_m``, facing the camera, tilted up to ``tilt_deg``
    about a random in-plane axis and rolled up to 30 degrees (the arm holding the board moves)."""
    w_m, h_m = board.size_m
    out = []
    for _ in range(n):
        center_cam = np.r_[rng.uniform(-0.04, 0.04, 2), rng.uniform(*dist_m)]
        axis = np.r_[rng.normal(size=2), 0.0]
        R = rotation(axis, rng.uniform(0.3, 1.0) * tilt_deg) @ rotation(
            [0.0, 0.0, 1.0], rng.uniform(-30.0, 30.0)
        )
        # Board frame z points away from the camera (into the board), as the camera's z does.
        T_cam_board = pose_matrix(R, center_cam - R @ np.array([w_m / 2, h_m / 2, 0.0]))
        out.append(np.asarray(T_world_cam) @ T_cam_board)
    return out


class BoardScene:
    """The calibration scene, rendered at one image size."""

    def __init__(self, board: BoardConfig, width: int = 640, height: int = 480, texture_dpi: float = 300.0):
        import mujoco

        from robot_policy.sim.render import CameraRenderer

        cv2 = cv2_module()
        self.board = board
        self.width, self.height = int(width), int(height)
        margin_m = board.square_length / 2
        img = board_image(board, texture_dpi, margin_m=margin_m)
        ok, png = cv2.imencode(".png", img)
        ppm = texture_dpi / 0.0254
        spec = mujoco.MjSpec.from_file(str(resources.shipped_file(SCENE)))
        spec.assets = {"board.png": png.tobytes()}
        geom = spec.geom("board")
        geom.size = [img.shape[1] / ppm / 2, img.shape[0] / ppm / 2, 0.001]
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        self.renderer = CameraRenderer(self.model, self.data)
        self._mujoco = mujoco
        # The board frame (OpenCV ChArUco convention: origin at the first square's outer corner,
        # x along columns, y down the rows, z into the board) in the board geom's frame: the
        # texture's top-left corner is at (-w/2, +h/2) of the plane, its rows run along -y.
        w_m, h_m = board.size_m
        self.T_geom_board = pose_matrix(np.diag([1.0, -1.0, -1.0]), [-w_m / 2, h_m / 2, 0.0])

    # -- ids -------------------------------------------------------------------------------
    def _id(self, kind, name: str) -> int:
        i = self._mujoco.mj_name2id(self.model, kind, name)
        if i < 0:
            raise KeyError(f"calibration scene has no {kind.name} {name!r}")
        return i

    # -- poses -------------------------------------------------------------------------------
    def set_body_pose(self, body: str, T_world_body: np.ndarray) -> None:
        """Move a mocap body ("board" or "gripper") and update the kinematics."""
        mj = self._mujoco
        bid = self._id(mj.mjtObj.mjOBJ_BODY, body)
        mocap = self.model.body_mocapid[bid]
        quat = np.zeros(4)
        mj.mju_mat2Quat(quat, np.ascontiguousarray(T_world_body[:3, :3]).reshape(-1))
        self.data.mocap_pos[mocap] = T_world_body[:3, 3]
        self.data.mocap_quat[mocap] = quat
        mj.mj_forward(self.model, self.data)

    def body_pose(self, body: str) -> np.ndarray:
        bid = self._id(self._mujoco.mjtObj.mjOBJ_BODY, body)
        return pose_matrix(self.data.xmat[bid].reshape(3, 3), self.data.xpos[bid])

    def camera_pose(self, camera: str) -> np.ndarray:
        """``T_world_cam`` with OpenCV axes."""
        cid = self._id(self._mujoco.mjtObj.mjOBJ_CAMERA, camera)
        return pose_matrix(self.data.cam_xmat[cid].reshape(3, 3) @ MJ_TO_CV, self.data.cam_xpos[cid])

    def camera_in_body(self, camera: str) -> np.ndarray:
        """``T_body_cam`` (OpenCV axes) of a camera mounted on a body: the eye-in-hand truth."""
        cid = self._id(self._mujoco.mjtObj.mjOBJ_CAMERA, camera)
        bid = self.model.cam_bodyid[cid]
        T_world_body = pose_matrix(self.data.xmat[bid].reshape(3, 3), self.data.xpos[bid])
        return invert_pose(T_world_body) @ self.camera_pose(camera)

    def board_pose(self) -> np.ndarray:
        """``T_world_board``: the ChArUco board frame in the world."""
        gid = self._id(self._mujoco.mjtObj.mjOBJ_GEOM, "board")
        T_world_geom = pose_matrix(self.data.geom_xmat[gid].reshape(3, 3), self.data.geom_xpos[gid])
        return T_world_geom @ self.T_geom_board

    def board_center(self) -> np.ndarray:
        """Centre of the chessboard area in the world (m)."""
        w_m, h_m = self.board.size_m
        return (self.board_pose() @ np.array([w_m / 2, h_m / 2, 0.0, 1.0]))[:3]

    def gripper_pose_for(self, T_world_cam: np.ndarray, camera: str = "wrist") -> np.ndarray:
        """The gripper pose that puts its camera at ``T_world_cam`` (OpenCV axes)."""
        return T_world_cam @ invert_pose(self.camera_in_body(camera))

    def board_body_pose_for(self, T_world_board: np.ndarray) -> np.ndarray:
        """The "board" body pose that puts the ChArUco board frame at ``T_world_board``."""
        T_body_board = invert_pose(self.body_pose("board")) @ self.board_pose()
        return T_world_board @ invert_pose(T_body_board)

    # -- images --------------------------------------------------------------------------------
    def intrinsics(self, camera: str) -> Intrinsics:
        """True intrinsics of ``camera`` at this scene's image size."""
        cid = self._id(self._mujoco.mjtObj.mjOBJ_CAMERA, camera)
        return pinhole_from_fovy(float(self.model.cam_fovy[cid]), self.width, self.height, f"mujoco:{camera}")

    def render(self, camera: str) -> np.ndarray:
        """uint8 HxWx3 RGB of ``camera`` at the current poses."""
        return self.renderer.render(camera, self.height, self.width)

    def close(self) -> None:
        self.renderer.close()
