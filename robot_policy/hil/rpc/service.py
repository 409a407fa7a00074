"""The learner's gRPC service: three unary methods on generic handlers, bytes in and out.

No protobuf code generation: each method is a ``unary_unary_rpc_method_handler`` whose request
and reply are :mod:`robot_policy.hil.rpc.wire` envelopes (msgpack + safetensors).

=====================================  ==============================================================
method                                 request meta -> reply meta
=====================================  ==============================================================
``/robot_policy.hil.Learner/Push``     ``actor_id, session, seq`` + transition arrays ->
                                       ``ack`` (= seq), ``duplicate``, learner ``version``, ``step``
``/robot_policy.hil.Learner/Weights``  ``actor_id, session, version, learner_session`` ->
                                       ``version, step, session`` + actor weights, or ``unchanged``
``/robot_policy.hil.Learner/Status``   ``{}`` -> step, version, buffers, queue, actors, spec, ...
=====================================  ==============================================================

Errors are gRPC status codes: ``UNAUTHENTICATED`` (missing or wrong token, compared in constant
time), ``INVALID_ARGUMENT`` (a body that is not an envelope, too large, or whose transitions do
not match the learner's spec), ``RESOURCE_EXHAUSTED`` (the training queue is full: retry later;
also gRPC's own answer to a message over ``grpc.max_receive_message_length``),
``FAILED_PRECONDITION`` (the learner loop died). A handler never raises anything else, so a bad
request cannot take the server down.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from concurrent import futures

import grpc

from robot_policy.hil.rpc.config import TOKEN_ENV, ServerConfig, is_loopback
from robot_policy.hil.rpc.learner import LearnerLoop
from robot_policy.hil.rpc.wire import WireError, check_transitions, pack, unpack

log = logging.getLogger(__name__)

SERVICE = "robot_policy.hil.Learner"
PUSH = f"/{SERVICE}/Push"
WEIGHTS = f"/{SERVICE}/Weights"
STATUS = f"/{SERVICE}/Status"
TOKEN_HEADER = "authorization"
"""Metadata key of the shared secret, sent as ``Bearer <token>``."""


def channel_options(max_message_bytes: int, server: bool = False) -> list[tuple[str, int]]:
    """gRPC options: explicit size limits, and keepalive pings every 10 s both ways so a dead or
    half-open peer is dropped within ~15 s. The server must accept the actors' pings (its default
    answers pings more often than every 5 min without data with GOAWAY "too_many_pings")."""
    opts = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if server:
        opts += [
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    return opts


class LearnerServer:
    """The gRPC server in front of a :class:`LearnerLoop`."""

    def __init__(self, loop: LearnerLoop, config: ServerConfig, spec_meta: dict | None = None):
        if not config.token and not is_loopback(config.address):
            raise ValueError(
                f"refusing to serve on {config.address} without a token: anyone who can reach it could "
                f"push transitions and read weights. Pass --token or set {TOKEN_ENV}, or bind 127.0.0.1"
            )
        self.loop = loop
        self.config = config
        self.spec_meta = spec_meta or {}
        self._token = config.token.encode() if config.token else None
        methods = {
            "Push": self._push,
            "Weights": self._weights,
            "Status": self._status,
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._guard(fn), request_deserializer=None, response_serializer=None
            )
            for name, fn in methods.items()
        }
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="learner-rpc"),
            handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
            options=[*channel_options(config.max_message_bytes, server=True), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        if bool(config.tls_cert) != bool(config.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        if config.tls_cert:
            with open(config.tls_key, "rb") as k, open(config.tls_cert, "rb") as c:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self._server.add_secure_port(config.address, creds)
        else:
            self.port = self._server.add_insecure_port(config.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.address} (address in use or not local)")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait()

    # ------------------------------------------------------------------ handlers
    def _authorized(self, context) -> bool:
        if self._token is None:
            return True
        for key, value in context.invocation_metadata():
            if key == TOKEN_HEADER:
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, b"Bearer " + self._token)
        return False

    def _guard(self, fn: Callable) -> Callable:
        """Token check, envelope decoding and error mapping around a handler."""

        def handler(request: bytes, context) -> bytes:
            if not self._authorized(context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong token (set {TOKEN_ENV})")
            try:
                meta, arrays = unpack(request, self.config.max_message_bytes)
                return fn(meta, arrays, context)
            except WireError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            except (KeyError, TypeError, ValueError) as e:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"bad request fields: {type(e).__name__}: {e}"
                )

        return handler

    def _check_loop(self, context) -> None:
        if self.loop.error is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"learner loop failed: {self.loop.error!r}")

    @staticmethod
    def _ident(meta: dict) -> tuple[str, str]:
        actor_id, session = meta["actor_id"], meta["session"]
        if not (isinstance(actor_id, str) and isinstance(session, str)) or not (0 < len(actor_id) <= 128):
            raise ValueError("'actor_id' and 'session' must be strings (actor_id 1-128 characters)")
        return actor_id, session[:64]

    def _push(self, meta: dict, arrays: dict, context) -> bytes:
        self._check_loop(context)
        actor_id, session = self._ident(meta)
        seq = meta["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"'seq' must be a non-negative integer, got {seq!r}")
        n = check_transitions(arrays, self.loop.learner.transition_spec, self.config.max_transitions_per_push)
        outcome = self.loop.offer(actor_id, session, seq, arrays, n)
        if outcome == "full":
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "learner queue full: keep the batch and retry")
        return pack(
            {
                "ack": seq,
                "duplicate": outcome == "duplicate",
                "version": self.loop.version,
                "step": self.loop.step,
            }
        )

    def _weights(self, meta: dict, arrays: dict, context) -> bytes:
        self._check_loop(context)
        actor_id, _ = self._ident(meta)
        self.loop.touch(actor_id)
        version, step, body = self.loop.published()
        if meta.get("learner_session") == self.loop.session and meta.get("version") == version:
            return pack({"unchanged": True, "version": version, "step": step, "session": self.loop.session})
        return body

    def _status(self, meta: dict, arrays: dict, context) -> bytes:
        return pack(
            {**self.loop.status(), "spec": self.spec_meta, "max_message_bytes": self.config.max_message_bytes}
        )
