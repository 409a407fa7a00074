"""Episode recording from timestamped streams (ROS-free; the recorder node feeds it messages).

Streams arrive at their own rates and out of order with each other. Every sample carries its
capture stamp; at ``stop()`` the episode is aligned on the master stream's stamps (joint states,
the control rate): each other stream contributes its latest sample captured at or before that
stamp, and the action is the first command issued *after* it (the command that answered that
observation, as in scripted collection). Missing frames are counted per stream from gaps in its
stamps; an episode where one stream misses more than ``max_missing`` frames is refused, naming
the stream, so a dropped camera never silently duplicates frames into a dataset.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class RecorderError(RuntimeError):
    """The episode cannot be committed (message names the stream and what went wrong)."""


@dataclass
class Stream:
    """One input of the recorder."""

    name: str
    """Stream name used in messages (e.g. the topic)."""
    keys: list[str]
    """Dataset keys this stream provides (one sample may carry several, e.g. joint_pos + gripper)."""
    rate: float
    """Expected rate (Hz), for counting missing frames."""
    mode: str = "latest"
    """``latest``: sample at or before the frame stamp; ``next``: first sample after it (actions)."""
    required: bool = True
    """A required stream with no samples refuses the commit; an optional one is left out."""
    fill: dict[str, np.ndarray] | None = None
    """Event streams (e.g. an intervention flag): value of frames before any sample; such a
    stream is always recorded and never counts as missing frames."""
    stamps: list[float] = field(default_factory=list)
    values: list[dict[str, np.ndarray]] = field(default_factory=list)


def count_missing(stamps: np.ndarray, rate: float, t0: float, t1: float) -> int:
    """Frames missing from a stream expected at ``rate`` between ``t0`` and ``t1``: the gaps
    between consecutive stamps, plus the uncovered head and tail."""
    if len(stamps) == 0:
        return int(round((t1 - t0) * rate)) + 1
    period = 1.0 / rate
    s = np.sort(stamps)
    # Samples within half a period of the window count for its edges (latest-before alignment).
    inside = s[(s >= t0 - 0.5 * period) & (s <= t1 + 0.5 * period)]
    gaps = np.diff(np.concatenate([[t0 - period], inside, [t1 + period]]))
    return int(np.sum(np.maximum(np.round(gaps / period) - 1, 0)))


class EpisodeRecorder:
    """Buffers one episode of streams in memory; ``stop()`` aligns and writes it atomically."""

    def __init__(
        self,
        path: str | Path,
        streams: list[Stream],
        master: str,
        fps: float,
        robot: str,
        max_missing: int = 5,
        key_specs: dict | None = None,
    ):
        self.path = Path(path)
        self.streams = {s.name: s for s in streams}
        if master not in self.streams:
            raise ValueError(f"master stream {master!r} is not one of {list(self.streams)}")
        self.master = master
        self.fps = float(fps)
        self.robot = robot
        self.max_missing = int(max_missing)
        self.key_specs = key_specs or {}
        self.recording = False
        self.meta: dict = {}
        self._lock = threading.Lock()

    # -- input ---------------------------------------------------------------------------
    def start(self, meta: dict | None = None) -> None:
        with self._lock:
            for s in self.streams.values():
                s.stamps.clear()
                s.values.clear()
            self.meta = dict(meta or {})
            self.recording = True

    def add(self, stream: str, stamp: float, values: dict[str, np.ndarray]) -> None:
        """Record one sample (ignored while not recording)."""
        if not self.recording:
            return
        with self._lock:
            s = self.streams[stream]
            if not s.keys:
                s.keys = sorted(values)  # discovered from the first sample (e.g. /sim/observation)
            s.stamps.append(float(stamp))
            s.values.append(values)

    def update_meta(self, meta: dict) -> None:
        self.meta.update(meta)

    def counts(self) -> dict[str, int]:
        return {name: len(s.stamps) for name, s in self.streams.items()}

    # -- output --------------------------------------------------------------------------
    def discard(self) -> None:
        """Drop the episode in memory: nothing was written, nothing will be."""
        with self._lock:
            self.recording = False
            for s in self.streams.values():
                s.stamps.clear()
                s.values.clear()

    def align(self) -> tuple[dict[str, np.ndarray], dict]:
        """Align the buffered streams; returns ``(frames, report)`` or raises RecorderError."""
        m = self.streams[self.master]
        if len(m.stamps) < 2:
            raise RecorderError(f"stream '{m.name}' has {len(m.stamps)} samples: nothing to commit")
        order = np.argsort(m.stamps)
        t = np.asarray(m.stamps)[order]
        report: dict = {"missing": {}, "frames": 0}
        used = [s for s in self.streams.values() if (s.stamps or s.required) and s.fill is None]
        events = [s for s in self.streams.values() if s.fill is not None]
        for s in used:
            if not s.stamps:
                raise RecorderError(
                    f"stream '{s.name}' received nothing during the episode; is it publishing?"
                )
        # Trim the head until every 'latest' stream has a sample, and the tail after the last
        # command for 'next' streams: those frames have no complete data.
        lo, hi = t[0], t[-1]
        for s in used:
            st = np.asarray(s.stamps)
            if s.mode == "latest":
                lo = max(lo, st.min())
            else:
                hi = min(hi, st.max() - 1e-9)
        keep = (t >= lo) & (t <= hi)
        t, idx_master = t[keep], order[keep]
        if len(t) < 2:
            raise RecorderError("streams do not overlap in time: no frame has every input")
        frames: dict[str, list] = {}
        for s in used:
            st = np.asarray(s.stamps)
            so = np.argsort(st, kind="stable")
            st_sorted = st[so]
            if s.name == self.master:
                pick = idx_master
            elif s.mode == "latest":
                pick = so[np.searchsorted(st_sorted, t, side="right") - 1]
            else:
                pick = so[np.searchsorted(st_sorted, t, side="right")]
            missing = count_missing(st, s.rate, t[0], t[-1])
            report["missing"][s.name] = missing
            for key in s.keys:
                frames[key] = [s.values[i][key] for i in pick]
        for s in events:
            st = np.asarray(s.stamps)
            so = np.argsort(st, kind="stable")
            pos = np.searchsorted(st[so], t, side="right") - 1 if len(st) else np.full(len(t), -1)
            for key in s.keys:
                frames[key] = [s.values[so[i]][key] if i >= 0 else s.fill[key] for i in pos]
        bad = {n: k for n, k in report["missing"].items() if k > self.max_missing}
        if bad:
            name, k = max(bad.items(), key=lambda kv: kv[1])
            raise RecorderError(
                f"stream '{name}' is missing {k} frames (limit {self.max_missing}); episode not committed. "
                f"Check that it publishes at {self.streams[name].rate:g} Hz, or raise max_missing_frames."
            )
        out = {k: np.stack(v) for k, v in frames.items()}
        report["frames"] = len(t)
        report["duration_s"] = float(t[-1] - t[0])
        return out, report

    def stop(self, meta: dict | None = None) -> tuple[int, dict]:
        """Align and commit; returns ``(episode index, report)``. On error nothing is written and
        the buffered episode is kept (call ``discard()`` or fix and ``stop()`` again)."""
        from robot_policy.data import EpisodeStore, KeySpec

        with self._lock:
            self.recording = False
            frames, report = self.align()
        if meta:
            self.meta.update(meta)
        if self.path.exists():
            store = EpisodeStore.open(self.path, mode="a")
            missing = sorted(set(store.schema) - set(frames))
            if missing:
                raise RecorderError(f"{self.path} expects keys {missing} that this recording lacks")
            frames = {k: v for k, v in frames.items() if k in store.schema}
        else:
            schema = {}
            for k, v in frames.items():
                extra = dict(self.key_specs.get(k, {}))
                schema[k] = KeySpec(dtype=v.dtype.name, shape=v.shape[1:], **extra)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            store = EpisodeStore.create(self.path, schema, fps=self.fps, robot=self.robot)
        meta_out = {**self.meta, "frames_missing": report["missing"], "duration_s": report["duration_s"]}
        idx = store.add_episode(frames, meta=meta_out)
        self.discard()
        return idx, report
