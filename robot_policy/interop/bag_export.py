"""rosbag2 export: an episode store's episodes as the messages the recorder records, for
``ros2 bag play`` (and for ``import_bag`` to read back)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_policy import conventions as conv
from robot_policy.interop import require
from robot_policy.interop.bag_messages import MARKER_TOPIC, NS, ros_header, typestore


@dataclass
class BagExportReport:
    path: str
    episodes: int
    frames: int
    messages: int
    seconds: float
    bytes: int

    def summary(self) -> str:
        return (
            f"wrote {self.path}: {self.episodes} episodes, {self.frames} frames, {self.messages} messages, "
            f"{self.bytes / 1e6:.2f} MB in {self.seconds:.1f} s; replay with 'ros2 bag play {self.path}'"
        )


def export_bag(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    hardware: str | os.PathLike,
    storage: str = "mcap",
    episodes: list[int] | None = None,
    t0: float = 1_000_000.0,
    progress: bool = False,
) -> BagExportReport:
    """Write the store's episodes as a rosbag2 bag for ``ros2 bag play`` (see the module doc).

    Frame ``k`` of an episode is stamped ``start + k / fps``; episodes follow each other with a
    one-second pause, starting at ``t0`` s. The command of frame ``k`` is stamped half a period
    after it (the recorder's "first command after the frame"). Other low-dim keys of a simulated
    robot's store go to ``/sim/observation`` as ``key/i``.
    """
    rb = require("rosbags.rosbag2", "rosbags")
    from tqdm import tqdm

    from robot_policy.data import EpisodeStore
    from robot_policy.hardware.config import load_hardware_config

    hw = load_hardware_config(hardware)
    store = EpisodeStore.open(src, "r")
    fps = store.fps or hw.control_hz
    out = Path(dst)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new bag folder")
    plugin = {"mcap": rb.StoragePlugin.MCAP, "sqlite3": rb.StoragePlugin.SQLITE3}[storage]
    keys = store.keys
    for k in (conv.JOINT_POS, "action"):
        if k not in keys:
            raise ValueError(f"{src} has no {k!r} key: /joint_states and /joint_commands need it")
    cams = [c for c in hw.cameras if conv.image_key(c.name) in keys]
    missing = [conv.image_key(c.name) for c in hw.cameras if conv.image_key(c.name) not in keys]
    if missing:
        raise ValueError(
            f"{src} lacks image keys {missing} of hardware {hw.name!r}; pick the matching --hardware"
        )
    state_keys = {conv.JOINT_POS, conv.JOINT_VEL, conv.GRIPPER, "action", "valid", "intervention"}
    extra = (
        [
            k
            for k in keys
            if k not in state_keys and not conv.is_image_key(k) and store.schema[k].dtype.startswith("float")
        ]
        if hw.simulated
        else []
    )
    ts = typestore()
    T = ts.types
    names = list(hw.joint_names) + ([hw.gripper_joint] if hw.gripper_joint else [])
    eps = list(range(store.num_episodes)) if episodes is None else [e % store.num_episodes for e in episodes]
    t_start = time.perf_counter()
    n_msgs = n_frames = 0
    writer = rb.Writer(out, version=8, storage_plugin=plugin)
    writer.open()
    try:
        c_js = writer.add_connection(conv.JOINT_STATES, "sensor_msgs/msg/JointState", typestore=ts)
        c_cmd = writer.add_connection(conv.JOINT_COMMANDS, "sensor_msgs/msg/JointState", typestore=ts)
        c_mark = writer.add_connection(MARKER_TOPIC, "std_msgs/msg/String", typestore=ts)
        c_img = {
            c.name: writer.add_connection(conv.color_topic(c.name), "sensor_msgs/msg/Image", typestore=ts)
            for c in cams
        }
        c_obs = (
            writer.add_connection(conv.SIM_OBSERVATION, "sensor_msgs/msg/JointState", typestore=ts)
            if extra
            else None
        )

        def put(conn, t: float, msg) -> None:
            nonlocal n_msgs
            writer.write(conn, int(round(t * NS)), ts.serialize_cdr(msg, conn.msgtype))
            n_msgs += 1

        def marker(t: float, word: str) -> None:
            put(c_mark, t, T["std_msgs/msg/String"](data=word))

        start = t0
        for ep in tqdm(eps, desc="export-bag", unit="episode", disable=not progress):
            data = store.get_episode(ep)
            meta = store.episode_meta(ep)
            n = len(data["action"])
            marker(start - 0.5 / fps, "start")
            for k in range(n):
                t = start + k / fps
                pos = np.concatenate(
                    [
                        data[conv.JOINT_POS][k].reshape(-1),
                        data.get(conv.GRIPPER, np.zeros((n, 0)))[k].reshape(-1),
                    ]
                )
                vel = data.get(conv.JOINT_VEL, np.zeros((n, len(hw.joint_names))))[k].reshape(-1)
                vel = np.concatenate([vel, np.zeros(len(names) - len(vel))])
                js = T["sensor_msgs/msg/JointState"](
                    header=ros_header(ts, t),
                    name=names,
                    position=pos.astype(np.float64),
                    velocity=vel.astype(np.float64),
                    effort=np.zeros(0, np.float64),
                )
                for c in cams:
                    img = np.ascontiguousarray(data[conv.image_key(c.name)][k])
                    mono = img.ndim == 2
                    put(
                        c_img[c.name],
                        t,
                        T["sensor_msgs/msg/Image"](
                            header=ros_header(ts, t, f"{c.name}_color_optical_frame"),
                            height=img.shape[0],
                            width=img.shape[1],
                            encoding="mono8" if mono else "rgb8",
                            is_bigendian=0,
                            step=img.shape[1] * (1 if mono else 3),
                            data=img.reshape(-1),
                        ),
                    )
                if c_obs is not None:
                    flat = [
                        (f"{key}/{i}", float(v))
                        for key in extra
                        for i, v in enumerate(np.asarray(data[key][k]).reshape(-1))
                    ]
                    put(
                        c_obs,
                        t,
                        T["sensor_msgs/msg/JointState"](
                            header=ros_header(ts, t),
                            name=[a for a, _ in flat],
                            position=np.array([b for _, b in flat]),
                            velocity=np.zeros(0),
                            effort=np.zeros(0),
                        ),
                    )
                put(c_js, t, js)
                cmd = np.asarray(data["action"][k], dtype=np.float64).reshape(-1)
                put(
                    c_cmd,
                    t + 0.5 / fps,
                    T["sensor_msgs/msg/JointState"](
                        header=ros_header(ts, t + 0.5 / fps),
                        name=list(hw.command_names)[: len(cmd)] or names,
                        position=cmd,
                        velocity=np.zeros(0),
                        effort=np.zeros(0),
                    ),
                )
            t_end = start + (n - 1) / fps
            if isinstance(meta.get("success"), bool):
                marker(t_end + 0.25 / fps, "success" if meta["success"] else "failure")
            marker(t_end + 0.75 / fps, "stop")
            n_frames += n
            start = t_end + 1.0 + 1.0 / fps
    except BaseException:
        writer.close()
        shutil.rmtree(out, ignore_errors=True)
        raise
    writer.close()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return BagExportReport(str(out), len(eps), n_frames, n_msgs, time.perf_counter() - t_start, size)
