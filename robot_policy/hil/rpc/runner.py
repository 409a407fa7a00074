"""Process glue: run a learner until SIGINT/SIGTERM (checkpointing on the way out), check an
actor against a learner before it starts pushing.

Both functions print one status line every few seconds and a summary at the end; the learner
prints ``listening on HOST:PORT`` first (and writes the port to ``port_file``), so a script or
test that asked for port 0 can find it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from robot_policy.hil.rpc.client import LearnerClient
from robot_policy.hil.rpc.learner import Learner, LearnerLoop, LearnerLoopConfig
from robot_policy.hil.rpc.service import LearnerServer, ServerConfig


def spec_to_meta(spec: dict[str, tuple[tuple[int, ...], str]] | None) -> dict[str, Any] | None:
    """A transition spec in a msgpack/JSON-friendly form."""
    return None if spec is None else {k: {"shape": list(s), "dtype": d} for k, (s, d) in spec.items()}


def run_learner(
    learner: Learner,
    loop_config: LearnerLoopConfig,
    server_config: ServerConfig,
    resume: bool = False,
    info: dict[str, Any] | None = None,
    status_every_s: float = 10.0,
    port_file: str | None = None,
) -> int:
    """Serve ``learner`` until a signal (or ``max_steps``); returns the process exit code."""
    loop = LearnerLoop(learner, loop_config)
    if resume:
        if loop.resume():
            print(f"resumed from {loop.last_checkpoint}: step {loop.step}, buffers {learner.buffer_sizes()}")
        else:
            print(f"--resume: no checkpoint in {loop_config.checkpoint_dir} yet, starting fresh")
    spec = {**(info or {}), "transitions": spec_to_meta(learner.transition_spec)}
    server = LearnerServer(loop, server_config, spec)
    stop = threading.Event()

    def on_signal(signum, frame):
        print(f"received {signal.Signals(signum).name}: checkpointing and stopping", flush=True)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        loop.start()
        host = server_config.address.rsplit(":", 1)[0]
        print(f"listening on {host}:{server.port} (session {loop.session})", flush=True)
        if port_file:
            tmp = Path(f"{port_file}.tmp")
            tmp.write_text(str(server.port))
            tmp.replace(port_file)
        while not stop.is_set() and loop.running:
            if stop.wait(status_every_s):
                break
            s = loop.status()
            print(
                f"step {s['step']}  version {s['version']}  transitions {s['transitions']}  "
                f"buffers {s['buffers']}  queue {s['queue']}/{s['queue_size']}  "
                f"{s['updates_per_s']} updates/s  actors {len(s['actors'])}",
                flush=True,
            )
    finally:
        server.stop(grace=1.0)  # no new pushes are acknowledged after this ...
        folder = loop.stop(checkpoint=True)  # ... so everything acknowledged is in the checkpoint
        for s, handler in previous.items():
            signal.signal(s, handler)
    status = loop.status()
    print(
        f"learner stopped at step {status['step']} (version {status['version']}, "
        f"{status['transitions']} transitions received, buffers {status['buffers']})"
        + (f"; checkpoint {folder}" if folder else "")
    )
    if loop.error is not None:
        print(f"error: the learner loop failed: {status['error']}")
        return 1
    return 0


def wait_for_learner(client: LearnerClient, wait_s: float) -> dict[str, Any] | None:
    """The learner's status once it answers (``None`` if it did not within ``wait_s``).

    Refusals that retrying cannot fix (a wrong token) propagate as ``grpc.RpcError``.
    """
    end = time.monotonic() + wait_s
    while True:
        try:
            return client.status()
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            if time.monotonic() > end:
                return None
            time.sleep(0.5)


def check_transitions_match(status: dict[str, Any], spec: dict | None) -> None:
    """Raise ``ValueError`` when the learner expects other transitions than this actor produces
    (other task, observation keys or action size): a mismatch fails at start with both layouts
    named, not as refused pushes later."""
    theirs = (status.get("spec") or {}).get("transitions")
    ours = spec_to_meta(spec)
    if theirs is not None and ours is not None and theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise ValueError(
            "the learner expects other transitions than this actor produces (same --task and options on "
            f"both sides?); differing keys: {diff}\n  learner: {json.dumps({k: theirs.get(k) for k in diff})}"
            f"\n  actor:   {json.dumps({k: ours.get(k) for k in diff})}"
        )
