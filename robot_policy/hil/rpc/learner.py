"""The learner side of the actor/learner split: a training thread fed by a bounded queue.

The gRPC handlers (:mod:`robot_policy.hil.rpc.service`) never train and never wait: a push is
decoded, checked, de-duplicated and put on a bounded queue with ``put_nowait`` (a full queue is
answered ``RESOURCE_EXHAUSTED``: the actor keeps the batch and retries); a weights request
returns bytes packed once per publish. All training happens in :class:`LearnerLoop`'s own
thread, which drains the queue into the buffers, runs updates once the learner is ready,
publishes actor weights every ``publish_every`` steps and checkpoints every
``checkpoint_every`` steps. So a dead, slow or half-open actor can cost at most one gRPC worker
thread until its deadline or keepalive expires; it can never stall the updates.

Sequence numbers make pushes idempotent: each actor process has an id and a random session;
its batches carry increasing ``seq``; a batch whose ``seq`` is not above the last one accepted
from that session is acknowledged again without being stored twice (a resend after a lost
reply). The numbers of the batches already in the buffers are part of the checkpoint, so a
resumed learner still recognises resends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robot_policy.hil.rpc import checkpoint as ckpt
from robot_policy.hil.rpc.config import LearnerLoopConfig
from robot_policy.hil.rpc.wire import pack

log = logging.getLogger(__name__)

TransitionSpec = dict[str, tuple[tuple[int, ...], str]]
"""``{key: (per-transition shape, dtype name)}`` of a pushed batch."""


class Learner(Protocol):
    """What the loop needs from an agent and its buffers (the SAC/RLPD adapter, or a test double)."""

    transition_spec: TransitionSpec | None
    """Keys, shapes and dtypes of a transition (``None``: accept any)."""

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        """Store a batch of transitions (leading dimension N) in the buffers."""

    def ready(self) -> bool:
        """Enough data for updates."""

    def update(self) -> dict[str, float]:
        """One learner step (sample, gradient updates); returns scalar metrics."""

    def actor_weights(self) -> dict[str, np.ndarray]:
        """The arrays an actor needs to act (policy network only)."""

    def buffer_sizes(self) -> dict[str, int]:
        """Transitions held per buffer, e.g. ``{"online": .., "offline": ..}``."""

    def save(self, folder: Path) -> None:
        """Write agent and buffers into ``folder`` (safetensors + JSON)."""

    def load(self, folder: Path) -> None:
        """Restore what :meth:`save` wrote."""


class LearnerLoop:
    """The training thread plus the state the gRPC handlers read (thread-safe)."""

    def __init__(self, learner: Learner, config: LearnerLoopConfig):
        self.learner = learner
        self.config = config
        self.session = uuid.uuid4().hex[:12]
        """Changes at every start, so actors know weights of a previous run are stale."""
        self.step = 0
        self.version = 0
        self.transitions = 0
        self._queue: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._queued_bytes = 0  # bounded by config.queue_mb as well as by the batch count
        self._lock = threading.Lock()
        self._accepted: OrderedDict[str, int] = OrderedDict()  # actor session -> last seq queued
        self._stored: dict[str, int] = {}  # actor session -> last seq in the buffers
        self._actors: dict[str, dict[str, Any]] = {}
        self._published: tuple[int, int, bytes] = (0, 0, b"")
        self._metrics: dict[str, float] = {}
        self._rate = (time.monotonic(), 0)
        self._updates_per_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.started = time.time()
        self.last_checkpoint: str | None = None

    # ----------------------------------------------------------------------- lifecycle
    def resume(self) -> bool:
        """Restore agent, buffers and counters from the newest checkpoint; ``False`` if none."""
        if not self.config.checkpoint_dir:
            raise ValueError("--resume needs --checkpoint-dir")
        folder = ckpt.latest_checkpoint(self.config.checkpoint_dir)
        if folder is None:
            return False
        state = ckpt.load_state(folder)
        self.learner.load(folder)
        self.step, self.version = int(state["step"]), int(state["version"])
        self.transitions = int(state["transitions"])
        self._stored = {str(k): int(v) for k, v in state["stored_seq"].items()}
        self._accepted = OrderedDict(self._stored)
        self.last_checkpoint = str(folder)
        log.info("resumed from %s: step %d, buffers %s", folder, self.step, self.learner.buffer_sizes())
        return True

    def start(self) -> None:
        self._publish()
        self._thread = threading.Thread(target=self._run, name="learner-loop", daemon=True)
        self._thread.start()

    def stop(self, checkpoint: bool = True) -> Path | None:
        """Stop the thread, move what is queued into the buffers, and checkpoint (if configured)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._drain(block=False, limit=None)
        if checkpoint and self.config.checkpoint_dir and self.error is None:
            return self.checkpoint()
        return None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ handler side
    def offer(self, actor_id: str, session: str, seq: int, arrays: dict[str, np.ndarray], n: int) -> str:
        """Queue a checked batch; ``"accepted"``, ``"duplicate"`` or ``"full"``. Never blocks."""
        key = f"{actor_id}/{session}"
        with self._lock:
            if actor_id not in self._actors and len(self._actors) >= 1024:
                oldest = min(self._actors, key=lambda a: self._actors[a]["last_seen"])
                del self._actors[oldest]  # status lists the 1024 most recently seen actors
            info = self._actors.setdefault(
                actor_id, {"pushes": 0, "transitions": 0, "duplicates": 0, "refused_full": 0, "gaps": 0}
            )
            info["last_seen"] = time.time()
            last = self._accepted.get(key)
            if last is not None and seq <= last:
                info["duplicates"] += 1
                return "duplicate"
            nbytes = sum(a.nbytes for a in arrays.values())
            if self._queued_bytes + nbytes > self.config.queue_mb * 1024 * 1024 and self._queued_bytes:
                info["refused_full"] += 1
                return "full"
            try:
                self._queue.put_nowait((key, seq, arrays))
            except queue.Full:
                info["refused_full"] += 1
                return "full"
            self._queued_bytes += nbytes
            if last is not None and seq != last + 1:
                info["gaps"] += 1  # the actor dropped batches it could not send (its bound)
            self._accepted[key] = seq
            self._accepted.move_to_end(key)
            while len(self._accepted) > 1024:  # forget the oldest sessions, not the live ones
                self._accepted.popitem(last=False)
            info["pushes"] += 1
            info["transitions"] += n
            return "accepted"

    def published(self) -> tuple[int, int, bytes]:
        """``(version, step, packed reply)`` of the newest weights (swapped atomically)."""
        return self._published

    def touch(self, actor_id: str) -> None:
        with self._lock:
            if actor_id in self._actors:
                self._actors[actor_id]["last_seen"] = time.time()

    def status(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            actors = {
                a: {
                    **{k: v for k, v in i.items() if k != "last_seen"},
                    "seen_s_ago": round(now - i["last_seen"], 3),
                }
                for a, i in self._actors.items()
            }
        return {
            "session": self.session,
            "step": self.step,
            "version": self.version,
            "transitions": self.transitions,
            "buffers": self.learner.buffer_sizes(),
            "ready": bool(self.learner.ready()),
            "queue": self._queue.qsize(),
            "queue_size": self.config.queue_size,
            "queue_mb": round(self._queued_bytes / 1024 / 1024, 3),
            "updates_per_s": round(self._updates_per_s, 2),
            "metrics": {k: float(v) for k, v in self._metrics.items()},
            "actors": actors,
            "uptime_s": round(now - self.started, 3),
            "running": self.running,
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
            "last_checkpoint": self.last_checkpoint,
        }

    # ------------------------------------------------------------------- loop side
    def _publish(self) -> None:
        weights = self.learner.actor_weights()
        self.version += 1
        body = pack({"version": self.version, "step": self.step, "session": self.session}, weights)
        self._published = (self.version, self.step, body)

    def _drain(self, block: bool, limit: int | None) -> int:
        got = 0
        while limit is None or got < limit:
            try:
                key, seq, arrays = (
                    self._queue.get(timeout=0.05) if block and got == 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            self.learner.add(arrays)
            n = len(next(iter(arrays.values())))
            with self._lock:
                self._queued_bytes -= sum(a.nbytes for a in arrays.values())
                self.transitions += n
                self._stored[key] = seq
            got += 1
        return got

    def checkpoint(self) -> Path:
        with self._lock:
            # Only sessions still remembered (the 1024 newest) can resend: the rest are dropped.
            self._stored = {k: v for k, v in self._stored.items() if k in self._accepted}
            stored = dict(self._stored)
            state = {"step": self.step, "version": self.version, "transitions": self.transitions}
        folder = ckpt.save_checkpoint(
            self.config.checkpoint_dir,
            self.step,
            {**state, "stored_seq": stored, "buffers": self.learner.buffer_sizes()},
            self.learner.save,
            keep=self.config.keep_checkpoints,
        )
        self.last_checkpoint = str(folder)
        log.info("checkpoint %s", folder)
        return folder

    def _may_update(self) -> bool:
        if not self.learner.ready():
            return False
        cap = self.config.max_updates_per_transition
        return cap <= 0 or self.step < cap * self.transitions

    def _run(self) -> None:
        cfg = self.config
        try:
            while not self._stop.is_set():
                # Take what arrived; wait briefly only when there is nothing to train on.
                self._drain(block=not self._may_update(), limit=cfg.queue_size)
                if not self._may_update():
                    continue
                self._metrics = self.learner.update()
                self.step += 1
                t, s = self._rate
                if time.monotonic() - t >= 2.0:
                    self._updates_per_s = (self.step - s) / (time.monotonic() - t)
                    self._rate = (time.monotonic(), self.step)
                if self.step % cfg.publish_every == 0:
                    self._publish()
                if cfg.checkpoint_dir and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.checkpoint()
                if cfg.max_learner_steps and self.step >= cfg.max_learner_steps:
                    break
        except BaseException as e:  # surfaced through status() and by the process's exit code
            log.exception("learner loop failed")
            self.error = e
