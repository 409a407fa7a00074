"""``RemotePolicy``: a policy served elsewhere, as a ``Predictor`` (no torch import).

    policy = RemotePolicy("ws://gpu-box:8000", api_key=os.environ["ROBOT_POLICY_API_KEY"])
    chunk = policy.predict(obs_history, prior=plan, start_time=t)   # ActionChunk, as locally

It speaks openpi's websocket protocol (``robot_policy.serving.protocol``), so it also calls an
openpi server (e.g. a pi0 model): such a server does not describe its inputs, so pass
``spec={"observation": {key: {"shape", "dtype"}}, "action": {"dim", "horizon", "fps"}}``.

Behaviour the policy node relies on:

* **same interface as a local policy**: ``config`` (keys, shapes, horizon, fps from the
  server's metadata), ``predict(obs, prior, start_time, num_steps)``, ``reset``; the
  scheduled plan travels as ``options.prior`` so warm start and real-time chunking run on the
  server as they would locally;
* **stages**: after each call ``last_stages`` holds ``network`` (round trip minus the server's
  own time), ``server_queue``, ``server_infer`` and ``codec`` milliseconds; the policy runner
  reports them as separate latency stages;
* **failure is fast and loud**: a lost connection, a timeout or an error frame raises
  (``ServerUnavailable``, ``ServerError``); while the server is away, calls fail at once until
  the next reconnection attempt (every ``retry_s``), so a control loop never blocks on a dead
  server; on reconnection the server must describe the same inputs and actions, or calls
  fail naming the difference (a restarted server serving another model must not drive this robot).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Mapping

import numpy as np

from robot_policy.serving import codec
from robot_policy.serving.protocol import (
    OPTIONS_KEY,
    ProtocolError,
    RemoteConfig,
    encode_options,
    interface,
    observation_specs,
    parse_error,
    remote_config,
)
from robot_policy.types import ActionChunk

log = logging.getLogger(__name__)

API_KEY_ENV = "ROBOT_POLICY_API_KEY"
CA_FILE_ENV = "ROBOT_POLICY_CA_FILE"
MAX_REPLY_BYTES = 64 * 2**20
"""Largest reply (or metadata) accepted from a server; a chunk of actions is a few kB."""


class ServerUnavailable(ConnectionError):
    """No connection to the policy server (refused, lost, timed out, or waiting to retry)."""


class ServerError(RuntimeError):
    """The server answered a request with an error frame (``code``: bad_request, busy,
    deadline, internal, unavailable). A ``RuntimeError``, as openpi's client raises."""

    def __init__(self, code: str, message: str):
        super().__init__(f"policy server: {code}: {message}")
        self.code = code


