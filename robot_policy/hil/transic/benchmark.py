"""The transfer benchmark: base policy in the source and target worlds, corrections, TRANSIC
gated, and two baselines from the same corrections.

1. base policy: scripted demonstrations in the source world (default randomization) and the
   demo's recipe (state observations, small flow UNet), or an existing ``--base``;
2. base success in the source and the target world (``target_world.yaml``);
3. corrections: ``corrections`` episodes of the base in the target world under the simulated
   human (:mod:`robot_policy.hil.transic.collect`);
4. TRANSIC (two stages) on the corrections; gated success in the target and the source world;
5. baselines from the same corrections: the residual always on (no gate), and HG-DAgger-style
   fine-tuning of the base on demonstrations + the intervention segments
   (``robot_policy.hil.dagger``'s aggregation), evaluated alone.

Every success rate comes with its 95% Wilson interval; ``<out>/benchmark.json`` is written
after every stage, ``benchmark.png`` at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robot_policy.evaluation.stats import wilson_interval
from robot_policy.hil.transic.collect import TARGET_WORLD, CollectConfig
from robot_policy.policies.transic.model import TransicConfig

SOURCE_WORLD = "default"


@dataclass
class BenchmarkConfig:
    """``robot-policy transic benchmark`` settings."""

    out: str = "outputs/transic"
    """Output folder (base/, corrections.zarr, transic/, finetune/, benchmark.json, benchmark.png)."""
    base: str = ""
    """Existing base checkpoint to use (empty: collect demonstrations and train one in <out>/base)."""
    demos: int = 100
    """Source-world demonstrations for a new base (the demo's recipe)."""
    base_steps: int = 4000
    """Training steps of a new base."""
    task: str = "tabletop"
    """Simulation task."""
    source_world: str = SOURCE_WORLD
    """Randomization of the source world (what the base trains and is first evaluated in)."""
    target_world: str = TARGET_WORLD
    """Randomization of the target world (the gap to close)."""
    episodes: int = 50
    """Evaluation episodes per policy and world."""
    corrections: int = 20
    """Corrected episodes in the target world."""
    gripper_corrector: bool = True
    """The simulated human also takes over when the policy's gripper disagrees with the expert's
    (``transic collect --gripper``); off: on joint disagreement only."""
    finetune_steps: int = 1500
    """HG-DAgger baseline: optimizer steps of fine-tuning the base on demos + corrections."""
    finetune_lr: float = 1e-4
    """HG-DAgger baseline: fine-tuning learning rate (constant; no EMA)."""
    eval_seed: int = 100_000
    """Seed of the first evaluation episode (the same scenes for every policy)."""
    threads: int = 1
    """Torch CPU threads."""
    transic: TransicConfig = field(default_factory=TransicConfig)
    """Residual/gate settings."""
    progress: bool = False
    """Progress bars."""


def _rate(ev: dict) -> dict:
    k, n = int(ev["successes"]), int(ev["episodes"])
    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "success_rate": k / max(1, n), "ci95": [float(lo), float(hi)]}


def train_base(cfg: BenchmarkConfig, out: Path, log) -> Path:
    """The demo's recipe in the source world: scripted demos with randomization, state flow policy."""
    from robot_policy.hil.dagger import DaggerConfig, _train
    from robot_policy.pipelines.collect import collect

    demos = out / "source_demos.zarr"
    log(f"collecting {cfg.demos} demonstrations in the source world ({cfg.source_world})")
    collect(cfg.task, cfg.demos, demos, randomization=cfg.source_world, overwrite=True, progress=cfg.progress)
    log(f"training the base policy ({cfg.base_steps} steps)")
    # dagger's _train is the demo's recipe (flow, state keys, small UNet, horizon 16, 8 executed).
    _train(DaggerConfig(threads=cfg.threads, progress=cfg.progress), demos, out / "base", cfg.base_steps)
    return out / "base"


def finetune(base_dir: Path, data: Path, out: Path, steps: int, lr: float, batch_size: int = 64) -> Path:
    """HG-DAgger-style baseline: continue training the base's weights on ``data`` (plain AdamW)."""
    import torch

    from robot_policy.data import EpisodeStore
    from robot_policy.policies import load, save_policy
    from robot_policy.train.data import training_windows

    policy = load(base_dir)
    policy.train()
    cfg = policy.config
    store = EpisodeStore.open(str(data), mode="r")
    sampler = training_windows(
        store,
        [*cfg.obs_keys, *cfg.image_keys],
        cfg.action_key,
        cfg.n_obs_steps,
        cfg.horizon,
        cfg.n_action_steps,
    )
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-6)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    for _ in range(steps):
        batch = sampler.batch(rng.integers(0, len(sampler), batch_size))
        batch = {
            "obs": {k: torch.as_tensor(v) for k, v in batch["obs"].items()},
            "action": torch.as_tensor(batch["action"]),
        }
        loss = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
    policy.eval()
    save_policy(
        policy, out, meta={"finetuned_from": str(base_dir.resolve()), "data": str(data), "steps": steps}
    )
    return out


