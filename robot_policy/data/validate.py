"""Consistency check of an episode store on disk (``robot-policy dataset validate``).

Works on the raw zarr group, so it also diagnoses stores that ``EpisodeStore.open`` rejects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_policy.data import _zarr_io as zio
from robot_policy.data.layout import (
    ATTR,
    DATA_GROUP,
    EPISODE_ENDS,
    EPISODES_ATTR,
    GAPS_META,
    META_GROUP,
    VALID_KEY,
)


@dataclass
class ValidationReport:
    """Problems found: ``errors`` make the store inconsistent, ``notes`` are informational."""

    path: str
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    """Recorded stream gaps, one line per gap (committed with a ``valid`` mask, not errors)."""
    episodes: int = 0
    frames: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_store(path: str | Path, deep: bool = False) -> ValidationReport:
    """Check layout, ``episode_ends``, key lengths, schema and metadata.

    ``deep``: also decode every committed frame of every key (finds corrupted chunks) and
    check float keys for NaN/inf.
    """
    rep = ValidationReport(str(path))
    p = Path(path)
    if not p.exists():
        rep.errors.append(f"{p} does not exist")
        return rep
    try:
        g = zio.open_group(str(p), "r")
    except Exception as e:
        rep.errors.append(f"{p} is not a zarr group: {e}")
        return rep
    if DATA_GROUP not in g:
        rep.errors.append("no 'data' group: a Diffusion Policy store holds data/<key> arrays")
        return rep
    if META_GROUP not in g or EPISODE_ENDS not in g[META_GROUP]:
        rep.errors.append("no 'meta/episode_ends' array (int64 exclusive episode ends)")
        return rep
    data = dict(g[DATA_GROUP].arrays())
    if not data:
        rep.errors.append("'data' holds no arrays")
    ends_arr = g[META_GROUP][EPISODE_ENDS]
    try:
        ends = np.asarray(ends_arr[:])
    except Exception as e:
        rep.errors.append(f"meta/episode_ends cannot be read: {e}")
        return rep
    if ends.ndim != 1:
        rep.errors.append(f"meta/episode_ends must be 1-D, it has shape {ends.shape}")
        return rep
    if ends.dtype.kind not in "iu":
        rep.errors.append(f"meta/episode_ends must hold integers, its dtype is {ends.dtype}")
        return rep
    if ends.dtype != np.int64:
        rep.notes.append(f"meta/episode_ends is {ends.dtype}, Diffusion Policy writes int64")
    ends = ends.astype(np.int64)
    rep.episodes = int(ends.shape[0])
    last = int(ends[-1]) if len(ends) else 0
    rep.frames = last
    if len(ends) and ends[0] < 0:
        rep.errors.append(f"meta/episode_ends[0] = {ends[0]} is negative")
    dec = np.nonzero(np.diff(ends) < 0)[0]
    if dec.size:
        i = int(dec[0]) + 1
        rep.errors.append(
            f"meta/episode_ends decreases at index {i}: {ends[i - 1]} then {ends[i]} ({dec.size} place(s)); ends must be non-decreasing"
        )
    empty = int(np.sum(np.diff(ends, prepend=0) == 0))
    if empty:
        rep.notes.append(f"{empty} empty episode(s) (equal consecutive ends)")

    lengths = {k: int(a.shape[0]) if a.ndim else -1 for k, a in data.items()}
    for k, n in lengths.items():
        if n < 0:
            rep.errors.append(f"data/{k} is 0-dimensional; every key needs a time axis")
        elif last > n:
            rep.errors.append(f"meta/episode_ends[-1] = {last} is past the length of data/{k} ({n} frames)")
    info = dict(g.attrs.get(ATTR) or {})
    pending = info.get("pending")
    longer = {k: n for k, n in lengths.items() if n > last}
    if longer:
        if pending:
            who = (
                "being recorded now"
                if zio.writer_active(str(p))
                else f"left by writer pid {pending.get('pid')}, which is gone"
            )
            rep.notes.append(
                f"uncommitted partial episode ({max(longer.values()) - last} frames past the last commit, {who}): "
                "invisible to readers; the next EpisodeStore.open(path, 'a') truncates a dead writer's tail"
            )
        elif len(set(lengths.values())) > 1:
            rep.errors.append(
                f"keys of unequal length: {lengths} (all data/<key> arrays must have the same number of frames)"
            )
        else:
            rep.errors.append(
                f"data has {max(longer.values()) - last} frames past meta/episode_ends[-1] = {last} that belong to no episode"
            )
    elif pending:
        rep.notes.append("a writer has an episode open (or crashed before writing frames)")

    schema = info.get("schema")
    if schema is not None:
        for k in sorted(set(schema) - set(data)):
            rep.errors.append(f"schema key {k!r} has no data/{k} array")
        for k in sorted(set(data) - set(schema)):
            rep.errors.append(f"data/{k} is not in the schema (root attribute '{ATTR}.schema')")
        for k in sorted(set(schema) & set(data)):
            want_dt, want_sh = schema[k].get("dtype"), tuple(schema[k].get("shape", ()))
            a = data[k]
            if a.dtype.name != want_dt or tuple(a.shape[1:]) != want_sh:
                rep.errors.append(
                    f"data/{k} is {a.dtype.name} {tuple(a.shape[1:])} per frame, the schema says {want_dt} {want_sh}"
                )
    metas = g[META_GROUP].attrs.get(EPISODES_ATTR)
    if metas is not None and len(metas) < rep.episodes:
        rep.notes.append(f"per-episode metadata covers {len(metas)} of {rep.episodes} episodes")
    _report_gaps(metas or [], data.get(VALID_KEY), ends, rep)
    if deep and rep.ok:
        _deep_check(data, last, rep)
    return rep


def _report_gaps(metas: list, valid, ends: np.ndarray, rep: ValidationReport) -> None:
    """List the recorder's gaps per episode, and check them against the ``valid`` mask."""
    starts = np.concatenate([[0], ends[:-1]])
    for ep, meta in enumerate(metas[: len(ends)]):
        for g in (meta or {}).get(GAPS_META) or []:
            rep.gaps.append(
                f"episode {ep}: stream '{g.get('stream')}' gap at frame {g.get('frame')} "
                f"({g.get('frames')} frame(s) flagged in data/{VALID_KEY})"
            )
        if valid is not None and rep.ok and ends[ep] > starts[ep]:
            flagged = int(
                (~np.asarray(valid[int(starts[ep]) : int(ends[ep])], dtype=bool)).any(axis=-1).sum()
            )
            listed = sum(int(g.get("frames", 0)) for g in (meta or {}).get(GAPS_META) or [])
            if flagged and not listed:
                rep.gaps.append(
                    f"episode {ep}: {flagged} frame(s) flagged in data/{VALID_KEY}, no gaps in its metadata"
                )


def _deep_check(data: dict, n: int, rep: ValidationReport) -> None:
    for k, a in data.items():
        per = max(1, int(a.chunks[0]))
        step = per * max(1, (64 << 20) // max(1, per * (a.nbytes // max(1, a.shape[0]))))
        for s in range(0, n, step):
            e = min(n, s + step)
            try:
                x = np.asarray(a[s:e])
            except Exception as ex:
                rep.errors.append(
                    f"data/{k} frames {s}..{e - 1} cannot be decoded: {type(ex).__name__}: {ex}"
                )
                break
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                f = s + int(np.argwhere(~np.isfinite(x))[0][0])
                rep.errors.append(f"data/{k} has non-finite values (first at frame {f})")
                break
