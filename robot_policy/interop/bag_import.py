"""rosbag2 import: a bag's episodes into an episode store through the recorder's own aligner.

See ``robot_policy.interop.bag`` for the topics read and how episodes are found.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_policy import conventions as conv
from robot_policy.interop import require
from robot_policy.interop.bag_messages import (
    MARKER_TOPIC,
    NS,
    REQUEST_RECEIVED,
    REQUEST_SENT,
    SERVICE_SUFFIX,
    compressed_array,
    image_array,
    joint_obs,
    named_vector,
    stamp_of,
    typestore,
)


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
            kw["start"] = max(0, int(start * NS))
        if stop is not None:
            kw["stop"] = int(stop * NS) + 1
        for conn, t, raw in self.reader.messages(connections=conns, **kw):
            if conn.msgtype not in self.ts.types:
                raise ValueError(
                    f"{self.path}: topic {conn.topic} has type {conn.msgtype}, which this reader does not know"
                )
            yield conn.topic, t / NS, self.ts.deserialize_cdr(raw, conn.msgtype)


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
