"""``robot-policy bench inference``: batch-1 latency of every sampler, eager vs. inference engine.

For each family and step count (diffusion DDPM-100 / DDIM-10, flow 1/4/10, consistency 1/3)
it times ``policy.predict`` (eager: the policy's own ``torch.no_grad`` path) and
``InferenceEngine.predict`` (CPU: inference mode, bf16 where validated and faster; CUDA: one
graph per configuration, bf16) interleaved call by call, so load changes on a shared machine
hit both equally. ``network forward`` rows time the observation encoder plus ONE denoiser
forward: the floor a 1-step sampler is compared against (sampler overhead; for 1-step rows it
is also timed interleaved). Random-init weights: latency does not depend on them. Prints a
table and the target ratios, writes JSON rows and a latency plot (PNG next to the JSON).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from robot_policy.console import add_command
from robot_policy.inference.serving import EngineConfig, ServingConfig, add_serving_args, serving_from_args

LOWDIM = {"joint_pos": 7, "gripper": 1, "ee_pos": 3, "ee_quat": 4, "object": 7}

PRESETS = {
    # Diffusion Policy low-dim size: UNet 256/512/1024, step embedding 256 -> 65.9M parameters.
    "dp-state": dict(obs_keys=list(LOWDIM), down_dims=[256, 512, 1024], obs_mlp_dims=[]),
    # Diffusion Policy image size: UNet 512/1024/2048 (259.6M), two 84x84 cameras through
    # ResNet-18 (GroupNorm, spatial softmax, 76x76 centre crop), n_obs_steps 2, horizon 16.
    "dp-image": dict(
        obs_keys=["gripper", "ee_pos", "ee_quat"],
        image_keys=["agentview_rgb", "eye_in_hand_rgb"],
        down_dims=[512, 1024, 2048],
        obs_mlp_dims=[],
        crop_shape=[76, 76],
    ),
    # A few-MB model for smoke tests of this command.
    "tiny": dict(obs_keys=list(LOWDIM), down_dims=[32, 64], obs_mlp_dims=[64], step_embed_dim=32),
}

ENGINE_FLAGS = ("--device", "--precision", "--threads", "--warm-start")
"""The serving flags this benchmark takes (robot_policy.inference.serving)."""
BENCH_SERVING = ServingConfig(engine=EngineConfig(device="cpu"))
"""Defaults of those flags: the CPU, torch's threads, precision auto, no warm start."""


# (family, sampler, steps): the benchmark grid (docs/inference.md#benchmark).
CONFIGS = [
    ("diffusion", "ddpm", 100),
    ("diffusion", "ddim", 10),
    ("flow", "euler", 1),
    ("flow", "euler", 4),
    ("flow", "euler", 10),
    ("consistency", "consistency", 1),
    ("consistency", "consistency", 3),
]


