"""Message conversion between core types (``robot_policy.types``) and standard ROS 2 messages.

Image payloads are filled from ``bytes``: assigning an ndarray to ``Image.data`` goes through a
per-element Python path and is ~100x slower for a 640x480 frame.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CameraInfo, Image
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_policy import conventions as conv
from robot_policy.camera_model import Intrinsics
from robot_policy.types import ActionChunk, Frame, JointState

_ENCODINGS = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "mono8": (np.uint8, 1), "16UC1": (np.uint16, 1)}


def to_time(seconds: float) -> Time:
    """Float seconds -> builtin_interfaces/Time."""
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def from_time(t) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(t.sec) + float(t.nanosec) * 1e-9


def to_duration(seconds: float) -> Duration:
    sec = int(np.floor(seconds))
    return Duration(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def from_duration(d) -> float:
    return float(d.sec) + float(d.nanosec) * 1e-9


def frame_to_image(frame: Frame, frame_id: str | None = None) -> Image:
    """Frame (uint8 HxWx3 rgb or uint16 HxW depth) -> sensor_msgs/Image, data from bytes."""
    img = np.ascontiguousarray(frame.image)
    msg = Image()
    msg.header.stamp = to_time(frame.stamp)
    msg.header.frame_id = frame_id or f"{frame.camera}_color_optical_frame"
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    if img.dtype == np.uint16:
        msg.encoding = "16UC1"
    elif img.ndim == 2:
        msg.encoding = "mono8"
    else:
        msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(img.strides[0])
    msg.data = img.tobytes()
    return msg


def image_to_frame(msg: Image, camera: str = "camera") -> Frame:
    """sensor_msgs/Image -> Frame (rgb8 returned as-is, bgr8 converted to rgb)."""
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding '{msg.encoding}'; expected one of {sorted(_ENCODINGS)}")
    dtype, ch = _ENCODINGS[msg.encoding]
    buf = np.frombuffer(bytes(msg.data), dtype=dtype)
    row = msg.step // np.dtype(dtype).itemsize
    img = buf.reshape(msg.height, row)[:, : msg.width * ch]
    img = img.reshape(msg.height, msg.width, ch) if ch > 1 else img.reshape(msg.height, msg.width)
    if msg.encoding == "bgr8":
        img = img[..., ::-1]
    return Frame(image=np.ascontiguousarray(img), stamp=from_time(msg.header.stamp), camera=camera)


def camera_info(
    width: int, height: int, stamp: float, fovy_deg: float = 45.0, frame_id: str = ""
) -> CameraInfo:
    """Pinhole CameraInfo for a camera with vertical field of view ``fovy_deg`` (MuJoCo's convention)."""
    f = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    msg = CameraInfo()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def intrinsics_to_camera_info(intr: Intrinsics, stamp: float, frame_id: str = "") -> CameraInfo:
    """``camera_model.Intrinsics`` (a calibration file's or the device's) -> CameraInfo.

    OpenCV's 5 coefficients are ``plumb_bob``; 8 (``--rational``) are ``rational_polynomial``;
    a device model (RealSense ``inverse_brown_conrady``) keeps its name and coefficients. No
    rectification: R is the identity and P is K with a zero fourth column, as realsense2_camera
    publishes for its colour stream.
    """
    d = [float(x) for x in np.asarray(intr.dist, dtype=np.float64).reshape(-1)]
    model = intr.model
    if model == "plumb_bob" and len(d) > 5:
        model, d = "rational_polynomial", (d + [0.0] * 8)[:8]
    elif model == "plumb_bob":
        d = (d + [0.0] * 5)[:5]
    K = np.asarray(intr.K, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    msg.header.stamp = to_time(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = model
    msg.d = d
    msg.k = K.reshape(-1).tolist()
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist()
    return msg


def joint_state_to_msg(js: JointState) -> JointStateMsg:
    """Core JointState -> sensor_msgs/JointState (velocity left empty when ``js.velocity`` is None)."""
    msg = JointStateMsg()
    msg.header.stamp = to_time(js.stamp)
    msg.name = list(js.names)
    msg.position = np.asarray(js.position, dtype=np.float64).tolist()
    if js.velocity is not None:
        msg.velocity = np.asarray(js.velocity, dtype=np.float64).tolist()
    return msg


def msg_to_joint_state(msg: JointStateMsg, names: list[str] | None = None) -> JointState:
    """JointState message -> core JointState, reordered to ``names`` (KeyError naming a missing joint)."""
    pos = np.asarray(msg.position, dtype=np.float64)
    vel = np.asarray(msg.velocity, dtype=np.float64) if len(msg.velocity) == len(msg.name) else None
    if names is not None:
        index = {n: i for i, n in enumerate(msg.name)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"joint_states lacks joints {missing} (has {list(msg.name)})")
        order = [index[n] for n in names]
        pos = pos[order]
        vel = vel[order] if vel is not None else None
    return JointState(
        position=pos, velocity=vel, stamp=from_time(msg.header.stamp), names=tuple(names or msg.name)
    )


def chunk_to_trajectory(
    chunk: ActionChunk, joint_names: list[str], now: float, origin: float | None = None
) -> JointTrajectory:
    """ActionChunk -> JointTrajectory: one point per action at ``header.stamp + time_from_start``.

    ``header.stamp`` is ``origin`` (default ``now``), never zero, so the receiver executes every
    point at the time the sender meant even when the message arrives late. The policy node uses
    the capture time of the observation the chunk answers as origin: the robot can then measure
    observation-to-command latency as ``arrival - header.stamp``.
    """
    origin = now if origin is None else origin
    msg = JointTrajectory()
    msg.header.stamp = to_time(origin)
    msg.joint_names = list(joint_names)
    times = chunk.times() - origin
    for a, t in zip(np.asarray(chunk.actions, dtype=np.float64), times):
        pt = JointTrajectoryPoint()
        pt.positions = a.tolist()
        pt.time_from_start = to_duration(max(0.0, float(t)))
        msg.points.append(pt)
    return msg


def trajectory_to_arrays(
    msg: JointTrajectory, joint_names: list[str]
) -> tuple[float, np.ndarray, np.ndarray]:
    """JointTrajectory -> (start stamp seconds, times (T,), positions (T, len(joint_names))).

    Points are reordered to ``joint_names``; a trajectory naming other joints raises ValueError.
    A zero header stamp means "start now" (returned as 0.0), as joint_trajectory_controller does.
    """
    if sorted(msg.joint_names) != sorted(joint_names):
        raise ValueError(
            f"trajectory joints {list(msg.joint_names)} do not match the robot's {list(joint_names)}"
        )
    order = [list(msg.joint_names).index(n) for n in joint_names]
    times = np.array([from_duration(p.time_from_start) for p in msg.points], dtype=np.float64)
    pos = np.full((len(msg.points), len(joint_names)), np.nan)
    for i, p in enumerate(msg.points):
        if len(p.positions) == len(joint_names):
            pos[i] = np.asarray(p.positions, dtype=np.float64)[order]
        else:
            raise ValueError(
                f"trajectory point {i} has {len(p.positions)} positions, expected {len(joint_names)}"
            )
    return from_time(msg.header.stamp), times, pos


def forward_msg(target, source: str = "") -> Float64MultiArray:
    """A forward position command (``/forward_position_controller/commands``). ``source``: the
    sender's tag, as the label of the array's one layout dimension (a valid 1-D layout that
    ros2_control's forward controller ignores); ``robot_node`` echoes it on ``/joint_commands``."""
    data = np.asarray(target, dtype=np.float64).reshape(-1)
    msg = Float64MultiArray(data=data.tolist())
    if source:
        msg.layout.dim = [MultiArrayDimension(label=source, size=len(data), stride=len(data))]
    return msg


def forward_source(msg: Float64MultiArray) -> str:
    """The sender's tag of a forward command (:func:`forward_msg`); "" when it has none."""
    return msg.layout.dim[0].label if len(msg.layout.dim) == 1 else ""


def joint_state_to_obs(
    msg: JointStateMsg, joint_names: list[str], gripper_joint: str | None
) -> dict[str, np.ndarray]:
    """``/joint_states`` -> ``{"joint_pos", "joint_vel"[, "gripper"]}`` float32, in config order
    (the observation keys of the sim tasks and of recorded datasets)."""
    names = list(joint_names) + ([gripper_joint] if gripper_joint else [])
    js = msg_to_joint_state(msg, names)
    n = len(joint_names)
    vel = js.velocity if js.velocity is not None else np.zeros(len(names))
    out = {conv.JOINT_POS: js.position[:n].astype(np.float32), conv.JOINT_VEL: vel[:n].astype(np.float32)}
    if gripper_joint:
        out[conv.GRIPPER] = js.position[n:].astype(np.float32)
    return out


def named_vector_to_obs(msg: JointStateMsg) -> dict[str, np.ndarray]:
    """``/sim/observation`` (a JointState whose names are ``key/i``) -> ``{key: float32 array}``."""
    groups: dict[str, list[tuple[int, float]]] = {}
    for name, v in zip(msg.name, msg.position):
        key, _, i = name.rpartition("/")
        groups.setdefault(key, []).append((int(i), float(v)))
    return {k: np.array([v for _, v in sorted(items)], dtype=np.float32) for k, items in groups.items()}


def obs_to_named_vector(obs: dict[str, np.ndarray], stamp: float, skip=()) -> JointStateMsg:
    """Inverse of :func:`named_vector_to_obs` for the low-dim keys not in ``skip``."""
    msg = JointStateMsg()
    msg.header.stamp = to_time(stamp)
    names, values = [], []
    for key, val in obs.items():
        if key in skip or conv.is_image_key(key):
            continue
        flat = np.asarray(val, dtype=np.float64).reshape(-1)
        names += [f"{key}/{i}" for i in range(len(flat))]
        values += flat.tolist()
    msg.name, msg.position = names, values
    return msg