class RemotePolicy:
    """A ``Predictor`` whose model runs on a policy server (``robot-policy serve`` or openpi's)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        spec: Mapping | None = None,
        wait_s: float | None = 30.0,
        timeout_s: float | None = None,
        connect_timeout_s: float = 3.0,
        retry_s: float = 1.0,
        cafile: str | None = None,
    ):
        """Connect and read the metadata.

        ``url``: ``ws://HOST:PORT`` or ``wss://...`` (TLS; ``cafile`` or ``ROBOT_POLICY_CA_FILE``
        names a CA bundle for a self-signed certificate). ``api_key``: default
        ``ROBOT_POLICY_API_KEY``. ``spec``: metadata entries to add or override (for servers
        that do not describe their inputs). ``wait_s``: how long to wait for the server at
        start (None: forever). ``timeout_s``: longest wait for a reply (default: the server's
        deadline + 2 s, or 10 s). ``retry_s``: pause between reconnection attempts.
        """
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"policy server URL must start with ws:// or wss://, got {url!r}")
        self.url = url
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        self._spec = dict(spec or {})
        self._connect_timeout = float(connect_timeout_s)
        self._retry_s = float(retry_s)
        self._cafile = cafile or os.environ.get(CA_FILE_ENV) or None
        self._lock = threading.Lock()
        self._ws = None
        self._next_attempt = 0.0
        self.last_error = ""
        self.reconnects = 0
        self.calls = 0
        self.failures = 0
        self.last_stages: dict[str, float] = {}
        self.last_timing: dict = {}
        self.metadata: dict = {}
        self._interface: dict | None = None
        self._connect_initial(wait_s)
        limits = self.metadata.get("limits") or {}
        self.timeout_s = (
            float(timeout_s)
            if timeout_s is not None
            else (float(limits["deadline_ms"]) / 1e3 + 2.0 if "deadline_ms" in limits else 10.0)
        )

    # ------------------------------------------------------------------ connection
    def _ssl(self) -> ssl.SSLContext | None:
        if not self.url.startswith("wss://"):
            return None
        return ssl.create_default_context(cafile=self._cafile)

    def _open(self, metadata_timeout: float | None):
        """One connection attempt: websocket + metadata frame."""
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self._api_key}"} if self._api_key else None
        ws = connect(
            self.url,
            additional_headers=headers,
            compression=None,
            max_size=MAX_REPLY_BYTES,
            open_timeout=self._connect_timeout,
            close_timeout=1.0,
            ssl=self._ssl(),
            proxy=None,
        )
        ws.__enter__()  # closed by _drop(); websockets >= 17.1 warns about bare connections otherwise
        try:
            first = ws.recv(timeout=metadata_timeout)
            if isinstance(first, str):
                code, msg = parse_error(first)
                raise ServerError(code, msg)
            metadata = codec.unpackb(first)
            if not isinstance(metadata, dict):
                raise ProtocolError(f"metadata frame is a {type(metadata).__name__}, not a map")
        except BaseException:
            ws.close()
            raise
        metadata = {**{str(k): v for k, v in metadata.items()}, **self._spec}
        return ws, metadata

    def _adopt(self, ws, metadata: dict) -> None:
        iface = interface(metadata)
        if self._interface is not None and iface != self._interface:
            ws.close()
            raise ProtocolError(
                f"the server at {self.url} now serves a different interface: {iface} "
                f"(was {self._interface}); restart this node to use the new model"
            )
        if self._interface is None:
            self.config: RemoteConfig = remote_config(metadata)
            self._specs = observation_specs(metadata)
            self._interface = iface
            protocol = metadata.get("protocol") if isinstance(metadata.get("protocol"), dict) else {}
            self._options = set(protocol.get("options") or ())
            self._max_bytes = int((metadata.get("limits") or {}).get("max_message_bytes") or 0)
        else:
            self.reconnects += 1
            log.info("reconnected to the policy server at %s", self.url)
        self.metadata = metadata
        self._ws = ws

    def _connect_initial(self, wait_s: float | None) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        t_end = None if wait_s is None else time.monotonic() + wait_s
        last_log = 0.0
        while True:
            remaining = None if t_end is None else t_end - time.monotonic()
            try:
                ws, metadata = self._open(
                    metadata_timeout=remaining if remaining is None else max(remaining, 0.1)
                )
                self._adopt(ws, metadata)
                return
            except InvalidStatus as e:
                status = e.response.status_code
                body = e.response.body.decode("utf-8", "replace").strip()
                self.last_error = f"HTTP {status} {body}"
                if status in (401, 403, 404):  # retrying cannot fix a wrong key or URL
                    raise ServerUnavailable(
                        f"policy server {self.url} refused the connection: {self.last_error}"
                        + (f" (the key comes from api_key or {API_KEY_ENV})" if status == 401 else "")
                    ) from None
            except (OSError, InvalidHandshake) as e:
                self.last_error = f"{type(e).__name__}: {e}"
            if t_end is not None and time.monotonic() >= t_end:
                raise ServerUnavailable(
                    f"no policy server at {self.url} within {wait_s:g} s ({self.last_error}); "
                    "start one with 'robot-policy serve --checkpoint DIR'"
                )
            if time.monotonic() - last_log > 5.0:
                log.info("waiting for the policy server at %s (%s)", self.url, self.last_error)
                last_log = time.monotonic()
            time.sleep(self._retry_s)

    def _drop(self, why: str) -> None:
        ws, self._ws = self._ws, None
        self.last_error = why
        self._next_attempt = time.monotonic() + self._retry_s
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _connection(self):
        if self._ws is not None:
            return self._ws
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise ServerUnavailable(
                f"policy server {self.url} unavailable ({self.last_error}); next attempt in {wait:.1f} s"
            )
        try:
            ws, metadata = self._open(metadata_timeout=self._connect_timeout)
            self._adopt(ws, metadata)
        except Exception as e:
            self._drop(f"{type(e).__name__}: {e}")
            raise ServerUnavailable(f"policy server {self.url} unavailable ({self.last_error})") from None
        return self._ws

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # ------------------------------------------------------------------ Predictor
    def _encode_obs(self, obs: Mapping) -> dict:
        out = {}
        for k, spec in self._specs.items():
            if k not in obs:
                raise KeyError(f"observation is missing key '{k}' (the server expects {sorted(self._specs)})")
            a = np.asarray(obs[k])
            if a.shape != spec.shape and a.shape == (1, *spec.shape):
                a = a[0]  # history of one frame -> the single frame an openpi server takes
            if a.shape != spec.shape:
                raise ValueError(f"obs['{k}'] has shape {a.shape}, the server expects {spec.shape}")
            out[k] = np.ascontiguousarray(a, dtype=spec.dtype)
        return out

    def predict(
        self,
        obs: Mapping,
        prior=None,
        start_time: float = 0.0,
        num_steps: int | None = None,
    ) -> ActionChunk:
        """Observation history ``{key: (n_obs_steps, ...)}`` -> ActionChunk from the current step."""
        t0 = time.perf_counter()
        msg = self._encode_obs(obs)
        if "prior" in self._options:
            opts = encode_options(prior=prior, num_steps=num_steps)
            if opts:
                msg[OPTIONS_KEY] = opts
        payload = codec.packb(msg)
        if self._max_bytes and len(payload) > self._max_bytes:
            raise ValueError(
                f"request of {len(payload)} bytes exceeds the server's max_message_bytes {self._max_bytes}"
            )
        t_encoded = time.perf_counter()
        with self._lock:
            self.calls += 1
            try:
                reply, t_sent, t_received = self._roundtrip(payload)
            except Exception:
                self.failures += 1
                raise
        t_decode = time.perf_counter()
        data = codec.unpackb(reply)
        if not isinstance(data, dict) or not isinstance(data.get("actions"), np.ndarray):
            raise ProtocolError(
                f"reply has no 'actions' array: keys {list(data) if isinstance(data, dict) else data!r}"
            )
        actions = data["actions"]
        chunk_len = self.config.horizon - self.config.n_obs_steps + 1
        if actions.ndim != 2 or actions.shape[1] != self.config.action_dim or actions.dtype.kind != "f":
            raise ProtocolError(
                f"reply 'actions' is {actions.dtype} {actions.shape}, expected float (T, {self.config.action_dim})"
            )
        actions = actions[:chunk_len].astype(np.float32)
        if not np.all(np.isfinite(actions)):
            raise ProtocolError("reply 'actions' contains NaN or inf")
        t_done = time.perf_counter()
        timing = data.get("server_timing") if isinstance(data.get("server_timing"), dict) else {}
        self.last_timing = timing
        rtt_ms = (t_received - t_sent) * 1e3
        server_ms = _number(timing.get("total_ms")) or _number(timing.get("infer_ms")) or 0.0
        self.last_stages = {
            "network": max(0.0, rtt_ms - server_ms),
            "server_queue": _number(timing.get("queue_ms")) or 0.0,
            "server_infer": _number(timing.get("infer_ms")) or 0.0,
            "codec": ((t_encoded - t0) + (t_done - t_decode)) * 1e3,
        }
        return ActionChunk(actions=actions, start_time=start_time, dt=1.0 / self.config.fps)

    def _roundtrip(self, payload: bytes):
        from websockets.exceptions import ConnectionClosed

        ws = self._connection()
        t_sent = time.perf_counter()
        try:
            ws.send(payload)
            reply = ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            # A late reply would answer the wrong request: start over on a new connection.
            self._drop(f"no reply within {self.timeout_s:g} s")
            raise ServerUnavailable(
                f"policy server {self.url}: no reply within {self.timeout_s:g} s"
            ) from None
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            why = {1009: "message too big for the server", 1001: "server shutting down"}.get(code, str(e))
            self._drop(f"connection lost: {why}")
            raise ServerUnavailable(f"policy server {self.url}: connection lost ({why})") from None
        except OSError as e:
            self._drop(f"connection lost: {e}")
            raise ServerUnavailable(f"policy server {self.url}: connection lost ({e})") from None
        t_received = time.perf_counter()
        if isinstance(reply, str):
            code, message = parse_error(reply)
            if "prior" not in self._options:
                self._drop(f"error frame: {code}")  # openpi's server closes after an error
            self.last_error = f"{code}: {message}"[:500]
            raise ServerError(code, message)
        return reply, t_sent, t_received

    def reset(self) -> None:
        """New episode: the server keeps no per-client state (the plan travels with each request)."""

    def close(self) -> None:
        with self._lock:
            self._drop("closed")

    def diagnostics(self) -> dict[str, str]:
        """Key/values the policy node adds to its /diagnostics status."""
        return {
            "server": self.url,
            "server_connected": str(self.connected).lower(),
            "server_reconnects": str(self.reconnects),
            "server_failures": str(self.failures),
            "server_last_error": self.last_error,
        }

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float | np.number):
        return None
    return float(x)