def run_benchmark(cfg: BenchmarkConfig, log=print) -> dict:
    import torch

    from robot_policy.evaluation.rollout import evaluate
    from robot_policy.hil.dagger import _aggregate
    from robot_policy.hil.transic.collect import collect_corrections
    from robot_policy.hil.transic.train import format_report, train_transic
    from robot_policy.policies import load
    from robot_policy.policies.transic.gated import load_gated

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict = {"config": asdict(cfg), "results": {}, "timings_s": {}}

    def save():
        res["timings_s"]["total"] = time.perf_counter() - t0
        (out / "benchmark.json").write_text(json.dumps(res, indent=2))

    def ev(name: str, policy, world: str) -> dict:
        t = time.perf_counter()
        with torch.no_grad():
            r = evaluate(
                policy,
                cfg.task,
                cfg.episodes,
                randomization=world,
                seed=cfg.eval_seed,
                progress=cfg.progress,
                predictor=policy,
            )
        # Per-episode outcomes (seed order): rows share scenes and noise, so pairs can be compared.
        row = {
            **_rate(r),
            "world": world,
            "per_episode_success": [bool(e["success"]) for e in r["per_episode"]],
        }
        if hasattr(policy, "summary"):
            row["transic"] = policy.summary()
        res["results"][name] = row
        res["timings_s"][name] = time.perf_counter() - t
        lo, hi = row["ci95"]
        log(
            f"{name}: {row['successes']}/{row['episodes']} = {100 * row['success_rate']:.0f}% (95% {100 * lo:.0f}-{100 * hi:.0f}%)"
        )
        save()
        return row

    base_dir = Path(cfg.base) if cfg.base else train_base(cfg, out, log)
    res["base"] = str(base_dir.resolve())
    base = load(base_dir)
    ev("base/source", base, cfg.source_world)
    ev("base/target", base, cfg.target_world)

    t = time.perf_counter()
    log(
        f"corrections: {cfg.corrections} episodes of the base in {cfg.target_world} under the simulated human"
    )
    corr = out / "corrections.zarr"
    cstats = collect_corrections(
        base,
        CollectConfig(
            episodes=cfg.corrections, task=cfg.task, world=cfg.target_world, gripper=cfg.gripper_corrector
        ),
        corr,
        cfg.progress,
    )
    res["corrections"] = cstats
    res["timings_s"]["corrections"] = time.perf_counter() - t
    log(
        f"  {cstats['intervention_frames']}/{cstats['frames']} steps by the human, "
        f"{cstats['interventions']} interventions, {cstats['successes']}/{cstats['episodes']} corrected episodes succeeded"
    )
    save()

    t = time.perf_counter()
    report = train_transic(base_dir, corr, out / "transic", cfg.transic, log=log)
    for line in format_report(report):
        log("  " + line)
    res["transic_report"] = report
    res["timings_s"]["transic_train"] = time.perf_counter() - t
    gated = load_gated(out / "transic", mode="gated")
    ev("transic_gated/target", gated, cfg.target_world)
    ev("transic_gated/source", load_gated(out / "transic", mode="gated"), cfg.source_world)
    ev("residual_always/target", load_gated(out / "transic", mode="always"), cfg.target_world)

    t = time.perf_counter()
    demos = Path(base_dir) / "../source_demos.zarr"
    if not demos.exists():
        from robot_policy.policies import read_meta

        demos = Path(read_meta(base_dir).get("dataset_path", ""))
    agg = out / "finetune_data.zarr"
    n_eps, n_frames, extra = _aggregate(demos, [corr], agg, min_len=4)
    log(
        f"HG-DAgger baseline: fine-tuning the base {cfg.finetune_steps} steps on {n_eps} episodes ({extra} correction frames)"
    )
    ft = finetune(Path(base_dir), agg, out / "finetune", cfg.finetune_steps, cfg.finetune_lr)
    res["timings_s"]["finetune_train"] = time.perf_counter() - t
    ev("finetune/target", load(ft), cfg.target_world)
    ev("finetune/source", load(ft), cfg.source_world)
    plot(res, out / "benchmark.png")
    save()
    return res


ROWS = [
    ("base/source", "base policy", "source"),
    ("base/target", "base policy", "target"),
    ("transic_gated/target", "TRANSIC gated", "target"),
    ("transic_gated/source", "TRANSIC gated", "source"),
    ("residual_always/target", "residual always on", "target"),
    ("finetune/target", "fine-tuned (HG-DAgger)", "target"),
    ("finetune/source", "fine-tuned (HG-DAgger)", "source"),
]


def table(res: dict) -> list[str]:
    """Markdown rows: policy | world | success | 95% Wilson interval."""
    lines = ["| policy | world | success | 95% Wilson |", "|---|---|---|---|"]
    for key, name, world in ROWS:
        r = res["results"].get(key)
        if r:
            lo, hi = r["ci95"]
            lines.append(
                f"| {name} | {world} | {r['successes']}/{r['episodes']} = {100 * r['success_rate']:.0f}% "
                f"| {100 * lo:.0f}-{100 * hi:.0f}% |"
            )
    return lines


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    # Wrapped names: seven bars share the width, long names would overlap their neighbours.
    rows = [(textwrap.fill(n, 14) + f"\n({w})", res["results"][k]) for k, n, w in ROWS if k in res["results"]]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(rows))
    rates = np.array([100 * r["success_rate"] for _, r in rows])
    err = np.array(
        [[rate - 100 * r["ci95"][0], 100 * r["ci95"][1] - rate] for rate, (_, r) in zip(rates, rows)]
    ).T
    colors = ["#4c72b0" if lbl.endswith("(source)") else "#dd8452" for lbl, _ in rows]
    ax.bar(x, rates, yerr=err, color=colors, capsize=4)
    ax.set_xticks(x, [lbl for lbl, _ in rows], fontsize=7)
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 105)
    ax.set_title("tabletop lift: source (blue) vs target_world (orange), 95% Wilson intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
