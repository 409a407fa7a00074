"""Streaming alignment of timestamped streams on a master clock, with a bounded look-ahead.

Frames are the master stream's stamps (joint states, the control rate). For a frame at ``t``,
a ``latest`` stream contributes its last sample captured at or before ``t``, a ``next`` stream
(the commands) its first sample captured after ``t``, and an event stream its last sample at or
before ``t`` (or its fill value). Samples of different streams arrive out of order, so a frame
can be written only once nothing that arrives later can change it.

**Look-ahead assumption.** A sample captured at ``s`` arrives before any sample (of any
non-event stream) captured after ``s + lookahead_s``. So once the newest stamp seen is ``W``,
every sample captured at or before the *horizon* ``F = W - lookahead_s`` is known, and a frame
``t <= F`` is final, except that it also needs each ``next`` stream to have a sample in
``(t, F]``. A frame whose command has not come within ``(max_missing + 2)`` command periods
past the horizon is dropped: if commands resume, the gap alone refuses the episode (more than
``max_missing`` missing); if they never do, the frame is part of the tail that has no action.
So the recorder holds at most ``lookahead_s + (max_missing + 2) / rate`` seconds of samples.
Samples that break the assumption are counted as ``late``: a late master sample is dropped
(its frame was already decided), a late sample of another stream is used by later frames only.

Missing frames are counted incrementally with exactly the rule of :func:`count_missing`, over
the window from the first complete frame to the last, so a doomed episode is known early.

**Validity mask.** Every frame carries ``valid`` (``robot_policy.data.layout.VALID_KEY``): one
bool per stream in use (``used_names()``), False where that stream had a gap at the frame: the
samples after its picked one are missing (more than 1.5 periods until the next) and the first
missing one was due by the frame; a command picked more than 1.5 periods after the frame; or,
for the master stream, frames missing right before this one. ``gaps`` lists the runs of flagged frames, so
a recording with a gap can still be committed and training can skip the windows across it.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from robot_policy.data.layout import VALID_KEY


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
    """Window of samples still needed (sorted by stamp); managed by the aligner."""
    values: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Values of the samples in ``stamps``."""


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


class _MissingCounter:
    """:func:`count_missing` computed as stamps become final; keeps only uncounted stamps."""

    def __init__(self, rate: float, after: bool = False) -> None:
        self.period = 1.0 / rate
        # ``after`` (a ``next`` stream, the commands): frames use the first sample after their
        # stamp, so the window's samples are those after the first frame; a command captured
        # just before the episode's first frame (cut by the start request) is not missing.
        self.after = after
        self.todo: list[float] = []  # stamps not counted yet, sorted
        self.prev: float | None = None  # last counted stamp (None: window not started)
        self.missing = 0

    def _gap(self, d: float) -> int:
        return max(int(np.round(d / self.period)) - 1, 0)

    def add(self, stamp: float) -> bool:
        """Queue a stamp; False if it falls before what was already counted (late)."""
        if self.prev is not None and stamp <= self.prev:
            return False
        self.todo.insert(bisect_right(self.todo, stamp), stamp)
        return True

    def drop_before(self, t: float) -> None:
        """Before the window starts: stamps earlier than ``t`` can never count."""
        del self.todo[: bisect_right(self.todo, t - 0.5 * self.period - 1e-12)]

    def start(self, t0: float) -> None:
        if self.after:
            del self.todo[: bisect_right(self.todo, t0)]
            self.prev = t0
            return
        self.drop_before(t0)
        self.prev = t0 - self.period

    def advance(self, limit: float) -> None:
        i = bisect_right(self.todo, limit)
        for s in self.todo[:i]:
            self.missing += self._gap(s - self.prev)
            self.prev = s
        del self.todo[:i]

    def finish(self, t1: float) -> None:
        if self.after:
            # The last frame's own sample is the first after it: no uncovered tail beyond it.
            self.advance(t1 + self.period)
            return
        self.advance(t1 + 0.5 * self.period)
        self.missing += self._gap(t1 + self.period - self.prev)


