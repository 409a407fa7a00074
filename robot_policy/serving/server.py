"""The policy server: any ``Predictor`` (normally the ``InferenceEngine``) over websockets,
speaking openpi's protocol (``robot_policy.serving.protocol``).

What it guarantees, and how:

* **the event loop never runs inference**: requests go to one inference thread per model
  (``ThreadPoolExecutor(max_workers=1)``), so connections, pings and health checks stay
  responsive while the model computes;
* **bounded waiting**: at most ``queue_size`` requests wait or run at once, over all clients
  (one more is answered ``busy:`` at once); each request has a deadline (``deadline_ms``, or
  the client's tighter one) checked before it runs and after; a request whose connection
  closed while it waited is skipped. A client that misbehaves therefore delays the others by
  at most the one inference it already started;
* **readiness**: ``/healthz`` answers 200 while the process serves (liveness, as openpi's);
  ``/readyz`` answers 503 until the model is loaded and warmed up, then 200. Websocket
  clients that connect during warm-up get the metadata frame when it is done;
* **security defaults**: listens on 127.0.0.1; a shared key (``Authorization: Api-Key KEY``,
  as openpi's client sends it, or ``Bearer KEY``) is required to listen anywhere else and is
  checked in constant time before the websocket opens (401 otherwise); TLS with a certificate;
  incoming messages above ``max_message_bytes`` close the connection (1009); decoding accepts
  numeric arrays of the metadata's shapes only (``codec``, ``protocol``); no pickle;
* **clean shutdown**: ``stop()`` (or SIGINT/SIGTERM under ``run()``) closes connections with
  1001 (going away), lets the running inference finish and joins the thread. Clients
  reconnect on their own (``RemotePolicy``).

Errors are text frames (openpi's convention), ``"<code>: <message>"``; the traceback of an
internal error goes to the server log, not to the client.

``ServerConfig`` and ``ServerStats`` live in ``server_config``, the metadata frame and message
limits (``describe``, ``message_limit``) in ``server_metadata``; both are re-exported here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import http
import json
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robot_policy.serving import codec
from robot_policy.serving.protocol import (
    ProtocolError,
    RequestError,
    decode_observation,
    decode_options,
    observation_specs,
)
from robot_policy.serving.server_config import API_KEY_ENV, ServerConfig, ServerStats, is_loopback
from robot_policy.serving.server_metadata import FALLBACK_LIMIT, describe, message_limit

__all__ = [
    "API_KEY_ENV",
    "FALLBACK_LIMIT",
    "PolicyServer",
    "ServerConfig",
    "ServerStats",
    "describe",
    "is_loopback",
    "message_limit",
]

log = logging.getLogger(__name__)


class _Skipped(Exception):
    """The request's connection closed while it waited: nobody to answer."""


