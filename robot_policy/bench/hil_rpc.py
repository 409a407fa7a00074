"""``robot-policy bench hil-rpc``: HIL-SERL learner throughput and the actor/learner round trip.

1. **updates/s in process**: :class:`~robot_policy.hil.rpc.sac.SACLearner` (the real SAC/RLPD
   agent on the tabletop's state observations, the learner's defaults: 256x256 LayerNorm MLPs,
   2 critics, UTD 2, gripper critic) on buffers filled with random transitions, timed per
   thread count.
2. **over gRPC**: a real ``hil learner`` process (token on, loopback); this process plays the
   actors: it pushes batches of transitions at a fixed rate and polls for weights, and times

   * ``push``: one batch round trip (encode, gRPC, checks, queueing, ack);
   * ``weights``: a fetch of new actor weights (gRPC + decode) and loading them into the actor's
     agent; ``poll``: a poll answered "unchanged";
   * ``experience -> policy``: from sending a batch to holding weights published after the
     learner trained on it (weights whose step is at least the ack's step + 2): what
     ``--publish-every`` / updates/s and the poll interval add up to;
   * the learner's updates/s while it is fed (from its status).

Prints tables and saves JSON (default outputs/bench/hil_rpc.json).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from robot_policy.console import add_command

TOKEN = "bench-" + os.urandom(8).hex()


def _pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if len(xs) else float("nan")


def _random_batch(
    spec: dict, n: int, rng: np.random.Generator, intervened: float = 0.2
) -> dict[str, np.ndarray]:
    out = {}
    for k, (shape, dtype) in spec.items():
        if dtype == "bool":
            out[k] = rng.random((n, *shape)) < intervened
        elif dtype == "uint8":
            out[k] = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
        else:
            out[k] = rng.standard_normal((n, *shape)).astype(dtype)
    out["action"] = np.clip(out["action"], -1, 1)
    out["done"] = (rng.random(n) < 0.01).astype(np.float32)
    return out


def _agent_args(args, threads: int):
    from types import SimpleNamespace

    return SimpleNamespace(
        task="tabletop",
        obs_mode="state",
        reward="sparse",
        batch_size=args.batch_size,
        utd=2,
        discount=0.97,
        hidden=args.hidden,
        no_gripper_critic=False,
        device="cpu",
        threads=threads,
        seed=0,
    )


def _in_process(args, threads: int) -> dict:
    import torch

    from robot_policy.hil.rl.agent import SACAgent
    from robot_policy.hil.rl.envs import make_rl_env
    from robot_policy.hil.rpc.sac import SACLearner
    from robot_policy.hil.rpc.setup import rl_config, transition_spec

    torch.set_num_threads(threads)
    env = make_rl_env("tabletop", obs_mode="state")
    spec = transition_spec(env.obs_spec, env.action_dim)
    agent = SACAgent(rl_config(_agent_args(args, threads)), env.obs_spec, env.action_dim)
    env.close()
    learner = SACLearner(agent, spec, capacity=20_000, min_online=1)
    rng = np.random.default_rng(0)
    learner.add(_random_batch(spec, 10_000, rng, intervened=0.5))
    for _ in range(5):
        learner.update()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.updates):
        learner.update()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "where": "in process",
        "threads": threads,
        "updates_per_s": args.updates / wall,
        "ms_per_update": 1000 * wall / args.updates,
        "cpu_ms_per_update": 1000 * cpu / args.updates,
    }


def _learner_process(args, tmp: Path) -> tuple[subprocess.Popen, int]:
    port_file = tmp / "port"
    cmd = [sys.executable, "-m", "robot_policy.cli.hil_rpc", "learner", "--address", "127.0.0.1:0"]
    cmd += ["--port-file", str(port_file), "--demos", "2", "--min-online", "256", "--status-every", "5"]
    cmd += [
        "--batch-size",
        str(args.batch_size),
        "--hidden",
        args.hidden,
        "--threads",
        str(args.learner_threads),
    ]
    cmd += ["--publish-every", str(args.publish_every)]
    env = dict(os.environ, ROBOT_POLICY_HIL_TOKEN=TOKEN, OMP_NUM_THREADS=str(args.learner_threads))
    log = open(tmp / "learner.log", "w")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + 180
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"the learner did not start:\n{(tmp / 'learner.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, int(port_file.read_text())


def _over_rpc(args) -> dict:
    import torch
    from tqdm import tqdm

    from robot_policy.hil.rl.agent import RLConfig, SACAgent
    from robot_policy.hil.rpc.client import LearnerClient
    from robot_policy.hil.rpc.config import ClientConfig
    from robot_policy.hil.rpc.sac import SACActorPolicy

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_hil_rpc_"))
    proc, port = _learner_process(args, tmp)
    client = LearnerClient(
        ClientConfig(address=f"127.0.0.1:{port}", token=TOKEN, deadline_s=10.0, actor_id="bench")
    )
    try:
        status = client.status()
        spec = {k: (tuple(v["shape"]), v["dtype"]) for k, v in status["spec"]["transitions"].items()}
        desc = status["spec"]["agent"]
        actor = SACActorPolicy(
            SACAgent(
                RLConfig(**desc["config"]),
                {k: tuple(v) for k, v in desc["obs_spec"].items()},
                desc["action_dim"],
            )
        )
        rng = np.random.default_rng(1)
        push_ms, fetch_ms, load_ms, poll_ms, e2e_s = [], [], [], [], []
        pending: list[tuple[float, int]] = []  # (send time, ack step) of batches not yet in held weights
        version, session, seq, weights_mb = 0, None, 0, float("nan")
        period_push, period_poll = args.push_every / args.transitions_per_s, args.poll_s
        next_push = next_poll = time.monotonic()
        start_status, t_start = None, None
        end = time.monotonic() + args.seconds
        bar = tqdm(total=int(args.seconds), desc="actor/learner round trips", unit="s")
        last_tick = time.monotonic()
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_push:
                batch = _random_batch(spec, args.push_every, rng)
                t0 = time.perf_counter()
                reply = client.push(seq, batch)
                push_ms.append(1000 * (time.perf_counter() - t0))
                pending.append((t0, int(reply["step"])))
                seq += 1
                next_push += period_push
            if now >= next_poll:
                t0 = time.perf_counter()
                meta, arrays = client.weights(version, session)
                t1 = time.perf_counter()
                if meta.get("unchanged"):
                    poll_ms.append(1000 * (t1 - t0))
                else:
                    actor.load_weights(arrays)
                    weights_mb = sum(a.nbytes for a in arrays.values()) / 1e6
                    t2 = time.perf_counter()
                    fetch_ms.append(1000 * (t1 - t0))
                    load_ms.append(1000 * (t2 - t1))
                    version, session = int(meta["version"]), meta["session"]
                    # Batches acked at step s are in the buffers from step s + 2 on.
                    for sent, _ in [p for p in pending if meta["step"] >= p[1] + 2]:
                        e2e_s.append(t2 - sent)
                    pending = [p for p in pending if meta["step"] < p[1] + 2]
                    if start_status is None and meta["step"] > 0:
                        start_status, t_start = client.status(), time.monotonic()
                next_poll += period_poll
            if time.monotonic() - last_tick >= 1.0:
                bar.update(1)
                last_tick += 1.0
            time.sleep(max(0.0, min(next_push, next_poll) - time.monotonic()))
        bar.close()
        final = client.status()
        t_end = time.monotonic()
    finally:
        client.close()
        proc.terminate()
        proc.wait(60)
    if start_status is None:
        raise RuntimeError(f"the learner never trained; its log: {tmp / 'learner.log'}")
    rate = (final["step"] - start_status["step"]) / (t_end - t_start)
    return {
        "learner_threads": args.learner_threads,
        "updates_per_s_fed": rate,
        "pushes": len(push_ms),
        "transitions_per_s": args.transitions_per_s,
        "push_ms_p50": _pct(push_ms, 50),
        "push_ms_p99": _pct(push_ms, 99),
        "weights_fetches": len(fetch_ms),
        "weights_fetch_ms_p50": _pct(fetch_ms, 50),
        "weights_fetch_ms_p99": _pct(fetch_ms, 99),
        "weights_load_ms_p50": _pct(load_ms, 50),
        "polls_unchanged": len(poll_ms),
        "poll_unchanged_ms_p50": _pct(poll_ms, 50),
        "poll_unchanged_ms_p99": _pct(poll_ms, 99),
        "experience_to_policy_samples": len(e2e_s),
        "experience_to_policy_s_p50": _pct(e2e_s, 50),
        "experience_to_policy_s_p99": _pct(e2e_s, 99),
        "weights_mb": weights_mb,
        "publish_every": args.publish_every,
        "poll_s": args.poll_s,
    }


def _run(args) -> int:
    from robot_policy.bench._common import save_results
    from robot_policy.console import print_table

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        rows.append(_in_process(args, threads))
        print(f"  in process, {threads} thread(s): {rows[-1]['updates_per_s']:.1f} updates/s", flush=True)
    print()
    print_table(rows, ["where", "threads", "updates_per_s", "ms_per_update", "cpu_ms_per_update"])
    rpc = _over_rpc(args)
    print()
    print_table(
        [
            {
                "what": f"push (batch of {args.push_every})",
                "p50_ms": rpc["push_ms_p50"],
                "p99_ms": rpc["push_ms_p99"],
            },
            {
                "what": "weights fetch",
                "p50_ms": rpc["weights_fetch_ms_p50"],
                "p99_ms": rpc["weights_fetch_ms_p99"],
            },
            {
                "what": "poll (unchanged)",
                "p50_ms": rpc["poll_unchanged_ms_p50"],
                "p99_ms": rpc["poll_unchanged_ms_p99"],
            },
            {
                "what": "experience -> policy",
                "p50_ms": 1000 * rpc["experience_to_policy_s_p50"],
                "p99_ms": 1000 * rpc["experience_to_policy_s_p99"],
            },
        ]
    )
    print(
        f"\nlearner fed over gRPC: {rpc['updates_per_s_fed']:.1f} updates/s ({args.learner_threads} thread(s)); "
        f"weights {rpc['weights_mb']:.2f} MB, loaded in {rpc['weights_load_ms_p50']:.1f} ms (p50)"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    path = save_results(
        "hil_rpc",
        {
            "batch_size": args.batch_size,
            "hidden": args.hidden,
            "load_avg_1min": load,
            "in_process": rows,
            "rpc": rpc,
        },
        args.out,
    )
    print(f"saved {path}")
    return 0


def register(sub) -> None:
    p = add_command(
        sub,
        "hil-rpc",
        help="HIL-SERL learner updates/s, and actor->learner->actor round trips over gRPC",
        description=__doc__.split("\n\n", 1)[1],
        epilog="examples:\n  robot-policy bench hil-rpc\n  robot-policy bench hil-rpc --seconds 60 --threads 1,2",
    )
    p.add_argument(
        "--batch-size", type=int, default=256, help="minibatch size, half online half offline (default 256)"
    )
    p.add_argument("--hidden", default="256,256", help="MLP widths (default 256,256, the learner's)")
    p.add_argument(
        "--updates", type=int, default=100, help="timed in-process updates per thread count (default 100)"
    )
    p.add_argument(
        "--threads", default="1,2", help="torch thread counts for the in-process rows (default 1,2)"
    )
    p.add_argument(
        "--learner-threads", type=int, default=1, help="torch threads of the learner process (default 1)"
    )
    p.add_argument("--seconds", type=float, default=30.0, help="duration of the gRPC part (default 30)")
    p.add_argument("--push-every", type=int, default=50, help="transitions per pushed batch (default 50)")
    p.add_argument(
        "--transitions-per-s",
        type=float,
        default=100.0,
        help="rate the simulated actors push at (default 100)",
    )
    p.add_argument("--poll-s", type=float, default=0.1, help="seconds between weight polls (default 0.1)")
    p.add_argument(
        "--publish-every", type=int, default=50, help="learner steps between publishes (default 50)"
    )
    p.add_argument("--out", default=None, help="JSON output path (default outputs/bench/hil_rpc.json)")
    p.set_defaults(func=_run)
