"""Policy server and client (robot_policy.serving): openpi's wire protocol both ways, typed
decoding, authentication, TLS, limits, queueing, deadlines, shutdown and reconnection, and the
remote policy inside the policy runner (its network stage, holding while the server is away).

The other side of each interop conversation is openpi's own published code
(tests/openpi_reference.py). No test asserts on wall-clock time: orderings and counters say
whether a request waited behind more than the one inference already running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest

pytest.importorskip("websockets")
pytest.importorskip("msgpack")

import openpi_reference as openpi  # noqa: E402
from test_inference_engine import engine, tiny_policy  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from robot_policy.serving import codec  # noqa: E402
from robot_policy.serving.client import RemotePolicy, ServerError, ServerUnavailable  # noqa: E402
from robot_policy.serving.protocol import ProtocolError  # noqa: E402
from robot_policy.serving.server import PolicyServer, ServerConfig, is_loopback  # noqa: E402

KEY = "test-key-0123456789"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def eng():
    # Flow, one state key and one camera, n_obs_steps 2, horizon 8 -> chunks of 7 x 4.
    return engine(tiny_policy("flow", images=True))


@pytest.fixture(scope="module")
def server(eng):
    srv = PolicyServer(eng, ServerConfig(port=0, api_key=KEY), name="tiny").start()
    yield srv
    srv.stop()


def raw(srv, key: str | None = KEY, **kw):
    """A bare websocket as openpi's client opens it; returns (connection, metadata)."""
    headers = {"Authorization": f"Api-Key {key}"} if key else None
    ws = connect(srv.url, additional_headers=headers, compression=None, max_size=None, open_timeout=10, **kw)
    ws.__enter__()  # websockets >= 17.1 warns about a connection not used as a context manager
    return ws, openpi.unpackb(ws.recv(timeout=30))


def tagged(eng, tag: float) -> dict:
    obs = eng.dummy_obs()
    obs["joint_pos"][:] = tag  # the gated predictor below reads the tag back
    return obs


def http_get(url: str, **kw) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10, **kw) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(pred, what: str, timeout: float = 30.0):
    t_end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Gated:
    """The engine behind a gate: records the tag of each request it starts, then waits."""

    def __init__(self, eng):
        self.eng, self.config, self.policy = eng, eng.config, eng.policy
        self.gate = threading.Event()
        self.gate.set()
        self.started: list[float] = []
        self.priors: list = []

    def predict(self, obs, prior=None, start_time=0.0, num_steps=None):
        self.started.append(float(obs["joint_pos"][0, 0]))
        self.priors.append(prior)
        assert self.gate.wait(60)
        return self.eng.predict(obs, prior=prior, start_time=start_time, num_steps=num_steps)

    def reset(self):
        pass


# ------------------------------------------------------------------------------------ codec
def test_codec_writes_openpis_bytes_and_reads_its_frames():
    obj = {
        "state": np.arange(6, dtype=np.float32).reshape(2, 3),
        "image": np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3),
        "ids": np.array([1, -2], dtype=np.int64),
        "flag": np.bool_(True),
        "scale": np.float32(1.5),
        "nested": {"steps": [1, 2], "name": "x"},
    }
    assert codec.packb(obj) == openpi.packb(obj)  # byte for byte openpi's encoding
    for decoded in (codec.unpackb(openpi.packb(obj)), openpi.unpackb(codec.packb(obj))):
        for k in ("state", "image", "ids"):
            np.testing.assert_array_equal(decoded[k], obj[k])
            assert decoded[k].dtype == obj[k].dtype
        assert decoded["scale"] == np.float32(1.5) and decoded["flag"] == np.bool_(True)
        assert decoded["nested"] == {"steps": [1, 2], "name": "x"}
    with pytest.raises(codec.CodecError, match="object"):
        codec.packb({"x": np.array([object()])})


def _array_frame(dtype="<f4", shape=(2,), data=b"\0" * 8) -> bytes:
    return msgpack.packb({b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape})


