"""The policy server's settings (``ServerConfig``, with its security checks) and its counters
(``ServerStats``); see ``robot_policy.serving.server``."""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

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
