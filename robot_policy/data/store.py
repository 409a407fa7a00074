"""Crash-safe episode store in Diffusion Policy's zarr ReplayBuffer layout.

The layout (zarr format 3 or 2) and its names are in ``layout.py``.

Commit protocol (see docs/store.md): frames of an open episode are written to ``data/*`` past
the last committed end, where nobody looks; the episode's metadata entry is written next; the
last write of a commit replaces ``meta/episode_ends``'s metadata file (atomic rename), which is
what makes the episode visible. Data past ``episode_ends[-1]`` is an uncommitted tail:
ignored by readers, truncated by the next writer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from robot_policy.data import _zarr_io as zio
from robot_policy.data.codecs import DEFAULT_IMAGE_CODEC, IMAGE_CODECS, LOWDIM_CODEC, is_image_spec
from robot_policy.data.layout import (
    ATTR,
    DATA_GROUP,
    EPISODE_ENDS,
    EPISODES_ATTR,
    FORMAT_VERSION,
    META_GROUP,
    STATS_ATTR,
    StoreError,
)
from robot_policy.data.schema import KeySpec, check_meta, coerce_schema, validate_frames
from robot_policy.data.stats import compute_stats
from robot_policy.data.writer import EpisodeWriter

log = logging.getLogger(__name__)


class EpisodeStore:
    """Episodes of synchronized frames on disk; see the module docstring for the layout."""

    def __init__(self, group, path: str, mode: str, durable: bool = False) -> None:
        self._group = group
        self.path = str(path)
        self.mode = mode
        self.durable = durable
        self._writer: EpisodeWriter | None = None
        self._lock: str | None = zio.lock_for_writing(self.path) if mode == "a" else None
        self._load()

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        schema: dict,
        fps: float,
        robot: str | None = None,
        zarr_format: int = 3,
        overwrite: bool = False,
        image_codec: str = DEFAULT_IMAGE_CODEC,
        attrs: dict | None = None,
        durable: bool = False,
    ) -> EpisodeStore:
        """Create an empty store. Errors if ``path`` exists unless ``overwrite=True``.

        ``image_codec`` applies to uint8 (H, W[, C]) keys without their own ``KeySpec.codec``:
        "jpegxl" (lossless, default: smallest and cheapest to write), "blosc" (lossless,
        ~1.5x bigger, ~10x faster to decode: for datasets read far more than written),
        "jpegxl-lossy" (quality 95), "jpeg2k" (lossy, Diffusion Policy's choice).
        ``durable``: also survive power loss, not only process crashes (``os.sync()`` around
        each commit; costs time proportional to the unsynced data).
        """
        schema = coerce_schema(schema)
        if zarr_format not in (2, 3):
            raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
        if image_codec not in IMAGE_CODECS:
            raise ValueError(f"image_codec {image_codec!r} unknown; choose one of {IMAGE_CODECS}")
        if not (isinstance(fps, int | float) and fps > 0 and np.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        p = Path(path)
        if zio.locked_in_this_process(str(p)):
            raise StoreError(f"{p} is open for writing in this process; close() it before overwriting")
        if p.exists():
            if not overwrite:
                raise FileExistsError(
                    f"{p} already exists; pass overwrite=True to replace it or open it with EpisodeStore.open(path, 'a')"
                )
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        import zarr

        root = zarr.open_group(str(p), mode="w", zarr_format=zarr_format)
        data = root.create_group(DATA_GROUP)
        meta = root.create_group(META_GROUP)
        for key, spec in schema.items():
            codec = spec.codec or (image_codec if is_image_spec(spec.dtype, spec.shape) else LOWDIM_CODEC)
            if codec != LOWDIM_CODEC and not is_image_spec(spec.dtype, spec.shape):
                raise ValueError(
                    f"key {key!r}: codec {codec!r} needs a uint8 (H, W[, C]) image key, got {spec.dtype} {spec.shape}"
                )
            spec.codec = codec
            zio.create_data_array(data, key, spec.dtype, spec.shape, codec, zarr_format)
        zio.create_episode_ends(meta, zarr_format)
        meta.attrs[EPISODES_ATTR] = []
        root.attrs[ATTR] = {
            "format_version": FORMAT_VERSION,
            "fps": float(fps),
            "robot": robot,
            "schema": {k: s.to_json() for k, s in schema.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pending": None,
            **({"attrs": attrs} if attrs else {}),
        }
        return cls(zio.open_group(str(p), "r+"), str(p), "a", durable=durable)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", durable: bool = False) -> EpisodeStore:
        """Open an existing store: ``"r"`` read-only, ``"a"`` to add episodes.

        Works on hand-made Diffusion Policy stores (only ``data/`` and ``meta/episode_ends``,
        zarr format 2 or 3). Opening with ``"a"`` truncates an uncommitted tail left by a
        writer that crashed. Only one process may hold a store open with ``"a"`` at a time
        (an advisory lock, released when the process exits or dies, or by ``close()``).
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"no episode store at {p}")
        try:
            group = zio.open_group(str(p), "r" if mode == "r" else "r+")
        except Exception as e:  # zarr raises several types for "not a group"
            raise StoreError(f"{p} is not a zarr group ({e})") from e
        store = cls(group, str(p), mode, durable=durable)
        if mode == "a":
            store._recover()
        return store

    def _load(self) -> None:
        g = self._group
        if DATA_GROUP not in g or META_GROUP not in g or EPISODE_ENDS not in g[META_GROUP]:
            raise StoreError(
                f"{self.path} is not an episode store: it needs data/<key> arrays and meta/episode_ends (Diffusion Policy layout)"
            )
        self._data = {k: a for k, a in g[DATA_GROUP].arrays()}
        self._ends_arr = g[META_GROUP][EPISODE_ENDS]
        self._ends = np.asarray(self._ends_arr[:], dtype=np.int64)
        info = dict(g.attrs.get(ATTR) or {})
        self._info = info
        if "schema" in info:
            self._schema = {k: KeySpec.from_json(v) for k, v in info["schema"].items()}
        else:  # hand-made store: infer per-frame dtype and shape from the arrays themselves
            self._schema = {
                k: KeySpec(dtype=a.dtype.name, shape=tuple(a.shape[1:]))
                for k, a in sorted(self._data.items())
            }
        self._meta_list = list(g[META_GROUP].attrs.get(EPISODES_ATTR, []) or [])
        self.zarr_format = g.metadata.zarr_format

    def drop_uncommitted(self) -> None:
        """Truncate frames past the last episode end that no crashed writer of ours left behind
        (a store edited by other tools); ``open(path, "a")`` refuses to do that on its own."""
        self._check_writable()
        self._recover(force=True)

    def _recover(self, force: bool = False, strict: bool = False) -> None:
        """Drop an uncommitted tail (partial episode of a crashed writer): truncate to the last end.

        Frames past the end with no interrupted writer recorded came from another tool: they are
        kept (warning) unless ``force``; ``strict`` (about to write over them) raises instead.
        """
        if self._lock in zio.OPEN_EPISODES:  # another handle in this process is writing that tail
            return
        end = self.num_frames
        tails = {k: a.shape[0] - end for k, a in self._data.items() if a.shape[0] > end}
        pending = self._info.get("pending")
        if tails and not pending and not force:
            msg = (
                f"{self.path}: frames past the last episode end ({tails} per key) that no interrupted "
                "writer of ours recorded: another tool changed this store. See 'robot-policy dataset "
                "validate'; store.drop_uncommitted() removes them before new episodes are added"
            )
            if strict:
                raise StoreError(msg)
            log.warning(msg)
            return
        if tails or pending:
            if tails:
                log.warning(
                    "%s: discarding an uncommitted partial episode (%s frames past the last commit)",
                    self.path,
                    max(tails.values()),
                )
            for k in tails:
                self._data[k].resize((end, *self._data[k].shape[1:]))
            self._set_pending(None)

    def _set_pending(self, value) -> None:
        if ATTR not in self._group.attrs and value is None:
            return
        info = dict(self._group.attrs.get(ATTR) or {})
        info["pending"] = value
        self._group.attrs[ATTR] = info
        self._info = info

    def close(self) -> None:
        """Release the writer lock (mode "a"); an open episode is discarded."""
        if self._writer is not None and not self._writer.closed:
            self._writer.discard()
        if self._lock is not None:
            zio.unlock(self._lock)
            self._lock = None
        self.mode = "r"

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock", None) is not None:
            zio.unlock(self._lock)

    def refresh(self) -> None:
        """Re-read episode ends and metadata (another process may have committed episodes)."""
        self._group = zio.open_group(self.path, "r" if self.mode == "r" else "r+")
        self._load()

    # ------------------------------------------------------------------ properties
    @property
    def schema(self) -> dict[str, KeySpec]:
        """Per-key specs (copies: editing them does not change the store)."""
        return {k: KeySpec.from_json(v.to_json()) for k, v in self._schema.items()}

    @property
    def keys(self) -> list[str]:
        return list(self._schema)

    @property
    def fps(self) -> float | None:
        return self._info.get("fps")

    @property
    def robot(self) -> str | None:
        return self._info.get("robot")

    @property
    def attrs(self) -> dict:
        """User attributes given to ``create(attrs=...)`` (a copy)."""
        return dict(self._info.get("attrs") or {})

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def num_episodes(self) -> int:
        return int(self._ends.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self._ends, prepend=0)

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return f"EpisodeStore({self.path!r}, episodes={self.num_episodes}, frames={self.num_frames}, keys={self.keys})"

    def array(self, key: str):
        """The raw zarr array ``data/<key>`` (may hold an uncommitted tail past num_frames)."""
        return self._data[key]

    # ------------------------------------------------------------------ reading
    def episode_slice(self, i: int) -> slice:
        n = self.num_episodes
        if not -n <= i < n:
            raise IndexError(f"episode {i} out of range: the store has {n} episodes")
        i %= n
        start = int(self._ends[i - 1]) if i > 0 else 0
        return slice(start, int(self._ends[i]))

    def get_episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        s = self.episode_slice(i)
        return {k: np.asarray(self._data[k][s]) for k in (keys or self.keys)}

    def episode_meta(self, i: int) -> dict:
        s = self.episode_slice(i)  # range check
        i %= self.num_episodes
        meta = dict(self._meta_list[i]) if i < len(self._meta_list) else {}
        # Diffusion Policy-style per-episode arrays under meta/ (one value per episode)
        for name, arr in self._group[META_GROUP].arrays():
            if (
                name != EPISODE_ENDS
                and arr.ndim == 1
                and arr.shape[0] == self.num_episodes
                and name not in meta
            ):
                meta[name] = np.asarray(arr[i]).item()
        del s
        return meta

    def episodes_meta(self) -> list[dict]:
        return [self.episode_meta(i) for i in range(self.num_episodes)]

    # ------------------------------------------------------------------ writing
    def _check_writable(self) -> None:
        if self.mode != "a":
            raise StoreError(
                f"{self.path} is open read-only; use EpisodeStore.open(path, mode='a') to add episodes"
            )

    def begin_episode(self, meta: dict | None = None, background: bool = True) -> EpisodeWriter:
        """Start streaming an episode; nothing is visible until ``commit()``.

        ``background``: compress and write buffered blocks in a worker thread (default), so
        ``append`` returns quickly; False writes in the caller's thread.
        """
        self._check_writable()
        if self._writer is not None or self._lock in zio.OPEN_EPISODES:
            raise StoreError("another episode is open on this store; commit() or discard() it first")
        meta = check_meta(meta, self.num_episodes)
        self.refresh()  # another handle in this process may have committed since we loaded
        self._recover(strict=True)
        w = EpisodeWriter(_StoreSink(self), meta, background=background)
        self._writer = w
        zio.OPEN_EPISODES.add(self._lock)
        self._set_pending({"start": self.num_frames, "since": time.time(), "pid": os.getpid()})
        return w

    def add_episode(self, frames: dict[str, np.ndarray], meta: dict | None = None) -> int:
        """Validate and write a whole episode ``{key: (T, *shape)}``; returns its index."""
        self._check_writable()
        validate_frames(self._schema, frames, self.num_episodes, batched=True)
        check_meta(meta, self.num_episodes)
        w = self.begin_episode(meta, background=False)
        try:
            w.extend(frames)
            return w.commit()
        except BaseException:
            if not w.closed:
                w.discard()
            raise

    def _commit(self, n_new: int, meta: dict) -> int:
        idx = self.num_episodes
        new_end = self.num_frames + n_new
        metas = self._meta_list[:idx] + [{}] * max(0, idx - len(self._meta_list))
        metas.append(meta)
        # Written before the commit point; an entry past num_episodes is ignored by readers.
        self._group[META_GROUP].attrs[EPISODES_ATTR] = metas
        if self.durable:  # frames and metadata on disk before the commit can be
            os.sync()
        zio.append_commit_value(self._ends_arr, new_end)  # <- commit point
        if self.durable:
            os.sync()
        self._ends = np.append(self._ends, np.int64(new_end))
        self._meta_list = metas
        self._set_pending(None)
        return idx

    # ------------------------------------------------------------------ statistics
    def _stats_digest(self) -> str:
        return hashlib.sha1(self._ends.tobytes()).hexdigest()

    def stats(self, keys: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Per-key min/max/mean/std, computed once and cached in the store's attributes.

        Low-dim keys: per element over all committed frames. Image keys: per channel, over up
        to 512 evenly spaced frames (decoding every frame of a long dataset costs minutes).
        The cache is keyed by a digest of ``episode_ends`` and recomputed when episodes change.
        """
        keys = list(keys or self.keys)
        digest = self._stats_digest()
        cached = self._group.attrs.get(STATS_ATTR) or {}
        if cached.get("digest") != digest:
            cached = {"digest": digest, "keys": {}}
        todo = [k for k in keys if k not in cached["keys"]]
        for k in todo:
            if self.num_frames == 0:
                raise StoreError("the store has no episodes: statistics need at least one committed frame")
            cached["keys"][k] = compute_stats(self._data[k], self.num_frames, self._schema[k])
        if todo and self.mode == "a" and self._writer is None:
            self._group.attrs[STATS_ATTR] = cached
        return {k: {s: np.asarray(v, dtype=np.float32) for s, v in cached["keys"][k].items()} for k in keys}


class _StoreSink:
    """The ``EpisodeSink`` an ``EpisodeStore`` hands its writer: the writer's only way in.

    The store's private state is touched here, next to the store, and nowhere in ``writer.py``.
    """

    def __init__(self, store: EpisodeStore) -> None:
        self._store = store
        self.schema = store._schema
        self.episode = store.num_episodes
        self.start = store.num_frames

    def array(self, key: str):
        return self._store._data[key]

    def commit(self, n_frames: int, meta: dict) -> int:
        return self._store._commit(n_frames, meta)

    def truncate_tail(self) -> None:
        self._store._recover()

    def release(self) -> None:
        self._store._writer = None
        zio.OPEN_EPISODES.discard(self._store._lock)