@pytest.mark.parametrize(
    "frame, match",
    [
        (_array_frame("|O8", (1,), b"\0" * 8), "dtype '|O8' is not accepted"),  # object pointers
        (_array_frame("<U2", (1,), b"\0" * 8), "dtype '<U2'"),
        (_array_frame("<c8", (1,), b"\0" * 8), "dtype '<c8'"),
        (_array_frame("[('a', '<f4')]", (1,), b"\0" * 4), "dtype"),
        (_array_frame("<f4", (3,), b"\0" * 8), "needs 12 bytes, got 8"),
        (_array_frame("<f4", (-1,), b"\0" * 8), "non-negative"),
        (_array_frame("<f4", [1] * 9, b"\0" * 4), "at most 8"),
        (msgpack.packb({b"__ndarray__": True, b"data": "text", b"dtype": "<f4", b"shape": [1]}), "bin"),
        (b"\xc1garbage", "not a msgpack frame"),
        (b"\x92\x01", "not a msgpack frame"),  # truncated
        (b"\x90\x90", "not a msgpack frame"),  # trailing data
        (b"\x91" * 100_000 + b"\x90", "not a msgpack frame"),  # nesting bomb
        (msgpack.packb({1: 2}), "not a msgpack frame"),  # non-string map key
    ],
)
def test_codec_rejects_anything_but_numeric_arrays(frame, match):
    with pytest.raises(codec.CodecError, match=match):
        codec.unpackb(frame)


# ---------------------------------------------------------------- openpi's client -> our server
@pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager"
)  # openpi's code, verbatim
def test_openpis_client_gets_metadata_and_actions(server, eng):
    client = openpi.WebsocketClientPolicy(server.url, api_key=KEY)
    meta = client.get_server_metadata()
    assert meta["observation"] == {
        "joint_pos": {"shape": [2, 7], "dtype": "float32", "image": False},
        "cam_rgb": {"shape": [2, 16, 16, 3], "dtype": "uint8", "image": True},
    }
    assert meta["action"]["dim"] == 4 and meta["action"]["horizon"] == 7 and meta["action"]["fps"] == 10.0
    assert meta["model"]["family"] == "flow" and meta["model"]["name"] == "tiny"
    assert meta["sampler"]["num_steps"] == eng.num_steps and meta["sampler"]["device"] == "cpu"
    np.testing.assert_array_equal(meta["normalization"]["action"]["min"], -2 * np.ones(4, np.float32))
    assert meta["limits"]["max_message_bytes"] >= 2**20 and meta["protocol"]["codec"] == "msgpack-numpy"

    first = client.infer(eng.dummy_obs())
    second = client.infer(eng.dummy_obs())
    for reply in (first, second):
        a = reply["actions"]
        assert a.shape == (7, 4) and a.dtype == np.float32 and np.all(np.isfinite(a))
        assert reply["server_timing"]["infer_ms"] > 0 and reply["policy_timing"]["infer_ms"] > 0
    assert "prev_total_ms" in second["server_timing"]  # as openpi's server reports it

    # An error is a text frame (openpi's client raises RuntimeError); the connection stays usable.
    with pytest.raises(RuntimeError, match=r"bad_request: .*missing \['cam_rgb'\]"):
        client.infer({"joint_pos": eng.dummy_obs()["joint_pos"]})
    with pytest.raises(RuntimeError, match=r"'joint_pos': shape \(7,\), expected \(2, 7\)"):
        client.infer({**eng.dummy_obs(), "joint_pos": np.zeros(7, np.float32)})
    assert client.infer(eng.dummy_obs())["actions"].shape == (7, 4)
    client._ws.close()


def test_garbage_and_bad_requests_are_answered_and_the_connection_serves_on(server, eng):
    ws, _ = raw(server)
    obs = eng.dummy_obs()
    bad = [
        (b"\xc1garbage", "not a msgpack frame"),
        ("hello", "text frame received"),
        (codec.packb([1, 2, 3]), "must be a map"),
        (_array_frame("|O8", (1,), b"\0" * 8), "dtype '|O8'"),
        (codec.packb({**obs, "joint_pos": obs["joint_pos"].astype(np.float64) * np.nan}), "NaN"),
        (codec.packb({**obs, "cam_rgb": obs["cam_rgb"].astype(np.float32)}), "expected uint8"),
        (codec.packb({**obs, "prompt": "pick up the cube"}), r"unexpected \['prompt'\]"),
        (
            codec.packb({**obs, "options": {"prior": np.zeros((7, 3), np.float32)}}),
            r"options.prior: .*\(T, 4\)",
        ),
        (codec.packb({**obs, "options": {"temperature": 1.0}}), "unknown option"),
        (codec.packb({**obs, "options": {"num_steps": -1}}), "options.num_steps"),
    ]
    for frame, match in bad:
        ws.send(frame)
        reply = ws.recv(timeout=30)
        assert isinstance(reply, str) and reply.startswith("bad_request: "), reply
        assert __import__("re").search(match, reply), (match, reply)
    ws.send(codec.packb(obs))
    assert codec.unpackb(ws.recv(timeout=30))["actions"].shape == (7, 4)
    ws.close()


