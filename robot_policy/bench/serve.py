"""``robot-policy bench serve``: what the policy server adds over local inference.

A ``robot-policy serve`` process (API key on, loopback) serves a checkpoint, or a preset saved
as one; this process times, interleaved call by call so load changes hit both equally:

* **local**: ``InferenceEngine.predict`` in this process (same checkpoint, same settings);
* **remote**: ``RemotePolicy.predict`` through the server (encode, websocket round trip,
  decode, the server's own inference);
* **added**: remote call time minus the server's reported ``infer_ms`` of the same call:
  what the network stack, codec, queueing and the event loop cost per request.

Then requests/s with N clients at once (each its own connection, back to back), and with
``--soak-seconds`` a soak: two clients at 30 Hz each, the server's resident memory sampled
every second (growth = last 20% vs. first 20% after warm-up), latency percentiles, late
replies and errors over the whole run. Prints tables, saves JSON.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from robot_policy.console import add_command
from robot_policy.inference.serving import EngineConfig, ServingConfig, add_serving_args, serving_from_args

ENGINE_FLAGS = ("--device", "--precision", "--threads", "--steps", "--warm-start")
BENCH_SERVING = ServingConfig(engine=EngineConfig(device="cpu", precision="fp32"))
KEY = "bench-" + os.urandom(8).hex()


def _pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if len(xs) else float("nan")


def _rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint(args, tmp: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    from robot_policy.bench.inference import preset_policy
    from robot_policy.policies import save_policy

    return save_policy(preset_policy(args.preset, args.family), tmp / f"{args.preset}_{args.family}")


def _serve(ckpt: Path, engine_cfg: EngineConfig, port: int, queue: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "robot_policy.cli.main", "serve", "--checkpoint", str(ckpt)]
    cmd += ["--port", str(port), "--queue", str(queue), "--deadline-ms", "60000"]
    cmd += ["--device", engine_cfg.device, "--precision", engine_cfg.precision]
    if engine_cfg.threads:
        cmd += ["--threads", str(engine_cfg.threads)]
    if engine_cfg.num_steps:
        cmd += ["--steps", str(engine_cfg.num_steps)]
    if engine_cfg.warm_start.enabled:
        cmd += ["--warm-start", str(engine_cfg.warm_start.run_steps)]
    env = dict(os.environ, ROBOT_POLICY_API_KEY=KEY)
    log = open(log_path, "w")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float, log_path: Path) -> None:
    import urllib.request

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready within {timeout:g} s; see {log_path}")


def bench_latency(local, remote, obs, reps: int) -> dict:
    """Interleaved local / remote calls; remote minus the server's own inference = added."""
    local_ms, remote_ms, server_ms, added_ms, network_ms = [], [], [], [], []
    for _ in range(3):  # warm both paths (first calls pay one-time costs)
        local.predict(obs)
        remote.predict(obs)
    for _ in range(reps):
        t0 = time.perf_counter()
        local.predict(obs)
        t1 = time.perf_counter()
        remote.predict(obs)
        t2 = time.perf_counter()
        infer = float(remote.last_timing["infer_ms"])
        local_ms.append((t1 - t0) * 1e3)
        remote_ms.append((t2 - t1) * 1e3)
        server_ms.append(infer)
        added_ms.append((t2 - t1) * 1e3 - infer)
        network_ms.append(remote.last_stages["network"])
    rows = {}
    for name, xs in (
        ("local engine", local_ms),
        ("remote (client side)", remote_ms),
        ("server inference", server_ms),
        ("added by serving", added_ms),
        ("  of which network", network_ms),
    ):
        rows[name] = {
            "p50_ms": _pct(xs, 50),
            "p99_ms": _pct(xs, 99),
            "mean_ms": statistics.fmean(xs),
            "n": len(xs),
        }
    rows["added by serving"]["vs_local_p50_ms"] = _pct(remote_ms, 50) - _pct(local_ms, 50)
    return rows


