"""The actor side: an env loop that never waits on the network, and a link thread that does.

:class:`ActorLink` owns the :class:`~robot_policy.hil.rpc.client.LearnerClient` in a background
thread: it sends the outbox in order (resends keep their sequence numbers, the learner drops
duplicates), polls for new weights every ``pull_every_s`` and backs off while the learner is
unreachable. The control loop only appends transitions and, between steps, swaps in the newest
weights, so a learner that is down, restarting or slow never stalls the robot; a learner that
stays away longer than the outbox's bound loses the oldest batches (counted in the summary).

:func:`run_actor` is that control loop for any :class:`TransitionSource` (the simulated
tabletop with the scripted human, or another env) and :class:`ActorPolicy` (the SAC actor).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc
import numpy as np

from robot_policy.hil.rpc.client import LearnerClient, Outbox, retryable
from robot_policy.hil.rpc.config import ActorConfig, ClientConfig

log = logging.getLogger(__name__)


class ActorPolicy(Protocol):
    """What the actor needs from a policy: act, and take new weights from the learner."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...

    def load_weights(self, weights: dict[str, np.ndarray]) -> None: ...


class TransitionSource(Protocol):
    """Steps an environment with a policy (and a human who may take over)."""

    def step(self, policy: ActorPolicy) -> tuple[list[dict[str, np.ndarray]], dict[str, Any] | None]:
        """One env step: the transitions it completed (arrays without a leading dim; a source
        may hold one back a step) and, if an episode just ended, its summary (``success``,
        ``return``, ``steps``, ``intervention_steps``, ...)."""
        ...


class ActorLink:
    """Background thread: outbox -> learner, learner weights -> a slot the control loop reads."""

    def __init__(self, client_config: ClientConfig, max_pending_batches: int, pull_every_s: float):
        self.client = LearnerClient(client_config)
        self.outbox = Outbox(max_pending_batches)
        self.pull_every_s = pull_every_s
        self.version = 0
        self.learner_session: str | None = None
        self.weight_failures = 0
        self._new: tuple[int, dict[str, np.ndarray]] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="actor-link", daemon=True)
        self.fatal: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def put(self, transitions: dict[str, np.ndarray]) -> None:
        self.outbox.put(transitions)
        self._wake.set()

    def take_weights(self) -> tuple[str, int, int, dict[str, np.ndarray]] | None:
        """``(learner session, version, learner step, arrays)`` of the newest weights received
        since the last call (``None`` if nothing new)."""
        with self._lock:
            new, self._new = self._new, None
        return new

    def _pull(self) -> None:
        try:
            meta, arrays = self.client.weights(self.version, self.learner_session)
        except grpc.RpcError as e:
            if not retryable(e):
                raise
            self.weight_failures += 1
            return
        if meta.get("unchanged") or not arrays:
            return
        with self._lock:
            self.version, self.learner_session = int(meta["version"]), str(meta["session"])
            self._new = (self.learner_session, self.version, int(meta["step"]), arrays)

    def _run(self) -> None:
        next_pull = 0.0
        try:
            while not self._stop.is_set():
                self.outbox.flush(self.client)
                if time.monotonic() >= next_pull:
                    self._pull()
                    next_pull = time.monotonic() + self.pull_every_s
                self._wake.wait(0.05)
                self._wake.clear()
        except BaseException as e:  # a non-retryable error (wrong token, refused payload): surfaced
            log.error("actor link stopped: %s", e)
            self.fatal = e

    def close(self, flush_s: float) -> None:
        """Stop polling; keep delivering the outbox for up to ``flush_s`` seconds."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        end = time.monotonic() + flush_s
        while self.fatal is None and len(self.outbox) and time.monotonic() < end:
            self.outbox.retry_now()
            try:
                self.outbox.flush(self.client)
            except grpc.RpcError as e:
                self.fatal = e
            if len(self.outbox):
                time.sleep(0.2)
        self.client.close()


def _stack(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(t[k]) for t in items]) for k in items[0]}


def run_actor(
    source: TransitionSource,
    policy: ActorPolicy,
    client_config: ClientConfig,
    config: ActorConfig,
    should_stop: Callable[[], bool] = lambda: False,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
    on_weights: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the control loop until ``config.steps`` or ``should_stop()``; returns a summary.

    ``on_episode(summary)`` is called at each episode end, ``on_weights(learner session,
    version, learner step)`` after new weights were loaded.
    """
    link = ActorLink(client_config, config.max_pending_batches, config.pull_every_s)
    link.start()
    deadline = time.monotonic() + config.wait_for_weights_s
    while config.wait_for_weights_s > 0 and link.version == 0 and link.fatal is None:
        if time.monotonic() > deadline or should_stop():
            break
        time.sleep(0.05)
    weights_loaded: list[list] = []  # [learner session, version, learner step]
    episodes: list[dict[str, Any]] = []
    pending: list[dict[str, np.ndarray]] = []
    step = 0
    t0 = time.monotonic()
    period = 1.0 / config.rate_hz if config.rate_hz > 0 else 0.0
    next_tick = t0
    try:
        while (not config.steps or step < config.steps) and not should_stop():
            if period:  # pace like a robot's control loop (a fixed grid: no drift) ...
                next_tick = max(next_tick + period, time.monotonic() - period)  # ... and no catch-up burst
                time.sleep(max(0.0, next_tick - time.monotonic()))
            if link.fatal is not None:
                raise link.fatal
            new = link.take_weights()
            if new is not None:
                policy.load_weights(new[3])
                weights_loaded.append(list(new[:3]))
                if on_weights is not None:
                    on_weights(*new[:3])
            transitions, episode = source.step(policy)
            pending.extend(transitions)
            step += 1
            if pending and (len(pending) >= config.push_every or episode is not None):
                link.put(_stack(pending))
                pending = []
            if episode is not None:
                episodes.append({**episode, "step": step, "version": link.version})
                if on_episode is not None:
                    on_episode(episodes[-1])
    finally:
        if pending:
            link.put(_stack(pending))
        link.close(config.final_flush_s)
    if link.fatal is not None:
        raise link.fatal
    out = link.outbox
    return {
        "steps": step,
        "seconds": time.monotonic() - t0,
        "episodes": episodes,
        "weights_loaded": weights_loaded,
        "sent_transitions": out.sent_transitions,
        "unsent_batches": len(out),
        "dropped_transitions": out.dropped_transitions,
        "push_failures": out.failures,
        "weight_failures": link.weight_failures,
    }
