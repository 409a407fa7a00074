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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import http
import ipaddress
import json
import logging
import math
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_policy.serving import codec
from robot_policy.serving.protocol import (
    OPTION_NAMES,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    ProtocolError,
    RequestError,
    decode_observation,
    decode_options,
    observation_specs,
)

log = logging.getLogger(__name__)

API_KEY_ENV = "ROBOT_POLICY_API_KEY"
"""Environment variable holding the shared key (server and client), so it is not on a command line."""


@dataclass(frozen=True)
class ServerConfig:
    """How the policy server listens and bounds its work."""

    host: str = "127.0.0.1"
    """Interface to listen on; anything but a loopback address requires ``api_key``."""
    port: int = 8000
    """TCP port (0: any free port, see ``PolicyServer.port``)."""
    api_key: str = field(default="", repr=False)
    """Shared key clients send as ``Authorization: Api-Key KEY`` ('' = none: localhost only)."""
    certfile: str = ""
    """PEM certificate (chain): serve TLS (wss://, https:// health checks)."""
    keyfile: str = ""
    """PEM private key of ``certfile`` ('' = in the certificate file)."""
    max_message_bytes: int = 0
    """Largest incoming message; larger ones close the connection (1009). 0: twice the largest
    valid request (observations + prior), at least 1 MiB."""
    queue_size: int = 4
    """Requests waiting or running at once over all clients; one more is answered 'busy'."""
    deadline_ms: float = 1000.0
    """A request not answered this long after it arrived is answered 'deadline' instead
    (clients may ask for less with ``options.deadline_ms``)."""
    max_connections: int = 32
    """Open websocket connections at once; more get HTTP 503."""
    ping_interval_s: float = 10.0
    """Keepalive ping period: a vanished client is dropped after about twice this."""

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServerConfig.port must be in [0, 65535], got {self.port}")
        for name in ("queue_size", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_message_bytes < 0:
            raise ValueError(f"ServerConfig.max_message_bytes must be >= 0, got {self.max_message_bytes}")
        if not self.deadline_ms > 0:
            raise ValueError(f"ServerConfig.deadline_ms must be > 0, got {self.deadline_ms}")
        if self.keyfile and not self.certfile:
            raise ValueError("ServerConfig.keyfile given without certfile: pass --certfile too")
        if not self.api_key and not is_loopback(self.host):
            raise ValueError(
                f"ServerConfig.host={self.host!r} listens beyond this machine, so a shared key is required: "
                f"pass --api-key KEY or set {API_KEY_ENV} (clients send 'Authorization: Api-Key KEY'); "
                "or listen on 127.0.0.1 and tunnel (ssh -L)"
            )

    @property
    def tls(self) -> bool:
        return bool(self.certfile)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine ('' and 0.0.0.0 do not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname other than localhost: may resolve to anything


@dataclass
class ServerStats:
    """Counters for logs, the bench and tests (event-loop thread writes, anyone reads)."""

    connections: int = 0
    """Open websocket connections now."""
    connections_total: int = 0
    requests: int = 0
    replies: int = 0
    errors: dict = field(default_factory=dict)
    """Error replies by code."""
    auth_failures: int = 0
    oversized: int = 0
    skipped_closed: int = 0
    """Queued requests skipped because their client had gone."""
    infer_ms: deque = field(default_factory=lambda: deque(maxlen=1000))
    queue_ms: deque = field(default_factory=lambda: deque(maxlen=1000))


class _Skipped(Exception):
    """The request's connection closed while it waited: nobody to answer."""


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


def describe(predictor, name: str = "") -> dict:
    """The metadata frame of ``predictor`` (a ``Policy`` or an ``InferenceEngine``)."""
    import robot_policy

    cfg = predictor.config
    n_obs = int(cfg.n_obs_steps)
    keys = [*cfg.obs_keys, *cfg.image_keys]
    obs = {}
    for k in keys:
        image = k in cfg.image_keys
        obs[k] = {
            "shape": [n_obs, *map(int, cfg.obs_shapes[k])],
            "dtype": "uint8" if image else "float32",
            "image": image,
        }
    policy = getattr(predictor, "policy", predictor)
    stats = getattr(policy, "stats", {}) or {}
    normalization = {
        k: {
            s: np.asarray(v, np.float32).reshape(-1)
            for s, v in d.items()
            if s in ("min", "max", "mean", "std")
        }
        for k, d in stats.items()
    }
    report = _json_safe(getattr(predictor, "report", {}) or {})
    engine_cfg = getattr(predictor, "cfg", None)
    warm = getattr(engine_cfg, "warm_start", None)
    family_cfg = getattr(cfg, cfg.family, None)
    default_sampler = getattr(family_cfg, "sampler", None) or getattr(family_cfg, "integrator", None)
    num_params = sum(int(p.numel()) for p in policy.parameters()) if hasattr(policy, "parameters") else None
    return {
        "protocol": {
            "name": PROTOCOL_NAME,
            "version": PROTOCOL_VERSION,
            "codec": "msgpack-numpy",
            "server": f"robot_policy {robot_policy.__version__}",
            "options": list(OPTION_NAMES),
        },
        "observation": obs,
        "action": {
            "dim": int(cfg.action_dim),
            "horizon": int(cfg.horizon) - n_obs + 1,
            "fps": float(cfg.fps),
            "key": cfg.action_key,
            "dtype": "float32",
            "n_action_steps": int(cfg.n_action_steps),
        },
        "model": {
            "name": name,
            "family": cfg.family,
            "n_obs_steps": n_obs,
            "horizon": int(cfg.horizon),
            "backbone": getattr(cfg, "backbone", ""),
            "parameters": num_params,
        },
        "sampler": {
            "name": getattr(predictor, "sampler", None) or default_sampler or cfg.family,
            "num_steps": int(
                getattr(predictor, "num_steps", 0) or getattr(family_cfg, "num_inference_steps", 0)
            ),
            "warm_start": {"run_steps": int(warm.run_steps), "schedule_steps": int(warm.schedule_steps)}
            if warm is not None
            else None,
            "device": report.get("device", "cpu"),
            "precision": report.get("precision", "fp32"),
        },
        "normalization": normalization,
        "engine": report,
    }


FALLBACK_LIMIT = 64 * 2**20
"""Transport limit while the model (so the request size) is unknown: a loader without
``max_message_bytes``; the exact limit is then checked on every message."""


def message_limit(cfg) -> int:
    """Default ``max_message_bytes`` for a policy config: twice the largest valid request
    (every observation array plus a full prior and its weights), at least 1 MiB."""
    n_obs = int(cfg.n_obs_steps)
    n = 4096
    for k in [*cfg.obs_keys, *cfg.image_keys]:
        item = 1 if k in cfg.image_keys else 8  # float64 state is accepted (cast to float32)
        n += n_obs * math.prod(int(d) for d in cfg.obs_shapes[k]) * item + 128
    chunk = int(cfg.horizon) - n_obs + 1
    n += chunk * int(cfg.action_dim) * 8 + chunk * 8 + 512
    return max(2**20, 2 * n)


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
