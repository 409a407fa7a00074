"""The actor's side of the RPC: a client with a deadline on every call, and an outbox.

:class:`LearnerClient` wraps the three methods; every call has a deadline (``timeout=`` in
gRPC), so an unreachable or stalled learner costs the actor at most that long per call.
:class:`Outbox` holds transition batches until the learner acknowledged them: each batch keeps
its sequence number across resends (the learner drops duplicates), the outbox is bounded (the
oldest batch is dropped and counted when it overflows, so a learner that is down for a long time
cannot exhaust the robot workstation's memory), and a failed send backs off exponentially.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque

import grpc
import numpy as np

from robot_policy.hil.rpc.config import ClientConfig
from robot_policy.hil.rpc.service import PUSH, STATUS, TOKEN_HEADER, WEIGHTS, channel_options
from robot_policy.hil.rpc.wire import pack, unpack

log = logging.getLogger(__name__)


class LearnerClient:
    """Blocking calls to the learner, each bounded by ``deadline_s``."""

    def __init__(self, config: ClientConfig):
        self.config = config
        self.session = uuid.uuid4().hex[:12]
        self._max = int(config.max_message_mb * 1024 * 1024)
        # Reconnect quickly after a learner restart (gRPC's default backoff grows to 120 s).
        reconnect = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)]
        options = channel_options(self._max) + reconnect
        if config.tls_ca:
            with open(config.tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(config.address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(config.address, options=options)
        self._metadata = ((TOKEN_HEADER, f"Bearer {config.token}"),) if config.token else ()
        self._push = self._channel.unary_unary(PUSH)
        self._weights = self._channel.unary_unary(WEIGHTS)
        self._status = self._channel.unary_unary(STATUS)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, meta: dict, arrays: dict | None = None, timeout: float | None = None):
        reply = method(pack(meta, arrays), timeout=timeout or self.config.deadline_s, metadata=self._metadata)
        return unpack(reply, self._max)

    def push(self, seq: int, transitions: dict[str, np.ndarray], timeout: float | None = None) -> dict:
        """Send one batch; returns the reply meta (``ack``, ``duplicate``, ``version``)."""
        meta = {"actor_id": self.config.actor_id, "session": self.session, "seq": seq}
        return self._call(self._push, meta, transitions, timeout)[0]

    def weights(
        self, version: int, learner_session: str | None, timeout: float | None = None
    ) -> tuple[dict, dict[str, np.ndarray]]:
        """``(meta, arrays)``: ``meta["unchanged"]`` when ``version`` of ``learner_session`` is the newest."""
        meta = {
            "actor_id": self.config.actor_id,
            "session": self.session,
            "version": version,
            "learner_session": learner_session,
        }
        return self._call(self._weights, meta, None, timeout)

    def status(self, timeout: float | None = None) -> dict:
        return self._call(self._status, {}, None, timeout)[0]


def retryable(error: grpc.RpcError) -> bool:
    """Errors worth retrying later (learner down, restarting, busy); the rest are bugs or config."""
    return error.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    )


class Outbox:
    """Transition batches not yet acknowledged: bounded, in order, with sequence numbers and backoff.

    Thread-safe: a control loop may :meth:`put` while another thread is in :meth:`flush` (the
    lock is never held during a call).
    """

    def __init__(self, max_batches: int = 256, backoff_s: tuple[float, float] = (0.1, 5.0)):
        self.max_batches = max_batches
        self._batches: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        self._lock = threading.Lock()
        self._next_seq = 0
        self.dropped_batches = 0
        self.dropped_transitions = 0
        self.sent_batches = 0
        self.sent_transitions = 0
        self.failures = 0
        self._backoff_min, self._backoff_max = backoff_s
        self._backoff = 0.0
        self._retry_at = 0.0

    def __len__(self) -> int:
        return len(self._batches)

    def put(self, transitions: dict[str, np.ndarray]) -> None:
        """Queue a batch; when full, drop the oldest (counted) so the newest experience survives."""
        with self._lock:
            if len(self._batches) >= self.max_batches:
                _, old = self._batches.popleft()
                self.dropped_batches += 1
                self.dropped_transitions += len(next(iter(old.values())))
            self._batches.append((self._next_seq, transitions))
            self._next_seq += 1

    def retry_now(self) -> None:
        """Forget the backoff (a final flush at shutdown)."""
        self._retry_at = 0.0

    def _head(self) -> tuple[int, dict[str, np.ndarray]] | None:
        with self._lock:
            if not self._batches or time.monotonic() < self._retry_at:
                return None
            return self._batches[0]

    def _acked(self, seq: int) -> None:
        with self._lock:
            # The head may have been dropped by put() meanwhile (overflow): only pop what was sent.
            if self._batches and self._batches[0][0] == seq:
                _, batch = self._batches.popleft()
                self.sent_batches += 1
                self.sent_transitions += len(next(iter(batch.values())))
            self._backoff = 0.0

    def _failed(self) -> float:
        with self._lock:
            self.failures += 1
            self._backoff = min(self._backoff_max, max(self._backoff_min, 2 * self._backoff))
            self._retry_at = time.monotonic() + self._backoff
            return self._backoff

    def flush(self, client: LearnerClient, max_batches: int | None = None) -> int:
        """Send queued batches in order until one fails (then back off); returns how many were acked.

        Retryable failures (learner down, busy, past the deadline) keep the batch; any other error
        (wrong token, a payload the learner refuses) is raised: retrying cannot fix it.
        """
        sent = 0
        while max_batches is None or sent < max_batches:
            head = self._head()
            if head is None:
                break
            seq, batch = head
            try:
                client.push(seq, batch)
            except grpc.RpcError as e:
                if not retryable(e):
                    raise
                wait = self._failed()
                log.warning("push seq %d failed (%s); retrying in %.1f s", seq, e.code().name, wait)
                break
            self._acked(seq)
            sent += 1
        return sent
