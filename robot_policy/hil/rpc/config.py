"""Settings of the actor/learner RPC (no grpc/torch import here: the CLI reads these for --help).

Every field is a ``robot-policy hil learner`` / ``robot-policy hil actor`` flag of the same
name (underscores as dashes); its docstring is the flag's help.
"""

from __future__ import annotations

from dataclasses import dataclass

TOKEN_ENV = "ROBOT_POLICY_HIL_TOKEN"
"""Environment variable the CLI reads the token from when ``--token`` is not given."""


def is_loopback(address: str) -> bool:
    """``True`` for ``127.x``, ``localhost`` and ``[::1]`` addresses (no token needed there)."""
    host = address.rsplit(":", 1)[0].strip("[]").lower()
    return host in ("localhost", "::1", "ip6-localhost") or host.startswith("127.")


@dataclass
class LearnerLoopConfig:
    """Learner process settings (``robot-policy hil learner`` flags of the same names)."""

    publish_every: int = 50
    """Learner steps between two weight publishes (HIL-SERL pushes actor weights every 50 steps)."""
    checkpoint_every: int = 1000
    """Learner steps between two checkpoints (0: only on shutdown)."""
    checkpoint_dir: str | None = None
    """Folder of the checkpoints (``None``: no checkpoints)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept on disk."""
    queue_size: int = 64
    """Pushed batches waiting for the training thread; a push beyond it is refused (retry)."""
    queue_mb: float = 512.0
    """Memory the waiting batches may hold (MiB); a push beyond it is refused (retry)."""
    max_updates_per_transition: float = 0.0
    """Cap on learner steps per received transition (0: update continuously once ready)."""
    max_learner_steps: int = 0
    """Stop after this many learner steps (0: run until stopped)."""


@dataclass
class ServerConfig:
    """gRPC server settings of the learner."""

    address: str = "127.0.0.1:50051"
    """host:port to listen on (port 0 picks a free one); a non-loopback address needs a token."""
    token: str | None = None
    """Shared secret every call must carry (default: $ROBOT_POLICY_HIL_TOKEN; prefer the variable,
    a flag is visible in ps)."""
    max_message_mb: float = 64.0
    """Largest request or reply in MiB: gRPC's receive/send limits and the envelope check."""
    max_transitions_per_push: int = 4096
    """Most transitions one push may carry."""
    workers: int = 8
    """gRPC worker threads (a call holds one only while its body is decoded and queued)."""
    max_concurrent_rpcs: int = 64
    """Calls beyond this are refused with RESOURCE_EXHAUSTED instead of queueing without bound."""
    tls_cert: str | None = None
    """PEM certificate chain: serve over TLS (with --tls-key); without, the channel is plaintext."""
    tls_key: str | None = None
    """PEM private key of --tls-cert."""

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)


@dataclass
class ClientConfig:
    """Actor-side connection settings (``robot-policy hil actor`` flags of the same names)."""

    address: str = "127.0.0.1:50051"
    """The learner's ``host:port``."""
    token: str | None = None
    """Shared secret, the learner's (default: $ROBOT_POLICY_HIL_TOKEN; prefer the variable, a flag
    is visible in ps)."""
    deadline_s: float = 5.0
    """Deadline of each call; a call past it fails with DEADLINE_EXCEEDED and is retried later."""
    max_message_mb: float = 64.0
    """Largest request or reply, in MiB (must not exceed the learner's)."""
    actor_id: str = "actor"
    """Name of this actor in the learner's status (one per process; a random session is added)."""
    tls_ca: str | None = None
    """PEM certificate(s) to trust: connect over TLS (the learner's --tls-cert, or its CA)."""


@dataclass
class ActorConfig:
    """``robot-policy hil actor`` loop settings (flags of the same names)."""

    steps: int = 0
    """Environment steps to run (0: until stopped)."""
    rate_hz: float = 0.0
    """Control rate of the simulated actor (0: as fast as the simulation runs); e.g. 20 to step like
    the real robot, so the learner's updates per env step match a deployment."""
    push_every: int = 50
    """Transitions per pushed batch (an episode end also closes a batch)."""
    pull_every_s: float = 0.5
    """Seconds between two weight polls."""
    max_pending_batches: int = 256
    """Batches kept while the learner is unreachable; beyond it the oldest are dropped (counted)."""
    wait_for_weights_s: float = 60.0
    """How long to wait for the learner's first weights before acting (0: act with the initial policy)."""
    final_flush_s: float = 10.0
    """At the end, how long to keep trying to deliver what is still in the outbox."""