def _client_loop(url, obs, stop: threading.Event, out: dict, hz: float | None) -> None:
    from robot_policy.serving.client import RemotePolicy, ServerError

    lat, late, errors = [], 0, {}
    with RemotePolicy(url, api_key=KEY, wait_s=30) as rp:
        period = 1.0 / hz if hz else 0.0
        next_t = time.perf_counter()
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                rp.predict(obs)
                lat.append((time.perf_counter() - t0) * 1e3)
            except (ServerError, ConnectionError) as e:
                key = getattr(e, "code", type(e).__name__)
                errors[key] = errors.get(key, 0) + 1
            if period:
                next_t += period
                if time.perf_counter() > next_t:
                    late += 1  # the reply came after the next request was due
                    next_t = time.perf_counter()
                else:
                    time.sleep(max(0.0, next_t - time.perf_counter()))
    out.update(latency_ms=lat, late=late, errors=errors)


def bench_clients(url, obs, n: int, seconds: float, hz: float | None = None, on_tick=None) -> list[dict]:
    stop = threading.Event()
    outs = [{} for _ in range(n)]
    threads = [threading.Thread(target=_client_loop, args=(url, obs, stop, o, hz), daemon=True) for o in outs]
    for t in threads:
        t.start()
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
        if on_tick is not None:
            on_tick()
    stop.set()
    for t in threads:
        t.join(60)
    return outs