class PolicyServer:
    """Serve a predictor over websockets. ``predictor`` may be a zero-argument loader, called in
    the inference thread after the server started listening (readiness fails until it returns).

    Use ``run()`` in a command (blocks, stops on SIGINT/SIGTERM) or ``start()`` / ``stop()``
    (own thread; tests, benchmarks)."""

    def __init__(self, predictor: Any | Callable[[], Any], cfg: ServerConfig | None = None, name: str = ""):
        self.cfg = cfg or ServerConfig()
        self._source = predictor
        self.name = name
        self.predictor = None
        self.metadata: dict | None = None
        self.stats = ServerStats()
        self.port: int | None = None
        self.load_error: str | None = None
        self._max_bytes = 0
        self._metadata_frame = b""
        self._specs: dict = {}
        self._pending = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._ready = threading.Event()
        self._ready_async: asyncio.Event | None = None
        self._stop_async: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------------ properties
    @property
    def ready(self) -> bool:
        """Model loaded and warmed up: requests are served."""
        return self._ready.is_set() and self.load_error is None

    @property
    def url(self) -> str:
        host = self.cfg.host if self.cfg.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'wss' if self.cfg.tls else 'ws'}://{host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def _load(self) -> None:
        src = self._source
        predictor = src if hasattr(src, "predict") else src()
        metadata = describe(predictor, self.name)
        specs = observation_specs(metadata)
        if "options" in specs:
            raise ValueError("the policy has an observation key 'options', which the protocol reserves")
        self._max_bytes = self.cfg.max_message_bytes or message_limit(predictor.config)
        metadata["limits"] = {
            "max_message_bytes": self._max_bytes,
            "queue_size": self.cfg.queue_size,
            "deadline_ms": self.cfg.deadline_ms,
        }
        self.predictor, self.metadata, self._specs = predictor, metadata, specs
        self._metadata_frame = codec.packb(metadata)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.cfg.tls:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cfg.certfile, self.cfg.keyfile or None)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(
                f"TLS: cannot load certificate {self.cfg.certfile!r} / key {self.cfg.keyfile!r}: {e}"
            ) from None
        return ctx

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Listen, load the model, serve until ``stop`` is set (or ``self.stop()``)."""
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._ready_async = asyncio.Event()
        self._stop_async = stop or asyncio.Event()
        if self.cfg.api_key and not self.cfg.tls and not is_loopback(self.cfg.host):
            log.warning(
                "serving on %s without TLS: the API key and observations travel in clear text; "
                "pass --certfile/--keyfile on untrusted networks",
                self.cfg.host,
            )
        if hasattr(self._source, "predict"):
            self._load()  # a ready predictor: metadata and the exact size limit before listening
        transport_limit = self.cfg.max_message_bytes or self._max_bytes or FALLBACK_LIMIT
        async with serve(
            self._handler,
            self.cfg.host,
            self.cfg.port,
            compression=None,
            process_request=self._process_request,
            max_size=transport_limit,
            max_queue=4,
            ping_interval=self.cfg.ping_interval_s,
            ping_timeout=self.cfg.ping_interval_s,
            close_timeout=2.0,
            ssl=self._ssl_context(),
            server_header=None,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("policy server listening on %s (readiness: %s/readyz)", self.url, self.url)
            self._listening.set()
            try:
                if self.predictor is None:
                    await self._loop.run_in_executor(self._executor, self._load)
            except Exception as e:  # noqa: BLE001 - reported to the caller and on /readyz
                self.load_error = f"{type(e).__name__}: {e}"
                log.error("could not load the model: %s", self.load_error)
                self._ready.set()
                self._ready_async.set()
                raise
            log.info(
                "ready: %s %s, inputs %s, %d actions x %d at %g Hz, max message %d bytes, queue %d, deadline %g ms",
                self.metadata["model"]["family"],
                self.name,
                {k: v["shape"] for k, v in self.metadata["observation"].items()},
                self.metadata["action"]["horizon"],
                self.metadata["action"]["dim"],
                self.metadata["action"]["fps"],
                self._max_bytes,
                self.cfg.queue_size,
                self.cfg.deadline_ms,
            )
            self._ready.set()
            self._ready_async.set()
            await self._stop_async.wait()
            log.info("shutting down: closing %d connection(s)", self.stats.connections)
            server.close()  # 1001 going away to every client
            await server.wait_closed()
        await self._loop.run_in_executor(None, self._executor.shutdown, True)

    def run(self) -> int:
        """Serve in this thread until SIGINT/SIGTERM; returns an exit code."""
        import signal

        async def main():
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(stop)

        try:
            asyncio.run(main())
        except Exception as e:
            if self.load_error is None:
                raise
            log.error("%s", e)
            return 1
        return 0

    def start(self, timeout: float = 600.0, wait_ready: bool = True) -> PolicyServer:
        """Serve in a background thread; returns once listening (and ready, by default)."""

        def target():
            try:
                asyncio.run(self.serve())
            except BaseException as e:  # noqa: BLE001 - surfaced by start()
                self._startup_error = e
                self._listening.set()
                self._ready.set()

        self._thread = threading.Thread(target=target, name="policy-server", daemon=True)
        self._thread.start()
        if not self._listening.wait(timeout):
            raise TimeoutError(f"policy server did not start listening within {timeout} s")
        if wait_ready and not self._ready.wait(timeout):
            raise TimeoutError(f"policy server model not ready within {timeout} s")
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection (1001), finish the running inference, stop listening."""
        loop, stop = self._loop, self._stop_async
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # loop already finished
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ HTTP side
    def _process_request(self, connection, request):
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if path == "/readyz":
            if self.ready:
                return connection.respond(http.HTTPStatus.OK, "ready\n")
            why = self.load_error or "warming up the model"
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {why}\n")
        if path != "/":
            return connection.respond(
                http.HTTPStatus.NOT_FOUND,
                "not found: the websocket is at /, health at /healthz and /readyz\n",
            )
        if self.cfg.api_key:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            ok = scheme.lower() in ("api-key", "bearer") and hmac.compare_digest(
                token.strip().encode(), self.cfg.api_key.encode()
            )
            if not ok:
                self.stats.auth_failures += 1
                log.warning("rejected %s: missing or wrong API key", connection.remote_address)
                return connection.respond(
                    http.HTTPStatus.UNAUTHORIZED,
                    "unauthorized: send the server's key as 'Authorization: Api-Key KEY'\n",
                )
        if self.stats.connections >= self.cfg.max_connections:
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many connections ({self.cfg.max_connections}); retry later\n",
            )
        return None

    # ------------------------------------------------------------------ websocket side
    async def _handler(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        self.stats.connections += 1
        self.stats.connections_total += 1
        peer = ws.remote_address
        log.info("connection from %s", peer)
        try:
            await self._ready_async.wait()
            if self.load_error is not None:
                await ws.send(f"unavailable: the model failed to load: {self.load_error}")
                await ws.close(1011, "model failed to load")
                return
            await ws.send(self._metadata_frame)
            prev_total_ms = None
            while True:
                message = await ws.recv()
                t0 = time.perf_counter()
                self.stats.requests += 1
                if len(message) > self._max_bytes:  # the transport's limit may be the looser fallback
                    self.stats.oversized += 1
                    log.warning("closed %s: message of %d bytes over %d", peer, len(message), self._max_bytes)
                    await ws.close(1009, f"message over {self._max_bytes} bytes")
                    return
                try:
                    reply = await self._serve_one(ws, message, t0, prev_total_ms)
                except _Skipped:
                    self.stats.skipped_closed += 1
                    continue
                except RequestError as e:
                    self.stats.errors[e.code] = self.stats.errors.get(e.code, 0) + 1
                    await ws.send(e.frame())
                    continue
                await ws.send(reply)
                self.stats.replies += 1
                prev_total_ms = (time.perf_counter() - t0) * 1e3
        except ConnectionClosed as e:
            if e.sent is not None and e.sent.code == 1009:
                self.stats.oversized += 1
                log.warning("closed %s: message over %d bytes", peer, self._max_bytes)
            elif e.rcvd is None and e.sent is None:
                log.info("connection from %s lost", peer)
        finally:
            self.stats.connections -= 1
            log.info("connection from %s closed", peer)

    async def _serve_one(self, ws, message, t0: float, prev_total_ms: float | None) -> bytes:
        if isinstance(message, str):
            raise RequestError(
                "bad_request", "text frame received: send the observation as a binary msgpack-numpy frame"
            )
        try:
            msg = codec.unpackb(message)
            obs = decode_observation(msg, self._specs)
            act = self.metadata["action"]
            opts = decode_options(msg, act["dim"], act["horizon"], act["fps"])
        except (codec.CodecError, ProtocolError) as e:
            raise RequestError("bad_request", str(e)) from None
        t_decoded = time.perf_counter()
        if self._pending >= self.cfg.queue_size:
            raise RequestError(
                "busy",
                f"{self._pending} requests already waiting or running (queue_size {self.cfg.queue_size}); "
                "retry after the current inference",
            )
        deadline_ms = min(self.cfg.deadline_ms, opts.deadline_ms or math.inf)
        self._pending += 1
        try:
            actions, t_start, t_end = await self._loop.run_in_executor(
                self._executor, self._infer, ws, obs, opts, t0, t0 + deadline_ms / 1e3, deadline_ms
            )
        finally:
            self._pending -= 1
        queue_ms, infer_ms = (t_start - t_decoded) * 1e3, (t_end - t_start) * 1e3
        self.stats.infer_ms.append(infer_ms)
        self.stats.queue_ms.append(queue_ms)
        reply: dict = {
            "actions": actions,
            "policy_timing": {"infer_ms": infer_ms},
            "server_timing": {
                "decode_ms": (t_decoded - t0) * 1e3,
                "queue_ms": queue_ms,
                "infer_ms": infer_ms,
            },
        }
        if opts.id is not None:
            reply["id"] = opts.id
        if prev_total_ms is not None:
            reply["server_timing"]["prev_total_ms"] = prev_total_ms
        reply["server_timing"]["total_ms"] = (time.perf_counter() - t0) * 1e3
        return codec.packb(reply)

    def _infer(self, ws, obs, opts, t0: float, deadline: float, deadline_ms: float):
        """In the inference thread: skip what nobody waits for, refuse what is already late."""
        from websockets.protocol import State

        t_start = time.perf_counter()
        if ws.state is not State.OPEN:
            raise _Skipped()
        if t_start > deadline:
            raise RequestError(
                "deadline",
                f"request waited {(t_start - t0) * 1e3:.0f} ms for the model, past its deadline of "
                f"{deadline_ms:.0f} ms (server overloaded: fewer clients, or raise --deadline-ms)",
            )
        try:
            chunk = self.predictor.predict(obs, prior=opts.prior, start_time=0.0, num_steps=opts.num_steps)
        except (ValueError, KeyError) as e:
            raise RequestError("bad_request", f"{type(e).__name__}: {e}") from None
        except Exception as e:
            log.exception("inference failed")
            raise RequestError("internal", f"inference failed: {type(e).__name__}: {e}") from None
        t_end = time.perf_counter()
        if t_end > deadline:
            raise RequestError(
                "deadline",
                f"answer ready {(t_end - t0) * 1e3:.0f} ms after the request (inference "
                f"{(t_end - t_start) * 1e3:.0f} ms), past its deadline of {deadline_ms:.0f} ms: "
                "a faster model or device, fewer sampler steps, or a larger --deadline-ms",
            )
        return np.ascontiguousarray(chunk.actions, dtype=np.float32), t_start, t_end

    # ------------------------------------------------------------------ reporting
    def summary(self) -> dict:
        """Counters and recent timings (JSON-ready)."""
        s = self.stats

        def pct(d, q):
            return float(np.percentile(list(d), q)) if d else None

        return {
            "url": self.url,
            "ready": self.ready,
            "connections": s.connections,
            "connections_total": s.connections_total,
            "requests": s.requests,
            "replies": s.replies,
            "errors": dict(s.errors),
            "auth_failures": s.auth_failures,
            "oversized": s.oversized,
            "skipped_closed": s.skipped_closed,
            "infer_ms_p50": pct(s.infer_ms, 50),
            "queue_ms_p50": pct(s.queue_ms, 50),
        }

    def __repr__(self) -> str:
        return f"PolicyServer({json.dumps(self.summary())})"
