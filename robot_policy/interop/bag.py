"""rosbag2 recordings to episode stores and back, with ``rosbags`` (no ROS install).

**Import** (:func:`import_bag`). The topics of a hardware YAML are read from an MCAP or sqlite3
bag: ``/joint_states`` (the master clock), each camera's ``/<camera>/color/image_raw``
(``sensor_msgs/Image``) or ``.../image_raw/compressed`` (``sensor_msgs/CompressedImage``),
``/joint_commands`` (``sensor_msgs/JointState``, the executed command; a
``/forward_position_controller/commands`` ``Float64MultiArray`` stands in when it is absent),
and, when present, ``/sim/observation`` and ``/teleop/intervention``. Each episode's messages
are fed, in the order the bag logged them, to the recorder's own
:class:`~robot_policy.runtime.recorder.EpisodeRecorder`, which aligns them by capture stamp with
its :class:`~robot_policy.runtime.align.StreamAligner`, counts missing frames per stream, writes
the ``valid`` mask and the ``gaps`` metadata, and refuses an episode exactly as a live
recording would. Nothing of the alignment is re-implemented here.

Episodes are found by (``split``):

- ``services``: recorder service calls recorded with ``ros2 bag record --include-services``
  (``/recorder/start/_service_event`` ... ``std_srvs/srv/Trigger_Event``): start, stop,
  discard, and ``/recorder/mark_success`` (``SetBool``) for the success flag;
- ``marker``: a ``std_msgs/String`` topic (default ``/recorder/episode``) carrying ``start``,
  ``stop``, ``discard``, ``success`` or ``failure`` (``export_bag`` writes these);
- ``gap``: the master stream falls silent for longer than ``gap_s``;
- ``none``: the whole bag is one episode; ``auto`` picks the first of these the bag supports.

**Export** (:func:`export_bag`): a store's episodes as those same messages, with frame times
``t0 + k / fps``, so ``ros2 bag play`` replays them into a graph and ``import_bag`` reads them back.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_policy import conventions as conv
from robot_policy.interop import require

MARKER_TOPIC = "/recorder/episode"
SERVICE_SUFFIX = "/_service_event"
REQUEST_SENT, REQUEST_RECEIVED = 0, 1
_NS = 1_000_000_000

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


def _time(ts, seconds: float):
    sec = math.floor(seconds)
    return ts.types["builtin_interfaces/msg/Time"](
        sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999)
    )


def _header(ts, seconds: float, frame_id: str = ""):
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, seconds), frame_id=frame_id)


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


# ------------------------------------------------------------------------------- reading
@dataclass
class Episode:
    start: float
    stop: float
    meta: dict = field(default_factory=dict)


@dataclass
class BagImportReport:
    path: str
    committed: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    split: str = ""
    seconds: float = 0.0
    topics: dict[str, str] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return sum(e["frames"] for e in self.committed)

    def summary(self) -> str:
        lines = [
            f"{self.path}: {len(self.committed)} episode(s) committed, {len(self.refused)} refused "
            f"({self.frames} frames, split by {self.split}, {self.seconds:.1f} s, "
            f"{self.frames / self.seconds if self.seconds else 0:.0f} frames/s)"
        ]
        lines += [f"  stream {name}: {topic}" for name, topic in self.topics.items()]
        for e in self.committed:
            gaps = (
                f", gaps {[(g['stream'], g['frame'], g['frames']) for g in e['gaps']]}" if e["gaps"] else ""
            )
            lines.append(f"  episode {e['index']}: {e['frames']} frames, missing {e['missing']}{gaps}")
        lines += [f"  refused [{e['start']:.3f}, {e['stop']:.3f}] s: {e['error']}" for e in self.refused]
        return "\n".join(lines)


class BagSource:
    """A rosbag2 bag (folder or single .mcap/.db3 file) read with rosbags' rosbag2 reader and
    :func:`typestore` (its high-level reader re-files service types under ``msg/`` and then
    cannot decode ``/recorder/*/_service_event``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        rb = require("rosbags.rosbag2", "rosbags")
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"no bag at {p}")
        self.path = p
        self.ts = typestore()
        self.reader = rb.Reader(p)
        self.reader.open()
        self.topics = {c.topic: c.msgtype for c in self.reader.connections}

    def close(self) -> None:
        self.reader.close()

    def connections(self, topics) -> list:
        return [c for c in self.reader.connections if c.topic in set(topics)]

    def messages(
        self, topics, start: float | None = None, stop: float | None = None
    ) -> Iterator[tuple[str, float, object]]:
        """``(topic, log time s, message)`` in log order, within ``[start, stop]`` log time."""
        conns = self.connections(topics)
        if not conns:
            return
        kw = {}
        if start is not None:
            kw["start"] = max(0, int(start * _NS))
        if stop is not None:
            kw["stop"] = int(stop * _NS) + 1
        for conn, t, raw in self.reader.messages(connections=conns, **kw):
            if conn.msgtype not in self.ts.types:
                raise ValueError(
                    f"{self.path}: topic {conn.topic} has type {conn.msgtype}, which this reader does not know"
                )
            yield conn.topic, t / _NS, self.ts.deserialize_cdr(raw, conn.msgtype)


def _service_calls(bag: BagSource) -> list[tuple[float, str, object]]:
    """Recorder service calls ``(stamp, service, request)``, one per call, in time order."""
    services = {
        conv.RECORDER_START: "start",
        conv.RECORDER_STOP: "stop",
        conv.RECORDER_DISCARD: "discard",
        conv.RECORDER_MARK_SUCCESS: "success",
    }
    topics = [s + SERVICE_SUFFIX for s in services if s + SERVICE_SUFFIX in bag.topics]
    events: dict[tuple[str, int], list[tuple[int, float, object]]] = {}
    for topic, _, msg in bag.messages(topics):
        if msg.info.event_type not in (REQUEST_SENT, REQUEST_RECEIVED):
            continue
        key = (topic, int(msg.info.sequence_number), bytes(msg.info.client_gid).hex())
        t = float(msg.info.stamp.sec) + float(msg.info.stamp.nanosec) * 1e-9
        req = msg.request[0] if len(msg.request) else None
        events.setdefault(key, []).append((msg.info.event_type, t, req))
    calls = []
    for (topic, *_), evs in events.items():
        ev = max(evs, key=lambda e: e[0])  # the service's own receipt when both sides were recorded
        calls.append((ev[1], services[topic.removesuffix(SERVICE_SUFFIX)], ev[2]))
    return sorted(calls, key=lambda c: c[0])


def _marker_calls(bag: BagSource, topic: str) -> list[tuple[float, str, object]]:
    out = []
    for _, t, msg in bag.messages([topic]):
        word = str(msg.data).strip().lower()
        if word in ("start", "stop", "discard"):
            out.append((t, word, None))
        elif word in ("success", "failure"):
            out.append((t, "success", word == "success"))
        else:
            raise ValueError(
                f"{topic}: marker {msg.data!r} at {t:.3f} s; expected start, stop, discard, success or failure"
            )
    return out


def episodes_from_calls(calls: list[tuple[float, str, object]]) -> list[Episode]:
    """Start/stop/discard/success calls -> episodes, the recorder node's state machine."""
    out: list[Episode] = []
    cur: Episode | None = None
    success = None
    for t, what, arg in calls:
        if what == "start" and cur is None:
            cur, success = Episode(start=t, stop=math.inf), None
        elif what == "stop" and cur is not None:
            cur.stop = t
            if success is not None:
                cur.meta["success"] = success
            out.append(cur)
            cur = None
        elif what == "discard":
            cur = None
        elif what == "success":
            success = bool(getattr(arg, "data", arg))
    return out


def episodes_from_gaps(bag: BagSource, master: str, gap_s: float, lead_s: float = 0.0) -> list[Episode]:
    """Runs of the master stream without a silence longer than ``gap_s``; each starts ``lead_s``
    before its first sample (a camera frame captured just before it belongs to the episode)."""
    stamps = sorted(stamp_of(m) for _, _, m in bag.messages([master]))
    if not stamps:
        return []
    lead = min(lead_s, 0.5 * gap_s)
    out, start, prev = [], stamps[0], stamps[0]
    for s in stamps[1:]:
        if s - prev > gap_s:
            out.append(Episode(start - lead, prev))
            start = s
        prev = s
    out.append(Episode(start - lead, prev))
    return out


# ------------------------------------------------------------------------------- streams
def hardware_topics(hw, bag_topics: dict[str, str]) -> dict[str, dict]:
    """Stream name -> {topic, kind} for a hardware config, picking what the bag has (the
    recorder node's streams: joint states, cameras raw or compressed, commands, task state,
    intervention flag)."""
    out: dict[str, dict] = {}
    if conv.JOINT_STATES not in bag_topics:
        raise ValueError(
            f"the bag has no {conv.JOINT_STATES} (the master clock); topics: {sorted(bag_topics)}"
        )
    out[conv.JOINT_STATES] = {"topic": conv.JOINT_STATES, "kind": "joint_states"}
    for cam in hw.cameras:
        raw = conv.color_topic(cam.name)
        if raw in bag_topics:
            out[raw] = {"topic": raw, "kind": "image", "camera": cam.name, "rate": cam.fps}
        elif raw + "/compressed" in bag_topics:
            out[raw] = {
                "topic": raw + "/compressed",
                "kind": "compressed",
                "camera": cam.name,
                "rate": cam.fps,
            }
        else:
            raise ValueError(
                f"camera {cam.name!r} of hardware {hw.name!r}: the bag has neither {raw} nor {raw}/compressed"
            )
    if conv.JOINT_COMMANDS in bag_topics:
        out[conv.JOINT_COMMANDS] = {"topic": conv.JOINT_COMMANDS, "kind": "commands"}
    elif conv.FORWARD_COMMANDS in bag_topics:
        out[conv.JOINT_COMMANDS] = {"topic": conv.FORWARD_COMMANDS, "kind": "forward"}
    else:
        raise ValueError(
            f"the bag has no commands: neither {conv.JOINT_COMMANDS} (JointState) nor {conv.FORWARD_COMMANDS}"
        )
    if conv.SIM_OBSERVATION in bag_topics:
        out[conv.SIM_OBSERVATION] = {"topic": conv.SIM_OBSERVATION, "kind": "named"}
    if conv.TELEOP_INTERVENTION in bag_topics:
        out[conv.TELEOP_INTERVENTION] = {"topic": conv.TELEOP_INTERVENTION, "kind": "flag"}
    return out


def _streams(hw, plan: dict[str, dict]):
    from robot_policy.runtime.align import Stream

    hz = hw.control_hz
    streams = [Stream(conv.JOINT_STATES, conv.joint_state_keys(gripper=bool(hw.gripper_joint)), rate=hz)]
    for name, p in plan.items():
        if p["kind"] in ("image", "compressed"):
            streams.append(Stream(name, [conv.image_key(p["camera"])], rate=min(p["rate"], hz)))
    if conv.SIM_OBSERVATION in plan:
        streams.append(Stream(conv.SIM_OBSERVATION, [], rate=hz, required=False))
    streams.append(Stream(conv.JOINT_COMMANDS, ["action"], rate=hz, mode="next"))
    if conv.TELEOP_INTERVENTION in plan:
        no = {"intervention": np.zeros(1, dtype=np.bool_)}
        streams.append(Stream(conv.TELEOP_INTERVENTION, ["intervention"], rate=hz, required=False, fill=no))
    return streams


def _sample(p: dict, hw, t_log: float, msg) -> tuple[float, dict[str, np.ndarray]]:
    kind = p["kind"]
    if kind == "joint_states":
        return stamp_of(msg), joint_obs(msg, hw.joint_names, hw.gripper_joint)
    if kind == "image":
        return stamp_of(msg), {conv.image_key(p["camera"]): image_array(msg)}
    if kind == "compressed":
        return stamp_of(msg), {conv.image_key(p["camera"]): compressed_array(msg)}
    if kind == "commands":
        return stamp_of(msg), {"action": np.asarray(msg.position, dtype=np.float32)}
    if kind == "forward":  # Float64MultiArray has no header: stamped when the bag logged it
        return t_log, {"action": np.asarray(msg.data, dtype=np.float32)}
    if kind == "named":
        return stamp_of(msg), named_vector(msg)
    if kind == "flag":
        return t_log, {"intervention": np.array([bool(msg.data)], dtype=np.bool_)}
    raise AssertionError(kind)


def import_bag(
    bag_path: str | os.PathLike,
    dst: str | os.PathLike,
    hardware: str | os.PathLike,
    split: str = "auto",
    marker_topic: str = MARKER_TOPIC,
    gap_s: float = 1.0,
    task: str | None = None,
    strict: bool = False,
    max_missing: int = 5,
    lookahead_s: float = 2.0,
    fps: float | None = None,
    progress: bool = False,
) -> BagImportReport:
    """Write each episode of the bag into the store ``dst`` (created, or appended to) through the
    recorder's :class:`EpisodeRecorder`; episodes it refuses are listed in the report."""
    from tqdm import tqdm

    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.runtime.recorder import EpisodeRecorder, RecorderError

    if split not in ("auto", "services", "marker", "gap", "none"):
        raise ValueError(f"split {split!r}: choose auto, services, marker, gap or none")
    hw = load_hardware_config(hardware)
    t0 = time.perf_counter()
    bag = BagSource(bag_path)
    try:
        plan = hardware_topics(hw, bag.topics)
        # an episode found from the data starts this much before its first joint state: one and
        # a half periods of the slowest stream, so the first frame has its camera images
        lead = 1.5 / min([hw.control_hz] + [c.fps for c in hw.cameras])
        has_services = any(t.endswith(SERVICE_SUFFIX) and t.startswith("/recorder/") for t in bag.topics)
        how = split
        if how == "auto":
            how = "services" if has_services else "marker" if marker_topic in bag.topics else "gap"
        if how == "services":
            if not has_services:
                raise ValueError(
                    f"--split services: the bag has no /recorder/*{SERVICE_SUFFIX} topics (record with "
                    "'ros2 bag record --include-services', or use --split marker/gap)"
                )
            episodes = episodes_from_calls(_service_calls(bag))
        elif how == "marker":
            if marker_topic not in bag.topics:
                raise ValueError(
                    f"--split marker: the bag has no topic {marker_topic} (topics: {sorted(bag.topics)})"
                )
            episodes = episodes_from_calls(_marker_calls(bag, marker_topic))
        elif how == "gap":
            episodes = episodes_from_gaps(bag, conv.JOINT_STATES, gap_s, lead)
        else:
            s = [stamp_of(m) for _, _, m in bag.messages([conv.JOINT_STATES])]
            episodes = [Episode(min(s) - lead, max(s))] if s else []
        if not episodes:
            raise ValueError(f"{bag_path}: no episode found (split by {how})")
        report = BagImportReport(path=str(dst), split=how, topics={n: p["topic"] for n, p in plan.items()})
        specs = {
            conv.JOINT_POS: {"names": list(hw.joint_names), "units": "rad"},
            conv.JOINT_VEL: {"names": list(hw.joint_names), "units": "rad/s"},
            "action": {"names": hw.command_names},
        }
        by_topic = {p["topic"]: (name, p) for name, p in plan.items()}
        rec = EpisodeRecorder(
            dst,
            _streams(hw, plan),
            conv.JOINT_STATES,
            fps or hw.control_hz,
            hw.name,
            max_missing,
            specs,
            lookahead_s,
            strict=strict,
        )
        margin = lookahead_s + 1.0
        for ep in tqdm(episodes, desc="import-bag", unit="episode", disable=not progress):
            meta = {"task": task or hw.task, "robot": hw.name, "source_bag": str(bag_path), **ep.meta}
            stop = ep.stop if math.isfinite(ep.stop) else None
            rec.start(meta, t_start=ep.start)
            if stop is not None:
                rec.end_at(stop)
            # log time ~ capture time + transport delay: read a margin around the window; the
            # recorder itself drops samples captured outside [start, stop]
            for topic, t_log, msg in bag.messages(
                by_topic, ep.start - margin, None if stop is None else stop + margin
            ):
                name, p = by_topic[topic]
                stamp, values = _sample(p, hw, t_log, msg)
                if stop is not None and name != conv.JOINT_STATES and stamp > stop + margin:
                    continue
                rec.add(name, stamp, values)
            try:
                idx, rep = rec.stop(wait_s=0.0)
            except RecorderError as e:
                report.refused.append({"start": ep.start, "stop": ep.stop, "error": str(e)})
                continue
            report.committed.append({"index": idx, **rep})
    finally:
        bag.close()
    report.seconds = time.perf_counter() - t0
    return report


# ------------------------------------------------------------------------------- export
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
            writer.write(conn, int(round(t * _NS)), ts.serialize_cdr(msg, conn.msgtype))
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
                    header=_header(ts, t),
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
                            header=_header(ts, t, f"{c.name}_color_optical_frame"),
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
                            header=_header(ts, t),
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
                        header=_header(ts, t + 0.5 / fps),
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