def run(args) -> int:
    from robot_policy.bench._common import DEFAULT_DIR, machine_info, save_results
    from robot_policy.console import print_table
    from robot_policy.inference.engine import InferenceEngine, resolve_device
    from robot_policy.serving.client import RemotePolicy

    engine_cfg = serving_from_args(args, BENCH_SERVING, ENGINE_FLAGS).engine
    from dataclasses import replace

    engine_cfg = replace(engine_cfg, device=resolve_device(engine_cfg.device))
    out_dir = Path(args.json).parent if args.json else DEFAULT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    ckpt = _checkpoint(args, tmp)
    label = ckpt.name if args.checkpoint else args.preset
    port = _free_port()
    log_path = out_dir / "serve_server.log"
    clients = sorted(set(args.clients))
    proc = _serve(ckpt, engine_cfg, port, max(clients + [2]) + 1, log_path)
    results: dict = {"model": label, "device": engine_cfg.device, "load_avg_start": os.getloadavg()[0]}
    try:
        _wait_ready(proc, port, args.ready_timeout, log_path)
        url = f"ws://127.0.0.1:{port}"
        local = InferenceEngine.load(ckpt, engine_cfg)
        obs = local.dummy_obs()
        with RemotePolicy(url, api_key=KEY, wait_s=30) as remote:
            meta = remote.metadata
            results["model_info"] = {k: meta[k] for k in ("model", "sampler", "action")}
            print(
                f"[{label}] {meta['model']['family']}, {(meta['model']['parameters'] or 0) / 1e6:.1f}M parameters, "
                f"{meta['sampler']['name']} x{meta['sampler']['num_steps']} on {engine_cfg.device}; "
                f"server {url} (pid {proc.pid}), {args.reps} interleaved calls"
            )
            lat = bench_latency(local, remote, obs, args.reps)
        del local
        results["latency"] = lat
        print_table([{"path": k, **v} for k, v in lat.items()], ["path", "p50_ms", "p99_ms", "mean_ms", "n"])

        rows = []
        for n in clients:
            outs = bench_clients(url, obs, n, args.seconds)
            lats = [x for o in outs for x in o["latency_ms"]]
            errs: dict = {}
            for o in outs:
                for k, v in o["errors"].items():
                    errs[k] = errs.get(k, 0) + v
            rows.append(
                {
                    "clients": n,
                    "requests_per_s": len(lats) / args.seconds,
                    "p50_ms": _pct(lats, 50),
                    "p99_ms": _pct(lats, 99),
                    "errors": sum(errs.values()),
                }
            )
        results["throughput"] = rows
        print(f"throughput: clients back to back for {args.seconds:g} s each")
        print_table(rows, ["clients", "requests_per_s", "p50_ms", "p99_ms", "errors"])

        if args.soak_seconds > 0:
            print(
                f"soak: {args.soak_clients} clients at {args.soak_hz:g} Hz for {args.soak_seconds:g} s, "
                "server memory every second"
            )
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            samples.append((0.0, _rss_mb(proc.pid)))

            def tick():
                samples.append((time.monotonic() - t0, _rss_mb(proc.pid)))

            outs = bench_clients(url, obs, args.soak_clients, args.soak_seconds, args.soak_hz, tick)
            lats = [x for o in outs for x in o["latency_ms"]]
            rss = np.array([m for _, m in samples])
            # Growth: the last fifth against the first fifth after a short warm-up (allocator
            # pools and caches settle in the first seconds).
            body = rss[max(1, len(rss) // 10) :] if len(rss) > 10 else rss
            k = max(1, len(body) // 5)
            ts = np.array([t for t, _ in samples])
            slope = float(np.polyfit(ts, rss, 1)[0] * 60) if len(rss) > 2 else float("nan")
            soak = {
                "seconds": args.soak_seconds,
                "clients": args.soak_clients,
                "hz": args.soak_hz,
                "requests": len(lats),
                "expected_requests": int(args.soak_clients * args.soak_hz * args.soak_seconds),
                "p50_ms": _pct(lats, 50),
                "p99_ms": _pct(lats, 99),
                "max_ms": max(lats) if lats else float("nan"),
                "late_replies": sum(o["late"] for o in outs),
                "errors": sum(sum(o["errors"].values()) for o in outs),
                "rss_start_mb": float(rss[0]),
                "rss_end_mb": float(rss[-1]),
                "rss_max_mb": float(rss.max()),
                "rss_growth_mb": float(body[-k:].mean() - body[:k].mean()),
                "rss_slope_mb_per_min": slope,
                "rss_samples_mb": [round(float(m), 2) for m in rss],
            }
            results["soak"] = soak
            print_table(
                [soak],
                [
                    "requests",
                    "expected_requests",
                    "p50_ms",
                    "p99_ms",
                    "max_ms",
                    "late_replies",
                    "errors",
                    "rss_start_mb",
                    "rss_end_mb",
                    "rss_growth_mb",
                    "rss_slope_mb_per_min",
                ],
            )
    finally:
        proc.terminate()
        try:
            results["server_exit_code"] = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            results["server_exit_code"] = proc.wait()
    results["load_avg_end"] = os.getloadavg()[0]
    results["machine"] = machine_info()
    print(
        f"server exit code {results['server_exit_code']} (SIGTERM: clean shutdown); "
        f"1-min load {results['load_avg_start']:.2f} -> {results['load_avg_end']:.2f}"
    )
    out = Path(args.json) if args.json else DEFAULT_DIR / f"serve_{label}_{engine_cfg.device}.json"
    print(f"saved {save_results('serve', results, out)} (server log: {log_path})")
    return 0


def register(sub) -> None:
    p = add_command(
        sub,
        "serve",
        help="policy server: latency added over local inference, requests/s, memory soak",
        description=__doc__,
        epilog="examples:\n"
        "  robot-policy bench serve --preset tiny                       (seconds; smoke)\n"
        "  robot-policy bench serve --preset dp-state --threads 1 --reps 100 --clients 1 2 4\n"
        "  robot-policy bench serve --checkpoint runs/lift_flow --soak-seconds 600\n"
        "  robot-policy bench serve --preset dp-state --device cuda --clients 1 2 4 8",
    )
    src = p.add_mutually_exclusive_group()
    from robot_policy.bench.inference import PRESETS

    src.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="random-init model [tiny]")
    src.add_argument("--checkpoint", help="checkpoint folder to serve instead of a preset")
    p.add_argument("--family", default="flow", help="preset family: diffusion, flow, consistency [flow]")
    p.add_argument("--reps", type=int, default=100, help="interleaved local/remote calls [100]")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4], help="client counts for requests/s")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per client count [5]")
    p.add_argument("--soak-seconds", type=float, default=0.0, help="soak duration (0: no soak)")
    p.add_argument("--soak-hz", type=float, default=30.0, help="request rate per soak client [30]")
    p.add_argument("--soak-clients", type=int, default=2, help="soak clients [2]")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for the server")
    p.add_argument("--json", help="output JSON (default outputs/bench/serve_<model>_<device>.json)")
    add_serving_args(p, BENCH_SERVING, ENGINE_FLAGS, title="engine (server and local)")
    p.set_defaults(func=run)