def test_oversized_message_closes_only_that_connection(server, eng):
    ws, meta = raw(server)
    other, _ = raw(server)
    before = server.stats.oversized
    ws.send(b"\0" * (meta["limits"]["max_message_bytes"] + 1))
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=30)
    assert info.value.rcvd.code == 1009  # message too big
    wait_until(lambda: server.stats.oversized == before + 1, "the oversized message to be counted")
    other.send(codec.packb(eng.dummy_obs()))
    assert codec.unpackb(other.recv(timeout=30))["actions"].shape == (7, 4)
    other.close()


def test_wrong_or_missing_key_is_refused_before_the_websocket_opens(server):
    before = server.stats.auth_failures
    for key in ("wrong-key", None):
        with pytest.raises(InvalidStatus) as info:
            raw(server, key=key)
        assert info.value.response.status_code == 401
    assert server.stats.auth_failures == before + 2
    with connect(server.url, additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=10) as ws:
        assert "observation" in codec.unpackb(ws.recv(timeout=30))
    with pytest.raises(ServerUnavailable, match="HTTP 401"):
        RemotePolicy(server.url, api_key="wrong-key", wait_s=5)


def test_a_key_is_required_beyond_localhost():
    with pytest.raises(ValueError, match="ROBOT_POLICY_API_KEY"):
        ServerConfig(host="0.0.0.0")
    ServerConfig(host="0.0.0.0", api_key="k")
    ServerConfig(host="127.0.0.1")
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("robot.lab")


def test_readiness_fails_until_the_model_is_loaded(eng):
    loaded = threading.Event()

    def load():
        assert loaded.wait(60)
        return eng

    srv = PolicyServer(load, ServerConfig(port=0)).start(wait_ready=False)
    http_url = srv.url.replace("ws://", "http://")
    try:
        assert http_get(http_url + "/healthz") == (200, "OK\n")
        status, body = http_get(http_url + "/readyz")
        assert status == 503 and "warming up" in body
        assert http_get(http_url + "/nope")[0] == 404
        with connect(srv.url, open_timeout=10) as ws:  # accepted; the metadata comes once the model is warm
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.25)
            loaded.set()
            assert "observation" in codec.unpackb(ws.recv(timeout=30))
            assert http_get(http_url + "/readyz") == (200, "ready\n")
    finally:
        loaded.set()
        srv.stop()


# ------------------------------------------------------------------- queueing and deadlines
def test_a_client_that_leaves_mid_request_delays_others_by_at_most_one_inference(eng):
    gated = Gated(eng)
    srv = PolicyServer(gated, ServerConfig(port=0, queue_size=4)).start()
    try:
        gated.gate.clear()
        a, _ = raw(srv, key=None)
        a.send(codec.packb(tagged(eng, 0.125)))
        wait_until(lambda: gated.started == [0.125], "A's inference to start")
        q, _ = raw(srv, key=None)
        q.send(codec.packb(tagged(eng, 0.25)))  # queued behind A ...
        wait_until(lambda: srv.stats.requests == 2, "Q's request to be queued")
        q.close()  # ... and leaves before it runs
        a.socket.shutdown(socket.SHUT_RDWR)  # A vanishes mid-request, no close handshake
        a.socket.close()
        b, _ = raw(srv, key=None)
        b.send(codec.packb(tagged(eng, 0.375)))
        # While the model is busy the loop still answers health checks.
        assert http_get(srv.url.replace("ws://", "http://") + "/healthz")[0] == 200
        gated.gate.set()
        reply = codec.unpackb(b.recv(timeout=30))
        assert reply["actions"].shape == (7, 4)
        # B waited behind A's running inference only: Q's request was never computed.
        assert gated.started == [0.125, 0.375]
        assert srv.stats.skipped_closed == 1
        b.close()
        c, _ = raw(srv, key=None)  # the server serves on
        c.send(codec.packb(eng.dummy_obs()))
        assert codec.unpackb(c.recv(timeout=30))["actions"].shape == (7, 4)
        c.close()
    finally:
        gated.gate.set()
        srv.stop()


