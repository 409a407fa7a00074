"""Actor and learner as separate OS processes over real gRPC on loopback (issue 15, item 4).

The learner and actors are the real CLI processes (``robot-policy hil learner|actor``) with the
real SAC agent (tiny widths) on the simulated tabletop pick task; the test process talks to them
with the real client, or with a raw gRPC channel when it sends what a real client never would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import msgpack
import numpy as np
import pytest

from robot_policy.hil.rpc.client import LearnerClient, Outbox
from robot_policy.hil.rpc.config import ClientConfig
from robot_policy.hil.rpc.service import PUSH, STATUS, TOKEN_HEADER
from robot_policy.hil.rpc.wire import WireError, pack, unpack

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-secret-0123456789"
TINY_AGENT = ["--hidden", "32,32", "--batch-size", "32", "--min-online", "32", "--threads", "1"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env["ROBOT_POLICY_HIL_TOKEN"] = TOKEN
    return env


class Proc:
    """A CLI process with its output in a file (read on failure)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.log_path = log
        self._log = open(log, "w")
        cmd = [sys.executable, "-m", "robot_policy.cli.main", "hil", *args]
        self.popen = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env or _env(), cwd=REPO
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process did not exit within {timeout} s:\n{self.log()[-3000:]}") from None

    def close(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


def wait_until(pred, timeout: float, what: str, proc: Proc | None = None, poll: float = 0.2):
    """Poll ``pred()`` until truthy (exceptions count as not yet); fail naming ``what``."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            raise AssertionError(f"process exited while waiting for {what}:\n{proc.log()[-3000:]}")
        try:
            last = pred()
        except grpc.RpcError as e:
            last = e.code()
        if last:
            return last
        time.sleep(poll)
    tail = f"\n{proc.log()[-3000:]}" if proc else ""
    raise AssertionError(f"timed out waiting for {what} (last value {last!r}){tail}")


def start_learner(tmp: Path, name: str, extra: list[str], port: int = 0) -> tuple[Proc, int]:
    port_file = tmp / f"{name}.port"
    port_file.unlink(missing_ok=True)
    args = ["learner", "--address", f"127.0.0.1:{port}", "--port-file", str(port_file), "--status-every", "2"]
    proc = Proc([*args, *TINY_AGENT, *extra], tmp / f"{name}.log")
    wait_until(port_file.exists, 90, f"learner {name} listening", proc)
    return proc, int(port_file.read_text())


def client(
    port: int, token: str | None = TOKEN, deadline_s: float = 5.0, actor_id: str = "test"
) -> LearnerClient:
    return LearnerClient(
        ClientConfig(address=f"127.0.0.1:{port}", token=token, deadline_s=deadline_s, actor_id=actor_id)
    )


def start_actor(tmp: Path, name: str, port: int, seed: int) -> Proc:
    args = ["actor", "--address", f"127.0.0.1:{port}", "--actor-id", name, "--seed", str(seed)]
    args += ["--episode-seed", str(10_000 + 1000 * seed)]
    args += ["--push-every", "10", "--pull-every-s", "0.2", "--deadline-s", "2", "--threads", "1"]
    # The simulated actor runs faster than real time: room for a learner restart without dropping.
    args += ["--max-pending-batches", "20000"]
    return Proc([*args, "--summary", str(tmp / f"{name}.json")], tmp / f"{name}.log")


def transitions_from(status: dict, actor: str) -> int:
    return status["actors"].get(actor, {}).get("transitions", 0)


def test_actors_and_learner_survive_kills_and_resume(tmp_path):
    """Two actor processes feed one learner; weights come back with rising versions; a SIGKILLed
    actor does not stop the learner or the other actor; a SIGKILLed learner restarted with
    --resume keeps its buffers and step count, and the surviving actor carries on with it."""
    ck = tmp_path / "ck"
    loop_args = [
        "--demos",
        "1",
        "--publish-every",
        "5",
        "--checkpoint-every",
        "20",
        "--checkpoint-dir",
        str(ck),
    ]
    loop_args += ["--max-updates-per-transition", "1"]  # keep the 2-core test machine responsive
    learner, port = start_learner(tmp_path, "learner", loop_args)
    a1 = start_actor(tmp_path, "a1", port, seed=0)
    a2 = start_actor(tmp_path, "a2", port, seed=1)
    c = client(port)
    procs = [learner, a1, a2]
    try:
        status = wait_until(
            lambda: (
                (s := c.status())
                and transitions_from(s, "a1") > 0
                and transitions_from(s, "a2") > 0
                and s["step"] > 0
                and s
            ),
            120,
            "both actors' transitions and learner updates",
            learner,
        )
        assert (
            status["buffers"]["online"]
            >= transitions_from(status, "a1") + transitions_from(status, "a2") - 20
        )
        # The weights an outside client sees move forward with the learner's steps.
        m1, w1 = c.weights(0, None)
        wait_until(lambda: c.status()["version"] > m1["version"], 60, "a newer weight version", learner)
        m2, w2 = c.weights(m1["version"], m1["session"])
        assert m2["version"] > m1["version"] and m2["step"] > m1["step"] and set(w2) == set(w1)
        assert any(not np.array_equal(w1[k], w2[k]) for k in w1), "published weights never changed"
        # Asking with the newest version gets "unchanged" (retried: the learner may publish again
        # between two calls, and then the newer weights are the right answer).
        latest = m2
        for _ in range(50):
            reply, _ = c.weights(latest["version"], latest["session"])
            if reply.get("unchanged"):
                break
            assert reply["version"] > latest["version"]
            latest = reply
        assert reply.get("unchanged") is True and reply["version"] == latest["version"]

        # SIGKILL one actor: the learner keeps training and the other actor keeps delivering.
        a1.popen.kill()
        a1.wait(10)
        before = c.status()
        wait_until(
            lambda: (
                (s := c.status())["step"] > before["step"] + 5
                and transitions_from(s, "a2") > transitions_from(before, "a2") + 20
            ),
            90,
            "learner steps and a2 transitions after a1 was killed",
            learner,
        )

        # SIGKILL the learner after a checkpoint; restart it with --resume on the same port.
        wait_until(lambda: (ck / "LATEST").exists(), 60, "a periodic checkpoint", learner)
        learner.popen.kill()
        learner.wait(10)
        saved = json.loads((ck / (ck / "LATEST").read_text().strip() / "learner.json").read_text())
        assert saved["step"] >= 20 and saved["buffers"]["online"] > 0
        learner, port2 = start_learner(tmp_path, "learner2", [*loop_args, "--resume"], port=port)
        procs.append(learner)
        assert port2 == port
        assert "resumed from" in learner.log()
        resumed = c.status()
        assert resumed["step"] >= saved["step"]
        assert resumed["buffers"]["online"] >= saved["buffers"]["online"]
        assert resumed["buffers"]["offline"] >= saved["buffers"]["offline"]
        assert resumed["session"] != status["session"]
        # a2 was never restarted: it reconnects by itself, delivers again and loads the new run's weights.
        wait_until(
            lambda: transitions_from(c.status(), "a2") > 20,
            90,
            "a2 delivering to the resumed learner",
            learner,
        )
        wait_until(
            lambda: f"learner session {resumed['session']}" in a2.log(), 30, "a2 loading new weights", a2
        )
        a2.signal(signal.SIGTERM)
        assert a2.wait(30) == 0, a2.log()[-3000:]
        summary = json.loads((tmp_path / "a2.json").read_text())
        sessions = [s for s, _, _ in summary["weights_loaded"]]
        assert status["session"] in sessions and resumed["session"] in sessions, summary["weights_loaded"]
        for session in set(sessions):
            versions = [v for s, v, _ in summary["weights_loaded"] if s == session]
            assert versions == sorted(versions) and len(set(versions)) == len(versions)
        assert summary["dropped_transitions"] == 0 and summary["unsent_batches"] == 0
        assert summary["push_failures"] > 0  # it did see the learner go away

        # SIGTERM: the learner checkpoints everything it acknowledged and exits cleanly.
        final_status = c.status()
        learner.signal(signal.SIGTERM)
        assert learner.wait(60) == 0, learner.log()[-3000:]
        final = json.loads((ck / (ck / "LATEST").read_text().strip() / "learner.json").read_text())
        assert final["transitions"] >= final_status["transitions"]
        assert final["step"] >= final_status["step"]
    finally:
        c.close()
        for p in procs:
            p.close()


@pytest.fixture(scope="module")
def guarded_learner(tmp_path_factory):
    """A learner with a token and small limits (1 MiB messages, 64 transitions per push)."""
    tmp = tmp_path_factory.mktemp("guarded")
    limits = [
        "--max-message-mb",
        "1",
        "--max-transitions-per-push",
        "64",
        "--demos",
        "1",
        "--min-online",
        "100000",
    ]
    proc, port = start_learner(tmp, "guarded", limits)
    yield proc, port
    proc.signal(signal.SIGTERM)
    proc.wait(60)
    proc.close()


def _valid_batch(status: dict, n: int) -> dict[str, np.ndarray]:
    spec = status["spec"]["transitions"]
    return {k: np.zeros((n, *v["shape"]), dtype=v["dtype"]) for k, v in spec.items()}


def test_token_is_enforced(guarded_learner):
    proc, port = guarded_learner
    for token in (None, "wrong-token", TOKEN + "x"):
        c = client(port, token=token)
        with pytest.raises(grpc.RpcError) as e:
            c.status()
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            c.push(0, {"action": np.zeros((1, 5), np.float32)})
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        c.close()
    assert client(port).status()["step"] == 0 and proc.alive()


def test_malformed_and_oversized_messages_are_refused_and_the_learner_keeps_serving(guarded_learner):
    proc, port = guarded_learner
    good = client(port, actor_id="good")
    status = good.status()
    # A raw channel that sends what the client never would, with limits above the learner's.
    big = 8 * 1024 * 1024
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big)],
    )
    push = channel.unary_unary(PUSH)
    md = ((TOKEN_HEADER, f"Bearer {TOKEN}"),)
    ident = {"actor_id": "evil", "session": "s", "seq": 0}
    batch = _valid_batch(status, 4)
    bad_tensors = msgpack.packb(
        {"v": 1, "meta": ident, "tensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"}
    )
    nan_batch = {**batch, "reward": np.full(4, np.nan, np.float32)}
    cases = {
        "garbage bytes": b"\x00\xff garbage",
        "not the envelope": msgpack.packb({"hello": 1}),
        "wrong version": msgpack.packb({"v": 99, "meta": ident, "tensors": None}),
        "corrupt safetensors": bad_tensors,
        "missing seq": pack({"actor_id": "evil", "session": "s"}, batch),
        "wrong keys": pack(ident, {"action": batch["action"]}),
        "wrong shape": pack(ident, {**batch, "action": np.zeros((4, 7), np.float32)}),
        "NaN reward": pack(ident, nan_batch),
        "too many transitions": pack(ident, _valid_batch(status, 65)),
    }
    for what, body in cases.items():
        with pytest.raises(grpc.RpcError) as e:
            push(body, timeout=5, metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
    # Over gRPC's receive limit (1 MiB here): refused by gRPC before any handler runs.
    with pytest.raises(grpc.RpcError) as e:
        push(pack(ident, {"blob": np.zeros(2 * 1024 * 1024, np.uint8)}), timeout=5, metadata=md)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A half-open peer: a TCP connection that sends half an HTTP/2 preface and stalls.
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(b"PRI * HTTP/2.0\r\n")
    # The learner still serves, and still accepts a valid push (idempotently).
    assert channel.unary_unary(STATUS)(pack(), timeout=5, metadata=md)
    assert proc.alive()
    reply = good.push(0, _valid_batch(status, 4))
    assert reply["ack"] == 0 and reply["duplicate"] is False
    assert good.push(0, _valid_batch(status, 4))["duplicate"] is True  # a resend is not stored twice
    after = wait_until(lambda: (s := good.status())["transitions"] >= 4 and s, 10, "the pushed batch stored")
    assert after["transitions"] == status["transitions"] + 4
    assert after["actors"]["good"]["duplicates"] == 1 and "evil" not in after["actors"]
    stalled.close()
    channel.close()
    good.close()


def test_deadline_is_honoured_when_the_learner_does_not_answer():
    # A listening socket nobody accepts from: TCP connects, the HTTP/2 handshake never completes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    c = client(port, deadline_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        c.status()
    elapsed = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 10.0  # bounded by the 1 s deadline, not hanging
    # The outbox keeps what it could not deliver, bounded, and backs off instead of spinning.
    outbox = Outbox(max_batches=3)
    for i in range(5):
        outbox.put({"reward": np.full(2, i, np.float32)})
    assert outbox.flush(c) == 0
    assert len(outbox) == 3 and outbox.dropped_transitions == 4 and outbox.failures == 1
    assert outbox.flush(c) == 0 and outbox.failures == 1  # backing off: no second call yet
    c.close()
    silent.close()


def test_learner_refuses_a_public_address_without_a_token(tmp_path):
    env = {k: v for k, v in _env().items() if k != "ROBOT_POLICY_HIL_TOKEN"}
    proc = Proc(["learner", "--address", "0.0.0.0:0"], tmp_path / "public.log", env=env)
    assert proc.wait(60) == 2
    assert "without a token" in proc.log() and "ROBOT_POLICY_HIL_TOKEN" in proc.log()
    proc.close()


def test_wire_envelope_round_trip_and_limits():
    arrays = {"obs/state": np.arange(6, dtype=np.float32).reshape(2, 3), "done": np.array([True, False])}
    meta, back = unpack(pack({"seq": 3}, arrays), max_bytes=1 << 20)
    assert meta == {"seq": 3} and set(back) == set(arrays)
    assert all(np.array_equal(back[k], arrays[k]) and back[k].dtype == arrays[k].dtype for k in arrays)
    with pytest.raises(WireError, match="exceeds the limit"):
        unpack(pack({}, {"x": np.zeros(1000, np.float32)}), max_bytes=1000)
    with pytest.raises(WireError, match="dtypes"):
        pack({}, {"x": np.array(["a"])})


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    from robot_policy.hil.rpc.checkpoint import latest_checkpoint, load_state, save_checkpoint

    assert latest_checkpoint(tmp_path) is None

    def payload(folder: Path) -> None:
        (folder / "agent.json").write_text("{}")

    def crash(folder: Path) -> None:
        (folder / "agent.json").write_text("{")
        raise RuntimeError("killed while writing")

    save_checkpoint(tmp_path, 10, {"step": 10}, payload)
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 20, {"step": 20}, crash)
    assert load_state(latest_checkpoint(tmp_path))["step"] == 10  # the half-written save is not pointed to
    save_checkpoint(tmp_path, 30, {"step": 30}, payload)
    again = save_checkpoint(tmp_path, 30, {"step": 30, "final": True}, payload)  # same step twice
    assert latest_checkpoint(tmp_path) == again and load_state(again)["final"] is True
    kept = sorted(p.name for p in tmp_path.glob("step-*"))
    assert kept == ["step-0000000030", "step-0000000030.1"] and not list(tmp_path.glob(".tmp-*"))


class _TinyLearner:
    """A learner with one weight vector: the transport's contract without torch."""

    transition_spec = {"reward": ((), "float32")}

    def __init__(self):
        self.n = 0

    def add(self, t):
        self.n += len(t["reward"])

    def ready(self):
        return False

    def actor_weights(self):
        return {"w": np.arange(3, dtype=np.float32)}

    def buffer_sizes(self):
        return {"online": self.n}


def test_tls_channel_with_token(tmp_path):
    from robot_policy.hil.rpc.config import LearnerLoopConfig, ServerConfig
    from robot_policy.hil.rpc.learner import LearnerLoop
    from robot_policy.hil.rpc.service import LearnerServer

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    loop = LearnerLoop(_TinyLearner(), LearnerLoopConfig())
    cfg = ServerConfig(address="127.0.0.1:0", token=TOKEN, tls_cert=str(cert), tls_key=str(key))
    server = LearnerServer(loop, cfg)
    server.start()
    loop.start()
    addr = f"127.0.0.1:{server.port}"
    try:
        tls = LearnerClient(ClientConfig(address=addr, token=TOKEN, tls_ca=str(cert), deadline_s=5))
        assert tls.push(0, {"reward": np.ones(3, np.float32)})["ack"] == 0
        meta, weights = tls.weights(0, None)
        assert np.array_equal(weights["w"], np.arange(3, dtype=np.float32)) and meta["version"] == 1
        wait_until(lambda: tls.status()["transitions"] == 3, 10, "the pushed batch stored")
        tls.close()
        plain = LearnerClient(ClientConfig(address=addr, token=TOKEN, deadline_s=2))  # no TLS: no session
        with pytest.raises(grpc.RpcError) as e:
            plain.status()
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        plain.close()
    finally:
        server.stop()
        loop.stop(checkpoint=False)


def test_full_queue_is_refused_for_retry_and_the_outbox_delivers_later():
    from robot_policy.hil.rpc.config import LearnerLoopConfig, ServerConfig
    from robot_policy.hil.rpc.learner import LearnerLoop
    from robot_policy.hil.rpc.service import LearnerServer

    loop = LearnerLoop(_TinyLearner(), LearnerLoopConfig(queue_size=2))
    server = LearnerServer(loop, ServerConfig(address="127.0.0.1:0"))
    server.start()  # the training thread is not started yet: nothing drains the queue
    c = LearnerClient(ClientConfig(address=f"127.0.0.1:{server.port}", deadline_s=5))
    try:
        outbox = Outbox(max_batches=10, backoff_s=(0.05, 0.2))
        for _ in range(4):
            outbox.put({"reward": np.ones(5, np.float32)})
        assert outbox.flush(c) == 2 and len(outbox) == 2 and outbox.failures == 1  # queue full: kept
        assert c.status()["actors"]["actor"]["refused_full"] == 1
        loop.start()
        wait_until(lambda: outbox.flush(c) == 0 and len(outbox) == 0, 10, "the outbox delivered")
        wait_until(lambda: c.status()["transitions"] == 20, 10, "all 4 batches stored exactly once")
    finally:
        c.close()
        server.stop()
        loop.stop(checkpoint=False)
