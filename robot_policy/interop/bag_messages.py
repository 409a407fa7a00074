"""rosbag2 message types and conversions shared by the bag import and export (``rosbags``, no ROS):
the recorder's service-event types, stamps and headers, and messages to the recorder's arrays."""

from __future__ import annotations

import math

import numpy as np

from robot_policy import conventions as conv
from robot_policy.interop import require

MARKER_TOPIC = "/recorder/episode"
SERVICE_SUFFIX = "/_service_event"
REQUEST_SENT, REQUEST_RECEIVED = 0, 1
NS = 1_000_000_000

# rosbag2 service-event types (``ros2 bag record --include-services``) for the recorder's
# std_srvs services; registered when the bag does not carry their definitions.
_SERVICE_TYPES = {
    "std_srvs/srv/Trigger_Request": "uint8 structure_needs_at_least_one_member\n",
    "std_srvs/srv/Trigger_Response": "bool success\nstring message\n",
    "std_srvs/srv/Trigger_Event": (
        "service_msgs/ServiceEventInfo info\nstd_srvs/Trigger_Request[<=1] request\n"
        "std_srvs/Trigger_Response[<=1] response\n"
    ),
    "std_srvs/srv/SetBool_Request": "bool data\n",
    "std_srvs/srv/SetBool_Response": "bool success\nstring message\n",
    "std_srvs/srv/SetBool_Event": (
        "service_msgs/ServiceEventInfo info\nstd_srvs/SetBool_Request[<=1] request\n"
        "std_srvs/SetBool_Response[<=1] response\n"
    ),
}


def typestore():
    """A Jazzy typestore with the recorder's service-event types registered."""
    rt = require("rosbags.typesys", "rosbags")
    ts = rt.get_typestore(rt.Stores.ROS2_JAZZY)
    types = {}
    for name, text in _SERVICE_TYPES.items():
        types.update(rt.get_types_from_msg(text, name))

    def srv(x):  # rosbags' msg parser files everything under <pkg>/msg/: service types live in <pkg>/srv/
        if isinstance(x, str):
            return x.replace("std_srvs/srv/msg/", "std_srvs/srv/").replace("std_srvs/msg/", "std_srvs/srv/")
        if isinstance(x, tuple | list):
            return type(x)(srv(v) for v in x)
        return x

    ts.register({srv(k): srv(v) for k, v in types.items()})
    return ts


# ------------------------------------------------------------------------------- messages
def stamp_of(msg) -> float:
    return float(msg.header.stamp.sec) + float(msg.header.stamp.nanosec) * 1e-9


def ros_time(ts, seconds: float):
    sec = math.floor(seconds)
    return ts.types["builtin_interfaces/msg/Time"](
        sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999)
    )


def ros_header(ts, seconds: float, frame_id: str = ""):
    return ts.types["std_msgs/msg/Header"](stamp=ros_time(ts, seconds), frame_id=frame_id)


def image_array(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> uint8 rgb (H, W, 3) or mono (H, W)."""
    enc = msg.encoding
    ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(enc)
    if ch is None:
        raise ValueError(f"image encoding {enc!r} is not supported; use rgb8, bgr8, rgba8, bgra8 or mono8")
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    img = buf[:, : msg.width * ch].reshape(msg.height, msg.width, ch)
    if enc.startswith("bgr"):
        img = img[..., 2::-1] if ch == 4 else img[..., ::-1]
    elif ch == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img if ch > 1 else img[..., 0])


def compressed_array(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, as image_transport writes) -> uint8 rgb/mono."""
    import imagecodecs

    data = bytes(msg.data)
    fmt = msg.format.lower()
    if "png" in fmt:
        img = imagecodecs.png_decode(data)
    elif "jpeg" in fmt or "jpg" in fmt or fmt == "":
        img = (
            imagecodecs.jpeg8_decode(data)
            if hasattr(imagecodecs, "jpeg8_decode")
            else imagecodecs.jpeg_decode(data)
        )
    else:
        raise ValueError(f"compressed image format {msg.format!r} is not supported (jpeg or png)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def joint_obs(msg, joint_names: list[str], gripper: str | None) -> dict[str, np.ndarray]:
    """``/joint_states`` -> joint_pos, joint_vel[, gripper] float32 in config order (the recorder's keys)."""
    names = list(joint_names) + ([gripper] if gripper else [])
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise KeyError(f"joint_states lacks joints {missing} (has {list(msg.name)}); check --hardware")
    order = [index[n] for n in names]
    pos = np.asarray(msg.position, dtype=np.float64)[order]
    vel = np.asarray(msg.velocity, dtype=np.float64)
    vel = vel[order] if len(vel) == len(msg.name) else np.zeros(len(names))
    n = len(joint_names)
    out = {conv.JOINT_POS: pos[:n].astype(np.float32), conv.JOINT_VEL: vel[:n].astype(np.float32)}
    if gripper:
        out[conv.GRIPPER] = pos[n:].astype(np.float32)
    return out


def named_vector(msg) -> dict[str, np.ndarray]:
    """``/sim/observation`` (a JointState named ``key/i``) -> {key: float32 vector}."""
    groups: dict[str, list[tuple[int, float]]] = {}
    for name, v in zip(msg.name, msg.position):
        key, _, i = str(name).rpartition("/")
        groups.setdefault(key, []).append((int(i), float(v)))
    return {k: np.array([v for _, v in sorted(items)], dtype=np.float32) for k, items in groups.items()}