def test_full_queue_answers_busy_and_late_requests_answer_deadline(eng):
    gated = Gated(eng)
    srv = PolicyServer(gated, ServerConfig(port=0, queue_size=2, deadline_ms=30_000)).start()
    try:
        gated.gate.clear()
        a, _ = raw(srv, key=None)
        a.send(codec.packb(tagged(eng, 0.125)))
        wait_until(lambda: gated.started == [0.125], "A's inference to start")
        c, _ = raw(srv, key=None)
        c.send(codec.packb({**tagged(eng, 0.25), "options": {"deadline_ms": 1, "id": 7}}))
        wait_until(lambda: srv.stats.requests == 2, "C's request to be queued")
        b, _ = raw(srv, key=None)
        b.send(codec.packb(tagged(eng, 0.375)))
        busy = b.recv(timeout=30)  # answered at once, while the model is still busy
        assert isinstance(busy, str) and busy.startswith("busy: ") and "queue_size 2" in busy
        time.sleep(0.05)  # C's 1 ms deadline passes while it waits
        gated.gate.set()
        assert codec.unpackb(a.recv(timeout=30))["actions"].shape == (7, 4)
        late = c.recv(timeout=30)
        assert isinstance(late, str) and late.startswith("deadline: request waited")
        assert gated.started == [0.125]  # C was never computed
        c.send(codec.packb({**tagged(eng, 0.5), "options": {"id": 8}}))
        assert codec.unpackb(c.recv(timeout=30))["id"] == 8  # id echoed
        assert srv.stats.errors == {"busy": 1, "deadline": 1}
        for ws in (a, b, c):
            ws.close()
    finally:
        gated.gate.set()
        srv.stop()


# ------------------------------------------------------ our client: reconnection, TLS, runner
def test_client_survives_a_server_restart_and_refuses_a_different_model(eng):
    srv = PolicyServer(eng, ServerConfig(port=0)).start()
    port = srv.port
    rp = RemotePolicy(srv.url, retry_s=0.05)
    obs = eng.dummy_obs()
    assert rp.predict(obs).actions.shape == (7, 4) and rp.diagnostics()["server_connected"] == "true"
    srv.stop()  # clean shutdown: 1001 to every client
    with pytest.raises(ServerUnavailable):
        rp.predict(obs)
    with pytest.raises(ServerUnavailable, match="unavailable"):
        rp.predict(obs)  # fails fast while the server is away
    assert rp.diagnostics()["server_connected"] == "false"
    srv = PolicyServer(eng, ServerConfig(port=port)).start()
    try:

        def served():
            try:
                return rp.predict(obs).actions.shape == (7, 4)
            except ServerUnavailable:
                return False

        wait_until(served, "the client to reconnect")
        assert rp.reconnects == 1
    finally:
        srv.stop()
    other = engine(tiny_policy("flow", images=False))  # another model on the same address
    srv = PolicyServer(other, ServerConfig(port=port)).start()
    try:
        time.sleep(0.1)
        with pytest.raises(ServerUnavailable, match="different interface"):
            for _ in range(200):
                try:
                    rp.predict(obs)
                except ServerUnavailable as e:
                    if "different interface" in str(e):
                        raise
                    time.sleep(0.05)
    finally:
        rp.close()
        srv.stop()