def preset_policy(name: str, family: str):
    """A random-init policy of preset ``name`` and ``family``."""
    import torch

    from robot_policy.config import from_dict
    from robot_policy.policies import POLICIES, PolicyConfig

    if name not in PRESETS:
        raise SystemExit(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
    p = dict(PRESETS[name])
    shapes = {k: [n] for k, n in LOWDIM.items()}
    for k in p.get("image_keys", []):
        shapes[k] = [84, 84, 3]
    d = {
        "family": family,
        "obs_shapes": shapes,
        "action_dim": 8,
        "n_obs_steps": 2,
        "horizon": 16,
        "n_action_steps": 8,
        "step_embed_dim": 256,
        **p,
    }
    stats = {k: _unit_stats(n) for k, n in {**LOWDIM, "action": 8}.items()}
    torch.manual_seed(0)
    return POLICIES.get(family)(from_dict(PolicyConfig, d), stats)


def _unit_stats(n: int) -> dict:
    return {"min": -np.ones(n), "max": np.ones(n), "mean": np.zeros(n), "std": np.ones(n)}


def _checkpoint_policy(path: str, family: str):
    from robot_policy.policies import load

    policy = load(path, device="cpu")
    if policy.config.family != family:
        return None
    return policy


def _timed(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1000.0


def _row(base: dict, mode: str, ms: list[float], extra: dict | None = None) -> dict:
    a = np.asarray(ms)
    row = {
        **base,
        "mode": mode,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
        "load_avg": round(os.getloadavg()[0], 2),
    }
    row.update(extra or {})
    row["samples_ms"] = [round(float(x), 3) for x in ms]
    return row


def bench_family(policy, family, configs, engine_cfg, reps, budget_s, forward_row):
    """Interleaved eager/engine timings of ``configs`` (sampler, steps) for one policy.

    ``engine_cfg`` (an ``EngineConfig`` with a resolved device) sets device, precision and
    threads; its ``warm_start.run_steps`` = K > 0 adds ``engine-warm`` rows: RTI-DP warm start
    from the previous plan, running the last K steps of the same schedule (configs with more
    steps only).
    """
    import torch

    from robot_policy.inference.engine import InferenceEngine
    from robot_policy.inference.warmstart import WarmStartConfig

    device, warm_k = engine_cfg.device, engine_cfg.warm_start.run_steps
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    eager_policy = copy.deepcopy(policy).to(device).eval()
    rows = []
    params_m = round(sum(p.numel() for p in policy.parameters()) / 1e6, 1)
    # Load-time warm-up and bf16 validation at the cheapest configuration benchmarked.
    first_steps = min(n for _, n in configs)
    eng = InferenceEngine(
        policy, replace(engine_cfg, warmup=1, num_steps=first_steps, warm_start=WarmStartConfig())
    )
    obs = eng.dummy_obs(seed=0)
    if forward_row:
        rows.append(_forward_row(eager_policy, eng, obs, device, reps, budget_s, sync, params_m, "eager"))
        rows.append(_forward_row(eng.policy, eng, obs, device, reps, budget_s, sync, params_m, "engine"))
    for sampler, steps in configs:
        sampler_arg = None if family == "consistency" else sampler
        eng.sampler = sampler_arg
        base = {"family": family, "sampler": sampler, "steps": steps, "device": device, "params_m": params_m}
        if cuda:
            torch.cuda.reset_peak_memory_stats()

        def run_eager(s=steps, sa=sampler_arg):
            return eager_policy.predict(obs, num_steps=s, sampler=sa)

        def run_engine(s=steps):
            return eng.predict(obs, num_steps=s)

        timers = [("eager", run_eager), ("engine", run_engine)]
        if 0 < warm_k < steps:
            eng.cfg = replace(eng.cfg, warm_start=WarmStartConfig(run_steps=warm_k, schedule_steps=steps))
            plan = eng.predict(obs, num_steps=steps).actions

            def run_warm(s=steps, plan=plan):
                return eng.predict(obs, prior=plan, num_steps=s)

            timers.append(("engine-warm", run_warm))
        if steps == 1:
            # The sampler-overhead floor, timed interleaved with the 1-step calls it is compared to.
            timers.append(("forward", _forward_fn(eng.policy, eng, obs, device, True)))
        # One untimed call each (engine: captures this configuration's graph).
        first = _timed(run_eager, sync)
        for _, fn in timers[1:]:
            _timed(fn, sync)
        n = int(max(2, min(reps, budget_s * 1000.0 / max(first, 1e-3) / 2)))
        ms: dict[str, list[float]] = {name: [] for name, _ in timers}
        for _ in range(n):
            for name, fn in timers:
                ms[name].append(_timed(fn, sync))
        mem = eng.memory() if cuda else {}
        er = _row(base, "eager", ms["eager"])
        gr = _row(base, "engine", ms["engine"], {"precision": eng.report["precision"], **mem})
        gr["speedup_vs_eager"] = er["p50_ms"] / gr["p50_ms"]
        gr["paired_speedup_vs_eager"] = float(np.median(np.divide(ms["eager"], ms["engine"])))
        if "forward" in ms:
            # Median of per-iteration ratios: the two calls of a pair ran back to back, so
            # load swings on a shared machine cancel out (a ratio of medians would not).
            gr["forward_p50_ms"] = float(np.percentile(ms["forward"], 50))
            gr["overhead_vs_forward"] = float(np.median(np.divide(ms["engine"], ms["forward"])))
        rows += [er, gr]
        if "engine-warm" in ms:
            wr = _row(base, "engine-warm", ms["engine-warm"], {"precision": eng.report["precision"]})
            wr.update(warm_run_steps=warm_k, speedup_vs_cold_engine=gr["p50_ms"] / wr["p50_ms"])
            rows.append(wr)
    extra = {k: eng.report[k] for k in ("bf16_max_action_error", "graph_failures") if k in eng.report}
    for r in rows:
        if r["mode"] == "engine":
            r.update(extra)
    return rows


def _forward_fn(policy, eng, obs, device, engine_precision: bool):
    """Encoder + one denoiser forward, no sampler: the cost floor of a 1-step sampler.

    With ``engine_precision`` it runs the engine's networks under the engine's autocast, so
    the sampler overhead of a 1-step engine call is compared like with like.
    """
    import contextlib

    import torch

    batch = {k: torch.from_numpy(v).to(device) for k, v in eng._batch(obs).items()}
    x = torch.zeros((1, policy.config.horizon, policy.config.action_dim), device=device)
    t = torch.full((1,), 500.0, device=device)

    def fwd():
        amp = eng._autocast() if engine_precision else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            cond = policy.encode(policy.normalize_obs(batch))
            policy.model(x, t, cond.float())

    return fwd


def _forward_row(policy, eng, obs, device, reps, budget_s, sync, params_m, mode) -> dict:
    """A row for the network floor alone (eager fp32 or engine precision)."""
    fwd = _forward_fn(policy, eng, obs, device, mode == "engine")
    first = _timed(fwd, sync)
    n = int(max(3, min(reps, budget_s * 1000.0 / max(first, 1e-3))))
    ms = [_timed(fwd, sync) for _ in range(n)]
    base = {"family": "network", "sampler": "forward", "steps": 1, "device": device, "params_m": params_m}
    extra = {"precision": eng.report["precision"]} if mode == "engine" else {}
    return _row(base, mode, ms, extra)


def summarize(rows: list[dict]) -> list[str]:
    """The ratios the CPU targets are stated in."""
    by = {(r["family"], r["sampler"], r["steps"], r["mode"]): r["p50_ms"] for r in rows}
    lines = []
    slower = [
        f"{r['family']}-{r['sampler']}-{r['steps']}"
        for r in rows
        if r["mode"] == "engine"
        and r["family"] != "network"
        and r["p50_ms"] > by[(r["family"], r["sampler"], r["steps"], "eager")]
    ]
    lines.append("engine slower than eager (p50): " + (", ".join(slower) if slower else "none"))
    for r in rows:
        if "overhead_vs_forward" in r:
            lines.append(
                f"{r['family']}-1 engine / (encoder + 1 forward, same precision; median paired ratio): "
                f"{r['overhead_vs_forward']:.3f} (target <= 1.10)"
            )
    ddpm = by.get(("diffusion", "ddpm", 100, "engine"))
    for fam, smp in (("flow", "euler"), ("consistency", "consistency")):
        one = by.get((fam, smp, 1, "engine"))
        if ddpm and one:
            lines.append(f"DDPM-100 / {fam}-1 (engine p50): {ddpm / one:.1f}x")
    return lines


def histogram(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r.get("samples_ms")]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(timed) + 1.5))
    labels = [f"{r['family']} {r['sampler']}-{r['steps']} {r['mode']}" for r in timed]
    try:
        ax.boxplot([r["samples_ms"] for r in timed], orientation="horizontal", widths=0.6)
    except TypeError:  # matplotlib < 3.10
        ax.boxplot([r["samples_ms"] for r in timed], vert=False, widths=0.6)
    for i, r in enumerate(timed, 1):
        ax.scatter(r["samples_ms"], np.full(len(r["samples_ms"]), i), s=8, alpha=0.5)
    ax.set_yticks(range(1, len(timed) + 1), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per call (ms, log scale)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args) -> int:
    import torch

    from robot_policy.bench._common import DEFAULT_DIR, machine_info, save_results
    from robot_policy.console import print_table
    from robot_policy.inference.engine import resolve_device

    engine_cfg = serving_from_args(args, BENCH_SERVING, ENGINE_FLAGS).engine
    if engine_cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {engine_cfg.device}: CUDA is not available on this machine; use --device cpu"
        )
    device = resolve_device(engine_cfg.device)
    engine_cfg = replace(engine_cfg, device=device)
    if engine_cfg.threads:
        torch.set_num_threads(engine_cfg.threads)  # before the eager policy is built, not only in the engine
    families = args.families.split(",") if args.families else ["diffusion", "flow", "consistency"]
    label = args.preset or Path(args.checkpoint).name
    load0 = os.getloadavg()[0]
    rows: list[dict] = []
    forward_done = False
    for family in families:
        configs = [(s, n) for f, s, n in CONFIGS if f == family and (not args.steps or n in args.steps)]
        if not configs:
            continue
        policy = (
            preset_policy(args.preset, family) if args.preset else _checkpoint_policy(args.checkpoint, family)
        )
        if policy is None:
            print(f"(checkpoint family is not {family}: skipping {family} rows)")
            continue
        print(f"[{label}] {family}: {sum(p.numel() for p in policy.parameters()) / 1e6:.1f}M parameters")
        rows += bench_family(policy, family, configs, engine_cfg, args.reps, args.budget, not forward_done)
        forward_done = True
        del policy
    for r in rows:
        r["preset"] = label
    cols = ["family", "sampler", "steps", "mode", "device", "p50_ms", "p99_ms", "n", "speedup_vs_eager"]
    if engine_cfg.warm_start.enabled:
        cols.append("speedup_vs_cold_engine")
    if device.startswith("cuda"):
        cols += ["precision", "gpu_mem_allocated_mb"]
    print_table(rows, cols)
    for line in summarize(rows):
        print(line)
    info = machine_info()
    print(
        f"machine: {info}; threads {torch.get_num_threads()}; 1-min load {load0:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    out = Path(args.json) if args.json else DEFAULT_DIR / f"inference_{label}_{device}.json"
    path = save_results("inference", rows, out)
    png = histogram(
        rows,
        out.with_suffix(".png"),
        (
            f"{label} on {info.get('gpu', info['cpu'])} ({device}, {torch.get_num_threads()} threads, "
            f"1-min load {load0:.1f})"
        ),
    )
    print(f"wrote {path} and {png}")
    return 0


def register(sub) -> None:
    p = add_command(
        sub,
        "inference",
        help="batch-1 latency of every sampler: eager policy vs. inference engine",
        description=__doc__,
        epilog="examples:\n"
        "  robot-policy bench inference --preset dp-state --device cpu --json outputs/bench/inf_state_cpu.json\n"
        "  robot-policy bench inference --preset dp-image --device cuda\n"
        "  robot-policy bench inference --checkpoint runs/lift_flow --device cpu --steps 1 4\n"
        "  robot-policy bench inference --preset tiny --device cpu --reps 5   (smoke test)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=sorted(PRESETS), help="random-init model of a paper size")
    src.add_argument("--checkpoint", help="checkpoint folder (only its own family is timed)")
    p.add_argument("--json", help="output JSON (default outputs/bench/inference_<preset>_<device>.json)")
    p.add_argument("--reps", type=int, default=30, help="timed calls per configuration and mode (default 30)")
    p.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds per configuration; slow ones get fewer reps (min 2)",
    )
    p.add_argument("--families", help="comma-separated subset of diffusion,flow,consistency")
    p.add_argument("--steps", type=int, nargs="*", help="only these step counts (e.g. 1 10)")
    # --warm-start K > 0 adds engine-warm rows (the last K steps of each config's own schedule).
    add_serving_args(p, BENCH_SERVING, ENGINE_FLAGS, title="engine")
    p.set_defaults(func=run)
