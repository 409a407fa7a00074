"""How late a Python thread gets the interpreter back while inference runs in another thread.

The policy node infers in a worker thread beside the rclpy executor; this measures what that
costs the executor's callbacks (GIL hand-over), per ``sys.setswitchinterval`` value::

    python -m robot_policy.bench.gil_probe --checkpoint outputs/demo/policy

A 100 Hz sleeper stands in for the executor: each wake-up's lateness is the callback delay.
Figures: docs/benchmarks.md ("Chunk path by stage").
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np


def probe(policy, obs: dict, interval: float, seconds: float) -> dict:
    """Callback delay and inference time with ``interval`` as the switch interval."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    stop = threading.Event()
    inference_ms: list[float] = []

    def infer():
        while not stop.is_set():
            t = time.perf_counter()
            policy.predict(obs)
            inference_ms.append((time.perf_counter() - t) * 1e3)

    worker = threading.Thread(target=infer, daemon=True)
    worker.start()
    delays, period = [], 0.01
    due = time.perf_counter() + period
    end = due + seconds
    try:
        while due < end:
            time.sleep(max(0.0, due - time.perf_counter()))
            delays.append((time.perf_counter() - due) * 1e3)
            due += period
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(old)
    d, i = np.asarray(delays), np.asarray(inference_ms)
    return {
        "switch_interval_ms": interval * 1e3,
        "callback_delay_ms_p50": round(float(np.percentile(d, 50)), 2),
        "callback_delay_ms_p99": round(float(np.percentile(d, 99)), 2),
        "callback_delay_ms_max": round(float(d.max()), 2),
        "inference_ms_p50": round(float(np.percentile(i, 50)), 1) if i.size else float("nan"),
        "inference_ms_p99": round(float(np.percentile(i, 99)), 1) if i.size else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="policy checkpoint folder")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per setting (default 8)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the settings (default 2)")
    args = ap.parse_args(argv)
    import torch

    from robot_policy.console import print_table
    from robot_policy.inference.engine import InferenceEngine
    from robot_policy.inference.serving import EngineConfig
    from robot_policy.policies import load

    torch.set_num_threads(1)
    policy = InferenceEngine(load(args.checkpoint, device="cpu"), EngineConfig(device="cpu", threads=1))
    cfg = policy.config
    obs = {k: np.zeros((cfg.n_obs_steps, *cfg.obs_shapes[k]), np.float32) for k in cfg.obs_keys}
    obs.update({k: np.zeros((cfg.n_obs_steps, *cfg.obs_shapes[k]), np.uint8) for k in cfg.image_keys})
    rows = [
        probe(policy, obs, iv, args.seconds) for _ in range(args.repeats) for iv in (0.005, 0.001, 0.0005)
    ]
    print_table(rows, list(rows[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
