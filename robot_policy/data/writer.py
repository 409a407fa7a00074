"""Streaming writer of one episode: buffer, flush in the background, commit or discard."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from robot_policy.data.layout import StoreError
from robot_policy.data.schema import KeySpec, check_meta, validate_frames

# Buffered frames of an open episode go to disk once a key holds this many bytes (images every
# ~16 frames at 640x480; low-dim keys usually wait for commit).
FLUSH_BYTES = 16 << 20
# Flushes allowed in flight before append() waits: bounds memory when the disk or the encoder
# cannot keep up, instead of buffering without limit.
MAX_PENDING_FLUSHES = 4


class EpisodeSink(Protocol):
    """Everything an ``EpisodeWriter`` may do to its store; ``EpisodeStore.begin_episode`` hands
    one over. The writer sees nothing else of the store, so the commit protocol and the locks
    stay the store's business."""

    schema: dict[str, KeySpec]
    """The keys every frame must have, and their dtype and shape."""
    episode: int
    """Index the episode gets when committed."""
    start: int
    """First frame of the episode in ``data/<key>``: the last committed end."""

    def array(self, key: str) -> Any:
        """The zarr array ``data/<key>``; the writer writes only at ``start`` and past it."""

    def commit(self, n_frames: int, meta: dict) -> int:
        """Make the ``n_frames`` frames past ``start`` an episode with ``meta``; returns its index."""

    def truncate_tail(self) -> None:
        """Drop every frame past the last committed end (a discarded episode)."""

    def release(self) -> None:
        """The writer is closed: the store may open another episode."""


class EpisodeWriter:
    """Streams frames of one episode; ``commit()`` makes it visible, ``discard()`` drops it.

    Get one from ``EpisodeStore.begin_episode()``. Frames are validated and copied on
    ``append``/``extend`` (a camera driver may reuse its buffer), buffered per key, and written
    past the store's last committed frame by one background thread, so a recorder's callback
    does not stall while a block of images is compressed. An error in the background write
    (disk full...) is raised by the next ``append``/``extend``/``commit``.

    Not thread-safe: call it from one thread at a time (a recorder with several subscription
    callbacks should align frames first and append from one place).
    """

    def __init__(self, sink: EpisodeSink, meta: dict, background: bool = True) -> None:
        self._sink = sink
        self._meta = meta
        self.episode = sink.episode
        self._start = sink.start
        self._buf: dict[str, list[np.ndarray]] = {k: [] for k in sink.schema}
        self._buf_bytes = dict.fromkeys(sink.schema, 0)
        self._queued = dict.fromkeys(sink.schema, 0)  # frames handed to the flusher, per key
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="episode-flush") if background else None
        self._pending: list[Future] = []
        self.num_frames = 0
        self.closed = False

    @property
    def meta(self) -> dict:
        return dict(self._meta)

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(
                "this episode was already committed or discarded; call store.begin_episode() again"
            )

    def append(self, frame: dict[str, np.ndarray]) -> None:
        """Add one frame ``{key: array(*shape)}``; validated before anything is buffered."""
        self._check_open()
        validate_frames(self._sink.schema, frame, self.episode, batched=False, frame_offset=self.num_frames)
        self._push({k: np.array(v, copy=True)[None] for k, v in frame.items()}, 1)

    def extend(self, frames: dict[str, np.ndarray]) -> None:
        """Add ``n`` frames ``{key: array(n, *shape)}``."""
        self._check_open()
        n = validate_frames(
            self._sink.schema, frames, self.episode, batched=True, frame_offset=self.num_frames
        )
        self._push({k: np.array(v, copy=True) for k, v in frames.items()}, n)

    def _push(self, frames: dict[str, np.ndarray], n: int) -> None:
        self._reap(block=False)
        for k, v in frames.items():
            self._buf[k].append(v)
            self._buf_bytes[k] += v.nbytes
        self.num_frames += n
        for k in frames:
            if self._buf_bytes[k] >= FLUSH_BYTES:
                self._flush(k)

    def _flush(self, key: str) -> None:
        if not self._buf[key]:
            return
        parts = self._buf[key]
        self._buf[key], self._buf_bytes[key] = [], 0
        offset = self._start + self._queued[key]
        self._queued[key] += sum(p.shape[0] for p in parts)
        if self._pool is None:
            _write(self._sink.array(key), offset, parts)
            return
        while len(self._pending) >= MAX_PENDING_FLUSHES:
            self._reap(block=True, oldest_only=True)
        # One worker thread: blocks of a key land in the order they were queued.
        self._pending.append(self._pool.submit(_write, self._sink.array(key), offset, parts))

    def _reap(self, block: bool, oldest_only: bool = False) -> None:
        """Collect finished background writes; re-raise the first failure."""
        while self._pending and (block or self._pending[0].done()):
            fut = self._pending.pop(0)
            fut.result()  # raises the background error here, in the caller's thread
            if oldest_only:
                return

    def update_meta(self, meta: dict) -> None:
        """Merge more metadata (e.g. success, known only at the end)."""
        self._check_open()
        self._meta.update(check_meta(meta, self.episode))

    def commit(self) -> int:
        """Write what is buffered, wait for it, then make the episode visible; returns its index."""
        self._check_open()
        if self.num_frames == 0:
            raise StoreError(f"episode {self.episode} has no frames; append() some or discard() it")
        for k in self._buf:
            self._flush(k)
        self._reap(block=True)
        idx = self._sink.commit(self.num_frames, self._meta)
        self._close()
        return idx

    def discard(self) -> None:
        """Drop the episode. Atomic: it was never visible; its frames are truncated from disk."""
        self._check_open()
        try:
            self._reap(block=True)
        except Exception:  # a failed background write of a discarded episode does not matter
            pass
        self._close()
        self._sink.truncate_tail()

    def _close(self) -> None:
        self.closed = True
        self._buf = {k: [] for k in self._buf}
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._sink.release()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Leaving the block without commit (exception or not) discards: an episode is committed
        # only on purpose.
        if not self.closed:
            self.discard()


def _write(arr, offset: int, parts: list[np.ndarray]) -> None:
    block = np.concatenate(parts) if len(parts) > 1 else parts[0]
    arr.resize((offset + block.shape[0], *arr.shape[1:]))
    arr[offset : offset + block.shape[0]] = block
