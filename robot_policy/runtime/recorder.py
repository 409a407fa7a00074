"""Episode recording from timestamped streams (ROS-free; the recorder node feeds it messages).

Streams arrive at their own rates and out of order with each other. Every sample carries its
capture stamp; frames are aligned on the master stream's stamps (joint states, the control
rate): each other stream contributes its latest sample captured at or before that stamp, and
the action is the first command issued *after* it (the command that answered that
observation, as in scripted collection). See :mod:`robot_policy.runtime.align` for when a
frame is final (a bounded look-ahead, ``lookahead_s``).

Frames are streamed into the episode store as they become final (``store.begin_episode()``,
whose background thread compresses and writes blocks), so memory holds only the look-ahead
window, whatever the episode length; a crash loses only the episode being recorded, and the
store stays valid. Missing frames are counted per stream from gaps in its stamps. A gap never
costs the demonstration: the episode is committed with a per-frame, per-stream validity mask
(data key ``valid``) and its gaps listed in the episode metadata (``gaps``, ``frames_missing``),
so training skips the windows across a gap instead of learning from duplicated frames. With
``strict=True`` an episode where one stream misses more than ``max_missing`` frames is refused
instead, naming the stream. A refused or discarded episode is dropped atomically: it was never
visible, and its frames are removed from disk.

A recording with the ``intervention`` flag (teleop or arbiter) gets a per-episode summary in
its metadata: ``interventions`` (how many began), ``intervention_frames``, ``intervention_s`` and
``intervention_starts`` (the frame at which each began).
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from robot_policy.data.layout import GAPS_META, VALID_KEY
from robot_policy.runtime.align import Stream, StreamAligner, count_missing

__all__ = [
    "INTERVENTION_KEY",
    "EpisodeRecorder",
    "InterventionTally",
    "RecorderError",
    "Stream",
    "StreamWatch",
    "count_missing",
]

log = logging.getLogger(__name__)


class RecorderError(RuntimeError):
    """The episode cannot be committed (message names the stream and what went wrong)."""


class StreamWatch:
    """Arrival watchdog: which streams have sent nothing for ``periods`` of their period.

    The aligner only sees a gap once the look-ahead has passed; an operator should hear about a
    dead camera the moment it stops, while the demonstration can still be redone. Optional
    streams are watched once they have been seen.
    """

    def __init__(self, rates: dict[str, float], periods: float = 3.0, optional: set[str] | None = None):
        if periods <= 1.0:
            raise ValueError(f"stall_warn_periods must be > 1 period, got {periods}")
        self.limits = {name: periods / rate for name, rate in rates.items()}
        self.optional = set(optional or ())
        self.last: dict[str, float] = {}
        self._reported: set[str] = set()
        self.stalls_total = 0

    def restart(self, now: float) -> None:
        """A new episode: silence counts from now."""
        self.last = {n: now for n in self.limits if n not in self.optional}
        self._reported.clear()

    def seen(self, name: str, now: float) -> None:
        if name in self.limits:
            self.last[name] = now
            self._reported.discard(name)

    def stalled(self, now: float) -> dict[str, float]:
        """``{stream: seconds silent}`` for streams silent longer than their limit."""
        return {n: now - t for n, t in self.last.items() if now - t > self.limits[n]}

    def newly_stalled(self, now: float) -> list[tuple[str, float]]:
        """Stalls not reported yet (each stall is reported once, until the stream comes back)."""
        out = [(n, d) for n, d in self.stalled(now).items() if n not in self._reported]
        self._reported.update(n for n, _ in out)
        self.stalls_total += len(out)
        return out


INTERVENTION_KEY = "intervention"
"""Per-frame flag: the executed action came from a human (teleop / arbiter)."""


class InterventionTally:
    """Per-episode intervention summary from the recorded flags, as frames are written: how many
    interventions, how many frames and seconds under human control, and the frame at which each
    began (RLIF's intervention points)."""

    def __init__(self, fps: float):
        self.fps = float(fps)
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.starts: list[int] = []
        self.seen = False
        self._index = 0
        self._prev = False

    def add(self, frame: dict) -> None:
        flag = frame.get(INTERVENTION_KEY)
        if flag is not None:
            self.seen = True
            on = bool(np.asarray(flag).reshape(-1)[0])
            if on:
                self.frames += 1
                if not self._prev:
                    self.starts.append(self._index)
            self._prev = on
        self._index += 1

    def meta(self) -> dict:
        """Episode metadata (empty when the recording has no intervention flags)."""
        if not self.seen:
            return {}
        return {
            "interventions": len(self.starts),
            "intervention_frames": self.frames,
            "intervention_s": round(self.frames / self.fps, 3) if self.fps else None,
            "intervention_starts": list(self.starts),
        }


class EpisodeRecorder:
    """Records one episode at a time, streaming aligned frames to ``path``; thread-safe."""

    def __init__(
        self,
        path: str | Path,
        streams: list[Stream],
        master: str,
        fps: float,
        robot: str,
        max_missing: int = 5,
        key_specs: dict | None = None,
        lookahead_s: float = 2.0,
        on_problem: Callable[[str], None] | None = None,
        strict: bool = False,
    ):
        self.path = Path(path)
        self.aligner = StreamAligner(streams, master, lookahead_s, max_missing)
        self.streams = self.aligner.streams
        self.master = master
        self.fps = float(fps)
        self.robot = robot
        self.max_missing = int(max_missing)
        # strict: refuse an episode with more than max_missing missing frames in a stream
        # (the pre-mask behaviour); otherwise commit it with the gaps flagged.
        self.strict = bool(strict)
        self.key_specs = key_specs or {}
        self.recording = False
        self.meta: dict = {}
        self._lock = threading.Lock()
        self._store = None
        self._writer = None
        self._created = False  # the store was created by the current episode
        self._error: RecorderError | None = None  # a write failure, reported by stop()
        self.frames_written = 0
        self.tally = InterventionTally(fps)
        # Told once per episode, as soon as it can no longer be committed (the operator may
        # discard and retry right away instead of finding out at stop).
        self.on_problem = on_problem
        self._told = False
        self.t_start: float | None = None
        # End of the episode (the stop request's time): master samples captured after it are
        # left out, and stop() waits until the master stream has reached it, so a recorder that
        # runs behind the graph (a loaded machine) never cuts the episode's tail off.
        self.t_end: float | None = None
        self._last_master = -math.inf  # newest master stamp seen this episode, even if left out
        self._reached_end = threading.Event()

    # -- input ---------------------------------------------------------------------------
    def start(self, meta: dict | None = None, t_start: float | None = None) -> None:
        """Begin an episode. ``t_start``: samples captured before it are ignored, so frames
        still in flight from before the start (e.g. before a scene reset) never leak in."""
        with self._lock:
            self._abort()
            self.meta = dict(meta or {})
            self.t_start = t_start
            self.recording = True

    def end_at(self, t_end: float) -> None:
        """Mark the episode's end: master samples captured after ``t_end`` are left out, and
        ``stop()`` waits for the samples captured up to it that are still in flight."""
        with self._lock:
            self.t_end = float(t_end)
            if self._last_master >= self.t_end:
                self._reached_end.set()

    def add(self, stream: str, stamp: float, values: dict[str, np.ndarray]) -> None:
        """Record one sample (ignored while not recording). Never raises for a write failure:
        it is kept and reported by ``stop()``, since this runs in a subscription callback."""
        if not self.recording or (self.t_start is not None and stamp < self.t_start):
            return
        with self._lock:
            if not self.recording:
                return
            if stream == self.master:
                self._last_master = max(self._last_master, stamp)
                if self.t_end is not None and stamp >= self.t_end:
                    self._reached_end.set()
                    if stamp > self.t_end:
                        return  # after the stop request: not part of this episode
            self._write(self.aligner.add(stream, stamp, values))

    def update_meta(self, meta: dict) -> None:
        self.meta.update(meta)

    def counts(self) -> dict[str, int]:
        """Samples received per stream in this episode."""
        return dict(self.aligner.received)

    def missing(self) -> dict[str, int]:
        """Missing frames per stream so far in this episode (final ones only)."""
        with self._lock:
            return self.aligner.missing()

    def buffered(self) -> dict[str, int]:
        """Samples held in memory per stream: the look-ahead window, not the episode."""
        with self._lock:
            return self.aligner.buffered()

    # -- writing -------------------------------------------------------------------------
    def _too_many_missing(self) -> bool:
        return self.strict and any(k > self.max_missing for k in self.aligner.missing().values())

    def _doomed(self) -> bool:
        if self._error is None and not self._too_many_missing():
            return False
        if not self._told and self.on_problem is not None:
            self._told = True
            why = str(self._error) if self._error is not None else self._missing_message()
            self.on_problem(f"this episode will be refused: {why}")
        return True

    def _missing_message(self) -> str:
        a = self.aligner
        name, k = max(a.missing().items(), key=lambda kv: kv[1])
        late = f" ({a.late[name]} samples arrived late)" if a.late[name] else ""
        return (
            f"stream '{name}' is missing {k} frames{late} (limit {self.max_missing}, strict); episode "
            f"not committed. Check that it publishes at {self.streams[name].rate:g} Hz, raise "
            "max_missing_frames (or lookahead_s if samples arrive late), or record without strict "
            "refusal: the episode is then committed with its gaps flagged."
        )

    def _write(self, frames: list[dict]) -> None:
        if self._doomed():
            # Refused whatever comes next (missing counts only grow): free the disk now.
            self._drop_partial()
            return
        try:
            for f in frames:
                if self._writer is None:
                    self._begin(f)
                self._writer.append({k: f[k] for k in self._store.keys})
                self.tally.add(f)
                self.frames_written += 1
        except RecorderError as e:
            self._error = e
        except Exception as e:  # disk full, a frame of the wrong shape...
            self._error = RecorderError(f"writing the episode to {self.path} failed: {e}")
        if self._doomed():
            self._drop_partial()

    def _begin(self, frame: dict[str, np.ndarray]) -> None:
        from robot_policy.data import EpisodeStore, KeySpec

        specs = {**self.key_specs, VALID_KEY: {"names": self.aligner.used_names()}}
        if self.path.exists():
            store = EpisodeStore.open(self.path, mode="a")
            missing = sorted(set(store.schema) - set(frame))
            if missing:
                store.close()
                raise RecorderError(f"{self.path} expects keys {missing} that this recording lacks")
            if (
                VALID_KEY in store.schema
                and list(store.schema[VALID_KEY].names or []) != specs[VALID_KEY]["names"]
            ):
                store.close()
                raise RecorderError(
                    f"{self.path} masks streams {store.schema[VALID_KEY].names}, this recording has "
                    f"{specs[VALID_KEY]['names']}: record into a new dataset"
                )
        else:
            schema = {}
            for k, v in frame.items():
                v = np.asarray(v)
                schema[k] = KeySpec(dtype=v.dtype.name, shape=v.shape, **dict(specs.get(k, {})))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            store = EpisodeStore.create(self.path, schema, fps=self.fps, robot=self.robot)
            self._created = True
        self._store = store
        self._writer = store.begin_episode(meta=self.meta)

    def _drop_partial(self) -> None:
        """Discard what this episode wrote (atomic) and release the store."""
        try:
            if self._writer is not None and not self._writer.closed:
                self._writer.discard()
            if self._store is not None:
                empty = self._store.num_episodes == 0
                self._store.close()
                if self._created and empty:
                    shutil.rmtree(self.path, ignore_errors=True)  # it holds only this episode
        except Exception as e:  # never mask the error that made us drop it
            log.warning("dropping the partial episode in %s failed: %s", self.path, e)
        self._writer = None
        self._store = None
        self._created = False

    def _abort(self) -> None:
        self._drop_partial()
        self.recording = False
        self._error = None
        self._told = False
        self.frames_written = 0
        self.tally.reset()
        self.t_end = None
        self._last_master = -math.inf
        self._reached_end.clear()
        self.aligner.reset()

    # -- output --------------------------------------------------------------------------
    def discard(self) -> None:
        """Drop the episode: it was never visible, and what was streamed is removed from disk."""
        with self._lock:
            self._abort()

    def _tail_missing(self) -> int:
        """Master frames that never came between the last one received and ``t_end`` (the
        stream stalled, or the recorder could not catch up in time)."""
        if self.t_end is None or self._last_master == -math.inf:
            return 0
        period = 1.0 / self.streams[self.master].rate
        return max(int(round((self.t_end - self._last_master) / period)) - 1, 0)

    def _check(self) -> dict:
        a = self.aligner
        n = a.received[self.master]
        if n < 2:
            raise RecorderError(f"stream '{self.master}' has {n} samples: nothing to commit")
        for s in self.streams.values():
            if s.required and s.fill is None and a.received[s.name] == 0:
                raise RecorderError(
                    f"stream '{s.name}' received nothing during the episode; is it publishing?"
                )
        if a.frames < 2:
            raise RecorderError("streams do not overlap in time: no frame has every input")
        missing = a.missing()
        if missing.get(self.master) is not None:
            tail = self._tail_missing()
            missing[self.master] += tail
            a.counters[self.master].missing = missing[self.master]  # for the message
            if tail and not any(g.get("tail") for g in a.gaps):
                # The stream stopped before the stop request: no frame to flag, but listed.
                a.gaps.append(
                    {"stream": self.master, "frame": a.frames, "frames": 0, "missing": tail, "tail": True}
                )
        if self._too_many_missing():
            raise RecorderError(self._missing_message())
        if self._error is not None:
            raise self._error
        return {
            "missing": missing,
            "gaps": [dict(g) for g in a.gaps],
            "frames": a.frames,
            "duration_s": float(a.t_last - a.t_first),
            "late": {k: v for k, v in a.late.items() if v},
            "dropped": a.dropped,
            "received": dict(a.received),
        }

    def stop(
        self, meta: dict | None = None, t_end: float | None = None, wait_s: float = 5.0
    ) -> tuple[int, dict]:
        """Finish and commit; returns ``(episode index, report)``. A refused episode (raises
        RecorderError) is discarded atomically: nothing of it stays in the store.

        ``t_end`` (the stop request's capture-clock time): the episode ends there. Samples are
        usually still in flight when stop is requested, so this first waits (up to ``wait_s``)
        for the master stream to reach ``t_end``; master frames that have still not come by
        then count as missing. The caller must keep feeding ``add()`` from another thread
        meanwhile (the recorder node serves its services and subscriptions on separate threads).
        """
        if t_end is not None and self.recording:  # (not recording: nothing to wait for)
            self.end_at(t_end)
            self._reached_end.wait(wait_s)
        with self._lock:
            self.recording = False
            self._write(self.aligner.finish())
            try:
                report = self._check()
                if meta:
                    self.meta.update(meta)
                meta_out = {
                    **self.meta,
                    "frames_missing": report["missing"],
                    GAPS_META: report["gaps"],
                    "duration_s": report["duration_s"],
                    **self.tally.meta(),
                }
                self._writer.update_meta(meta_out)
                idx = self._writer.commit()
            except RecorderError:
                self._abort()
                raise
            except Exception as e:  # the disk, or metadata that is not JSON
                self._abort()
                raise RecorderError(f"committing the episode to {self.path} failed: {e}") from e
            self._store.close()
            self._store, self._writer, self._created = None, None, False
            self._abort()
            return idx, report
