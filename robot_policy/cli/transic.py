"""``robot-policy transic ...``: residual policy + intervention gate from human corrections."""

from __future__ import annotations

import argparse
import dataclasses

from robot_policy.console import add_command, add_group

EPILOG = """\
examples:
  # 1. corrections: the base policy in the target world, the simulated human takes over when it strays
  robot-policy transic collect --base runs/base --episodes 20 --out outputs/corrections.zarr
  # 2. two-stage training: residual on intervention steps, then the gate on frozen features
  robot-policy transic train --base runs/base --data outputs/corrections.zarr --out runs/transic
  # 3. deploy: eval and the policy node recognize a TRANSIC folder (gated by default)
  robot-policy eval --checkpoint runs/transic --task tabletop --randomization target_world --episodes 50
  robot-policy launch launch/sim.launch.xml checkpoint:=runs/transic
  # the whole measurement of docs/results.md (base, corrections, TRANSIC, baselines)
  robot-policy transic benchmark --out outputs/transic
  robot-policy transic benchmark --base runs/base --episodes 10 --corrections 4   # quicker

docs/transic.md explains the model, the target world (the standard transfer benchmark) and the modes.
"""


def _kind(f):
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if t.startswith("list[float]"):
        return lambda s: [float(x) for x in s.split(",") if x]
    if t.startswith("list[int]"):
        return lambda s: [int(x) for x in s.split(",") if x]
    return {"int": int, "float": float, "str": str}[t]


def _add_fields(p, cls, skip=(), prefix="") -> None:
    """One flag per dataclass field, help from the field's docstring."""
    from robot_policy.config import field_docs

    # argparse %-formats help texts: a literal "80% of" in a docstring would crash --help.
    docs = {k: v.replace("%", "%%") for k, v in field_docs(cls).items()}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        dest = prefix + f.name
        if f.type in ("bool", bool):
            p.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=docs.get(f.name)
            )
            continue
        shown = ",".join(str(x) for x in default) if isinstance(default, list) else default
        p.add_argument(
            flag, dest=dest, type=_kind(f), default=default, help=f"{docs.get(f.name, '')} (default {shown})"
        )


def _from_args(cls, args, prefix=""):
    return cls(
        **{
            f.name: getattr(args, prefix + f.name)
            for f in dataclasses.fields(cls)
            if hasattr(args, prefix + f.name)
        }
    )


def register(sub) -> None:
    from robot_policy.hil.transic.benchmark import BenchmarkConfig
    from robot_policy.hil.transic.collect import CollectConfig
    from robot_policy.policies.transic.model import TransicConfig

    group = add_group(
        sub,
        "transic",
        help="sim-to-real with human corrections: TRANSIC residual policy + learned intervention gate",
        description="A base policy trained in simulation meets a different world. A person (here the "
        "scripted expert, through the arbiter's rules) corrects it; a residual head learns the "
        "corrections (post - pre joint targets, gripper flip) and a gate learns when a person would "
        "intervene. Deployed gated: base + residual where the gate fires, base alone elsewhere.\n\n" + EPILOG,
    )
    p = add_command(
        group,
        "collect",
        help="record corrected rollouts of a base policy (default: in the target world)",
        description="Run the base policy in --world (default: target_world, the standard transfer "
        "benchmark) with the scripted expert as the human: it takes over when the policy's proposal "
        "strays and hands back once they agree (HG-DAgger's corrector, robot_policy/hil/dagger.py). "
        "Every step records the observation, the executed action, the policy's proposal and the "
        "intervention flag.",
        epilog=EPILOG,
    )
    p.add_argument("--base", required=True, help="base policy checkpoint folder (any family)")
    p.add_argument("--out", required=True, help="corrections store to write (.zarr; replaced if it exists)")
    _add_fields(p, CollectConfig)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_collect)

    p = add_command(
        group,
        "train",
        help="two-stage training: residual on intervention steps, then the gate on frozen features",
        description="Stage 1 fits the residual head (bounded per joint) and the gripper-flip head on "
        "the intervention steps; stage 2 freezes them and fits the intervention gate on all steps, "
        "balanced by subsampling the majority class. The base policy stays frozen throughout. "
        "Writes a checkpoint folder (model.safetensors + config.json with the base's path and "
        "sha256) and a report: gate precision/recall and residual error on held-out episodes.",
        epilog=EPILOG,
    )
    p.add_argument("--base", required=True, help="the frozen base policy checkpoint folder")
    p.add_argument(
        "--data", required=True, help="corrections store (transic collect, or dagger's corrections.zarr)"
    )
    p.add_argument("--out", required=True, help="TRANSIC checkpoint folder to write")
    _add_fields(p, TransicConfig)
    p.set_defaults(func=_train)

    p = add_command(
        group,
        "benchmark",
        help="the whole transfer measurement: base in source/target, corrections, TRANSIC, baselines",
        description="Trains (or takes --base) a base policy in the source world, measures it in the "
        "source and the target world, records --corrections corrected episodes in the target world, "
        "trains TRANSIC and measures it gated (target and source), plus two baselines from the same "
        "corrections: the residual always on, and HG-DAgger-style fine-tuning of the base. Success "
        "rates with 95% Wilson intervals in <out>/benchmark.json and benchmark.png. About 25 min on "
        "a 2-core CPU with a new base (collect + 4000 training steps), 10 min with --base.",
        epilog=EPILOG,
    )
    _add_fields(p, BenchmarkConfig, skip=("transic", "progress"))
    _add_fields(p, TransicConfig, skip=("mode",), prefix="transic_")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    p.set_defaults(func=_benchmark)


def _collect(args) -> int:
    import torch

    from robot_policy.hil.transic.collect import CollectConfig, collect_corrections
    from robot_policy.policies import load

    torch.set_num_threads(1)
    cfg = _from_args(CollectConfig, args)
    with torch.no_grad():
        stats = collect_corrections(load(args.base), cfg, args.out, progress=not args.no_progress)
    print(
        f"wrote {stats['episodes']} corrected episodes to {args.out}: {stats['intervention_frames']}/{stats['frames']} "
        f"steps by the human ({stats['interventions']} interventions); {stats['successes']}/{stats['episodes']} "
        "episodes succeeded with the corrections"
    )
    return 0


def _train(args) -> int:
    import torch

    from robot_policy.hil.transic.train import format_report, train_transic
    from robot_policy.policies.transic.model import TransicConfig

    torch.set_num_threads(1)
    cfg = _from_args(TransicConfig, args)
    report = train_transic(args.base, args.data, args.out, cfg, log=lambda s: print(s, flush=True))
    for line in format_report(report):
        print(line)
    print(f"wrote {args.out} (report: {args.out}/report.json)")
    return 0


def _benchmark(args) -> int:
    from robot_policy.hil.transic.benchmark import BenchmarkConfig, run_benchmark, table
    from robot_policy.policies.transic.model import TransicConfig

    tcfg = _from_args(TransicConfig, args, prefix="transic_")
    fields = {f.name for f in dataclasses.fields(BenchmarkConfig)} - {"transic"}
    cfg = BenchmarkConfig(**{k: getattr(args, k) for k in fields}, transic=tcfg)
    res = run_benchmark(cfg, log=lambda s: print(s, flush=True))
    print()
    for line in table(res):
        print(line)
    print(f"\ndetails: {cfg.out}/benchmark.json, figure: {cfg.out}/benchmark.png")
    return 0