def test_tls_with_a_certificate(eng, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    srv = PolicyServer(eng, ServerConfig(port=0, certfile=str(cert), keyfile=str(key))).start()
    try:
        assert srv.url.startswith("wss://")
        with RemotePolicy(srv.url, cafile=str(cert), wait_s=10) as rp:
            assert rp.predict(eng.dummy_obs()).actions.shape == (7, 4)
        with pytest.raises(ServerUnavailable):  # the server's certificate is not trusted by default
            RemotePolicy(srv.url, wait_s=1)
        import ssl

        ctx = ssl.create_default_context(cafile=str(cert))
        assert http_get(srv.url.replace("wss://", "https://") + "/readyz", context=ctx)[0] == 200
    finally:
        srv.stop()


def test_remote_policy_in_the_runner_reports_the_network_stage_and_holds_while_the_server_is_away(eng):
    from robot_policy.inference import SchedulerConfig
    from robot_policy.inference.scheduler import Prior
    from robot_policy.runtime.policy_runner import PolicyRunner

    gated = Gated(eng)
    srv = PolicyServer(gated, ServerConfig(port=0)).start()
    port = srv.port
    rp = RemotePolicy(srv.url, retry_s=0.05)
    assert rp.config.obs_keys == ["joint_pos"] and rp.config.image_keys == ["cam_rgb"]
    assert (rp.config.n_obs_steps, rp.config.horizon, rp.config.fps) == (2, 8, 10.0)
    runner = PolicyRunner(
        rp, sched_cfg=SchedulerConfig(mode="async", n_action_steps=4, rtc=True), clock=lambda: 0
    )
    obs = eng.dummy_obs()
    t = [100.0]

    def step():
        """Feed one control period of fresh inputs and tick; the plan published, if any."""
        t[0] += 0.1
        for k, v in obs.items():
            runner.buffer.add(k, t[0], v[-1])
        plan = runner.tick(t[0])
        if runner._worker is not None:
            runner._worker.join(30)
        return plan or runner.tick(t[0])

    plans = [p for p in (step() for _ in range(30)) if p is not None]
    assert len(plans) >= 3 and all(p.actions.shape[1] == 4 for p in plans)
    # The scheduled plan travelled with the request: RTC weights reached the engine as a Prior.
    assert any(isinstance(p, Prior) and np.any(p.weights > 0) for p in gated.priors)
    diag = runner.diagnostics(t[0])
    for stage in ("network", "server_queue", "server_infer", "codec"):
        assert float(diag[f"{stage}_ms_p50"]) >= 0, stage
    assert float(diag["server_infer_ms_p50"]) > 0 and diag["server_connected"] == "true"

    srv.stop()  # the server goes away: no plan is published (the robot's watchdog holds)
    errors = runner.stats.errors
    assert [step() for _ in range(10)] == [None] * 10
    assert runner.stats.errors > errors and "policy server" in runner.stats.last_error
    assert runner.diagnostics(t[0])["server_connected"] == "false"

    srv = PolicyServer(gated, ServerConfig(port=port)).start()  # back: publishing resumes
    try:
        resumed = []
        for _ in range(100):
            if (p := step()) is not None:
                resumed.append(p)
                break
            time.sleep(0.02)
        assert resumed and rp.reconnects == 1
    finally:
        rp.close()
        srv.stop()


# ------------------------------------------------------------ our client -> openpi's server
class _OpenpiPolicy:
    """An openpi-style policy: infer(obs dict) -> {"actions": (10, 3), "state"}."""

    def __init__(self):
        self.seen: list[dict] = []
        self.fail = False

    def infer(self, obs):
        self.seen.append(obs)
        if self.fail:
            raise RuntimeError("model exploded")
        return {"actions": np.ones((10, 3)) * float(obs["state"].sum()), "state": obs["state"]}


@pytest.fixture
def openpi_server():
    policy = _OpenpiPolicy()
    server = openpi.WebsocketPolicyServer(
        policy, host="127.0.0.1", port=0, metadata={"reset_pose": [0.0, 0.0]}
    )
    started: dict = {}
    ready = threading.Event()

    def run():
        loop = asyncio.new_event_loop()
        started["loop"] = loop

        def on_start(port):
            started["port"] = port
            ready.set()

        started["task"] = loop.create_task(server.run(on_start))
        try:
            loop.run_until_complete(started["task"])
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    yield f"ws://127.0.0.1:{started['port']}", policy
    started["loop"].call_soon_threadsafe(started["task"].cancel)
    thread.join(10)


SPEC = {
    "observation": {"state": {"shape": [3], "dtype": "float32"}},
    "action": {"dim": 3, "horizon": 10, "fps": 15.0},
}


def test_remote_policy_calls_an_openpi_server(openpi_server):
    url, policy = openpi_server
    with pytest.raises(ProtocolError, match="spec"):
        RemotePolicy(url, wait_s=10)  # openpi's metadata does not describe the inputs
    rp = RemotePolicy(url, spec=SPEC, wait_s=10, retry_s=0.01)
    assert rp.metadata["reset_pose"] == [0.0, 0.0]  # the server's own metadata is kept
    assert (rp.config.obs_keys, rp.config.n_obs_steps, rp.config.horizon, rp.config.fps) == (
        ["state"],
        1,
        10,
        15.0,
    )
    chunk = rp.predict({"state": np.ones((1, 3))}, prior=np.zeros((10, 3), np.float32), start_time=2.0)
    assert chunk.actions.shape == (10, 3) and chunk.actions.dtype == np.float32
    np.testing.assert_allclose(chunk.actions, 3.0)
    assert chunk.start_time == 2.0 and chunk.dt == pytest.approx(1 / 15)
    # openpi's server got one frame (no history axis), and no options it would not understand.
    assert set(policy.seen[-1]) == {"state"} and policy.seen[-1]["state"].shape == (3,)
    assert rp.last_stages["server_infer"] >= 0 and rp.last_stages["network"] >= 0

    policy.fail = True  # openpi sends the traceback as a text frame and closes the connection
    with pytest.raises(ServerError, match="model exploded") as info:
        rp.predict({"state": np.ones((1, 3))})
    assert isinstance(info.value, RuntimeError) and info.value.code == "internal"
    policy.fail = False

    def served():
        try:
            return rp.predict({"state": np.ones((1, 3))}).actions.shape == (10, 3)
        except ServerUnavailable:
            return False

    wait_until(served, "the client to reconnect to the openpi server")
    rp.close()


# -------------------------------------------------------------------------------------- CLI
def _checkpoint(tmp_path) -> Path:
    from robot_policy.policies import save_policy

    return save_policy(tiny_policy("flow"), tmp_path / "ck")


def test_serve_cli_refuses_to_listen_publicly_without_a_key(tmp_path, monkeypatch, capsys):
    from robot_policy.cli.main import main

    monkeypatch.delenv("ROBOT_POLICY_API_KEY", raising=False)
    ck = _checkpoint(tmp_path)
    assert main(["serve", "--checkpoint", str(ck), "--host", "0.0.0.0"]) == 2
    assert "ROBOT_POLICY_API_KEY" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_cli_serves_until_sigterm(tmp_path):
    ck = _checkpoint(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), ROBOT_POLICY_API_KEY=KEY)
    cmd = [
        sys.executable,
        "-m",
        "robot_policy.cli.main",
        "serve",
        "--checkpoint",
        str(ck),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd + ["--device", "cpu", "--precision", "fp32", "--steps", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = f"http://127.0.0.1:{port}/readyz"

        def is_ready():
            assert proc.poll() is None, proc.stdout.read()
            try:
                return http_get(ready)[0] == 200
            except OSError:
                return False

        wait_until(is_ready, "the server to be ready", timeout=120)
        with RemotePolicy(f"ws://127.0.0.1:{port}", api_key=KEY, wait_s=10) as rp:
            obs = {"joint_pos": np.zeros((2, 7), np.float32)}
            assert rp.predict(obs).actions.shape == (7, 4)
            assert rp.metadata["sampler"]["num_steps"] == 2 and rp.metadata["model"]["name"] == "ck"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
            with pytest.raises(ServerUnavailable):
                rp.predict(obs)
        out = proc.stdout.read()
        assert "listening on ws://127.0.0.1" in out and "shutting down" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_launch_files_run_the_policy_node_against_a_server():
    from robot_policy.ros.launch_file import parse_cli_args, parse_launch_file

    for name, extra in (("sim.launch.xml", []), ("real.launch.xml", ["hardware:=fr3_sim"])):
        desc = parse_launch_file(REPO / "launch" / name, parse_cli_args(extra))
        assert "policy" not in [n.name for n in desc.nodes], name  # neither checkpoint nor server
        desc = parse_launch_file(REPO / "launch" / name, parse_cli_args([*extra, "server:=ws://gpu:8000"]))
        (policy,) = [n for n in desc.nodes if n.name == "policy"]
        assert policy.params["server"] == "ws://gpu:8000" and policy.params["checkpoint"] == ""


def test_bench_serve_smoke(tmp_path, capsys):
    import json

    from robot_policy.cli.main import main

    out = tmp_path / "serve.json"
    argv = ["bench", "serve", "--preset", "tiny", "--threads", "1", "--reps", "3", "--clients", "1", "2"]
    assert main([*argv, "--seconds", "0.5", "--soak-seconds", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert set(res["latency"]) >= {"local engine", "remote (client side)", "added by serving"}
    assert [r["clients"] for r in res["throughput"]] == [1, 2]
    assert all(r["errors"] == 0 and r["requests_per_s"] > 0 for r in res["throughput"])
    soak = res["soak"]
    assert soak["requests"] > 0 and soak["errors"] == 0 and len(soak["rss_samples_mb"]) >= 2
    assert res["server_exit_code"] == 0  # SIGTERM: clean shutdown
    assert "added by serving" in capsys.readouterr().out