class StreamAligner:
    """Turns samples arriving in any order into final, aligned frames (see module docstring).

    ``add()`` and ``finish()`` return the frames that became final, oldest first, each a
    ``{key: value}`` dict. Not thread-safe: the recorder calls it under its lock.
    """

    def __init__(self, streams: list[Stream], master: str, lookahead_s: float, max_missing: int):
        self.streams = {s.name: s for s in streams}
        if master not in self.streams:
            raise ValueError(f"master stream {master!r} is not one of {list(self.streams)}")
        if lookahead_s < 0:
            raise ValueError(f"lookahead_s must be >= 0, got {lookahead_s}")
        self.master = master
        self.lookahead_s = float(lookahead_s)
        self.max_missing = int(max_missing)
        self.reset()

    def reset(self) -> None:
        for s in self.streams.values():
            s.stamps.clear()
            s.values.clear()
        self.received = dict.fromkeys(self.streams, 0)
        self.late = dict.fromkeys(self.streams, 0)
        self.counters = {
            n: _MissingCounter(s.rate, after=s.mode == "next")
            for n, s in self.streams.items()
            if s.fill is None
        }
        self.used: list[Stream] | None = None  # decided at the first complete frame
        self.watermark = -math.inf
        self.horizon = -math.inf
        self.t_first: float | None = None  # first / last frame emitted
        self.t_last: float | None = None
        self.frames = 0
        self.dropped = 0  # frames dropped waiting for a command (tail, or a refused gap)
        self.done = False
        self.gaps: list[dict] = []  # runs of frames flagged in the validity mask, per stream
        self._open_gap: dict[str, dict] = {}

    # -- input ---------------------------------------------------------------------------
    def add(self, name: str, stamp: float, values: dict[str, np.ndarray]) -> list[dict]:
        s = self.streams[name]
        if not s.keys:
            s.keys = sorted(values)  # discovered from the first sample (e.g. /sim/observation)
        self.received[name] += 1
        if self.used is not None and s.fill is None and s not in self.used:
            return []  # an optional stream that had not started at the first frame: left out
        stamp = float(stamp)
        if s.fill is None:
            if stamp <= self.horizon:
                self.late[name] += 1
                if name == self.master:
                    return []  # its frame's place in time was already decided without it
            self.watermark = max(self.watermark, stamp)
            self.counters[name].add(stamp)  # a late stamp inside a counted gap is not counted
        i = bisect_right(s.stamps, stamp)
        s.stamps.insert(i, stamp)
        s.values.insert(i, values)
        return self._process(self.watermark - self.lookahead_s)

    def finish(self) -> list[dict]:
        """End of the episode: every sample is known; frames without a command are dropped."""
        out = self._process(math.inf)
        if self.used is not None and self.t_last is not None:
            for s in self.used:
                self.counters[s.name].finish(self.t_last)
        self.done = True
        return out

    # -- state ---------------------------------------------------------------------------
    def missing(self) -> dict[str, int]:
        """Missing frames per recorded stream so far (final after ``finish()``)."""
        return {s.name: self.counters[s.name].missing for s in self.used or []}

    def used_names(self) -> list[str]:
        """Streams in the validity mask, in column order (known from the first frame on)."""
        return [s.name for s in self.used or []]

    def buffered(self) -> dict[str, int]:
        """Samples held per stream (the master's are the frames waiting to be final)."""
        return {n: len(s.stamps) for n, s in self.streams.items()}

    # -- alignment -----------------------------------------------------------------------
    def _process(self, horizon: float) -> list[dict]:
        self.horizon = max(self.horizon, horizon)
        F = self.horizon
        m = self.streams[self.master]
        out: list[dict] = []
        while m.stamps and m.stamps[0] <= F:
            t = m.stamps[0]
            if self.used is None and not self._start(t):
                self._pop_master()  # head: some stream has no sample at or before this frame
                continue
            blocked = self._blocked_on(t, F)
            if blocked is not None:
                if F - t <= (self.max_missing + 2) / blocked.rate:
                    break  # its command may still come
                self._pop_master()
                self.dropped += 1
                continue
            out.append(self._frame(t, m.values[0]))
            self._pop_master()
            self.t_first = t if self.t_first is None else self.t_first
            self.t_last = t
            self.frames += 1
        self._count(F)
        self._trim(F)
        return out

    def _start(self, t: float) -> bool:
        """First frame candidate: every 'latest' stream in use needs a sample at or before it."""
        cands = [s for s in self.streams.values() if s.fill is None]
        for s in cands:
            if s.mode == "latest" and s.name != self.master and (s.required or s.stamps):
                if not s.stamps or s.stamps[0] > t:
                    return False
        self.used = [s for s in cands if s.required or s.stamps or s.name == self.master]
        for s in cands:
            if s in self.used:
                self.counters[s.name].start(t)
            else:
                s.stamps.clear()
                s.values.clear()
        return True

    def _blocked_on(self, t: float, F: float) -> Stream | None:
        for s in self.used:
            if s.mode == "next":
                j = bisect_right(s.stamps, t)
                if j == len(s.stamps) or s.stamps[j] > F:
                    return s
        return None

    def _frame(self, t: float, master_values: dict) -> dict[str, np.ndarray]:
        frame: dict[str, np.ndarray] = {}
        valid = np.ones(len(self.used), dtype=np.bool_)
        for i, s in enumerate(self.used):
            tolerance = 1.5 / s.rate
            if s.name == self.master:
                v = master_values
                valid[i] = self.t_last is None or t - self.t_last <= tolerance
            else:
                j = bisect_right(s.stamps, t)
                if s.mode == "latest":
                    v, picked = s.values[j - 1], s.stamps[j - 1]
                    # Stale only across a real gap (samples missing after the picked one), and
                    # only once the first missing sample was due: a stream sampled out of phase
                    # with the master is up to one period old without having lost anything.
                    after = s.stamps[j] if j < len(s.stamps) else self.horizon
                    valid[i] = after - picked <= tolerance or t - picked <= 0.5 / s.rate
                else:
                    v, picked = s.values[j], s.stamps[j]
                    valid[i] = picked - t <= tolerance
            for key in s.keys:
                frame[key] = v[key]
            self._track_gap(s.name, bool(valid[i]), t)
        frame[VALID_KEY] = valid
        for s in self.streams.values():
            if s.fill is not None:
                j = bisect_right(s.stamps, t) - 1
                for key in s.keys:
                    frame[key] = s.values[j][key] if j >= 0 else s.fill[key]
        return frame

    def _track_gap(self, name: str, ok: bool, t: float) -> None:
        """Extend or close the run of flagged frames of stream ``name`` at frame ``self.frames``."""
        run = self._open_gap.get(name)
        if ok:
            self._open_gap.pop(name, None)
            return
        if run is None:
            run = {"stream": name, "frame": self.frames, "frames": 0, "t": round(t, 6)}
            if name == self.master and self.t_last is not None:
                run["missing"] = max(int(round((t - self.t_last) * self.streams[name].rate)) - 1, 1)
            self.gaps.append(run)
            self._open_gap[name] = run
        run["frames"] += 1

    def _pop_master(self) -> None:
        m = self.streams[self.master]
        del m.stamps[0], m.values[0]

    def _count(self, F: float) -> None:
        if self.used is None:
            return
        for s in self.used:
            c = self.counters[s.name]
            if self.t_last is not None:
                # Only stamps that are final and inside the window so far (count_missing's rule).
                c.advance(min(F, self.t_last + 0.5 * c.period))

    def _trim(self, F: float) -> None:
        """Forget samples no frame can pick: every future frame is after ``h``."""
        m = self.streams[self.master]
        h = min(m.stamps[0], F) if m.stamps else F
        for s in self.streams.values():
            if s.name == self.master:
                continue
            if s.mode == "next" and s.fill is None:
                i = bisect_right(s.stamps, h)  # the pick is strictly after the frame
            else:
                i = bisect_right(s.stamps, h) - 1  # keep the latest at or before h
            if i > 0:
                del s.stamps[:i], s.values[:i]
            if self.used is None and s.fill is None:
                self.counters[s.name].drop_before(h)
        if self.used is None:
            self.counters[self.master].drop_before(h)
