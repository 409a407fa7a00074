"""``robot-policy eval``: closed-loop success rate of a checkpoint in simulation."""

from __future__ import annotations

from robot_policy.console import add_command

DESCRIPTION = """\
Roll a trained policy out in a simulated task over N seeded episodes, served by the inference
engine and executed by the policy node's chunk scheduler on a simulated clock (default: sync,
receding horizon: execute n_action_steps of every predicted chunk). Prints a table and
optionally writes JSON with success_rate, ci95 (Wilson 95% interval [low, high]), episodes
and latency_ms {p50, p95, p99} of the policy call.
"""

EPILOG = """\
examples:
  robot-policy eval --checkpoint runs/lift_flow --task lift --episodes 50 --steps 1
  robot-policy eval --checkpoint runs/lift_dp --task lift --episodes 50 --sampler ddim --steps 10 --json ddim10.json
  robot-policy eval --checkpoint runs/lift_dp --task lift --episodes 5 --video outputs/videos
"""


def register(sub) -> None:
    p = add_command(
        sub, "eval", help="evaluate a policy checkpoint in simulation", description=DESCRIPTION, epilog=EPILOG
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder written by 'robot-policy train'")
    p.add_argument("--task", required=True, help="simulation task (e.g. lift, stack, tabletop)")
    p.add_argument("--episodes", type=int, default=50, help="number of episodes (default 50)")
    p.add_argument("--randomization", help="domain-randomization YAML (sim/randomization/*.yaml)")
    p.add_argument("--seed", type=int, default=100_000, help="seed of the first episode (then +1 each)")
    p.add_argument("--json", help="write the results JSON here")
    p.add_argument("--video", help="save videos of the first episodes into this folder")
    p.add_argument(
        "--no-engine",
        action="store_true",
        help="call policy.predict directly instead of the inference engine",
    )
    p.add_argument(
        "--transic-mode",
        choices=["gated", "always", "off"],
        help="a TRANSIC checkpoint only: base + residual where the gate fires (gated), everywhere "
        "(always), or the base alone (off); default: the checkpoint's mode (docs/transic.md)",
    )
    from robot_policy.inference.serving import add_serving_args

    add_serving_args(p, _defaults())
    p.set_defaults(func=run)


def _defaults():
    """Eval's serving defaults: receding horizon (sync), on the CPU."""
    from robot_policy.inference.scheduler import SchedulerConfig
    from robot_policy.inference.serving import EngineConfig, ServingConfig

    return ServingConfig(engine=EngineConfig(device="cpu"), scheduler=SchedulerConfig(mode="sync"))


def run(args) -> int:
    import torch

    # Scoped, not torch.set_grad_enabled(False): the CLI also runs in-process (tests, demo),
    # and a global switch would leave autograd off for whatever trains next.
    with torch.no_grad():
        return _evaluate(args)


def _evaluate(args) -> int:
    import json
    from pathlib import Path

    from robot_policy.console import print_table
    from robot_policy.evaluation.rollout import evaluate
    from robot_policy.inference.engine import InferenceEngine, resolve_device
    from robot_policy.inference.serving import serving_from_args
    from robot_policy.policies import load

    serving = serving_from_args(args, _defaults())
    policy = load(args.checkpoint, device=resolve_device(serving.engine.device))
    engine, inference = None, {"engine": False}
    transic = getattr(policy, "transic", None)  # a TRANSIC folder: the gated policy over its base
    if transic and args.transic_mode:
        policy = policy.with_mode(args.transic_mode)
    if not args.no_engine:
        engine = InferenceEngine(policy.base if transic else policy, serving.engine)
        if transic:
            engine = policy.served_by(engine)
        ws = serving.engine.warm_start
        inference = {
            "engine": True,
            "mode": serving.scheduler.mode,
            "latency": serving.simulated_latency,
            "warm_start": {"run_steps": ws.run_steps, "schedule_steps": ws.schedule_steps}
            if ws.enabled
            else None,
            "rtc": serving.scheduler.rtc,
            "engine_report": (engine.predictor if transic else engine).report,
        }
    res = evaluate(
        policy,
        args.task,
        args.episodes,
        args.randomization,
        serving.engine.num_steps,
        serving.engine.sampler,
        args.seed,
        args.video,
        predictor=engine,
        serving=serving,
    )
    res["inference"] = inference
    if transic:
        res["transic"] = (engine or policy).summary()  # gate fire rate, residual size
    res["checkpoint"] = str(Path(args.checkpoint).resolve())
    row = {k: res[k] for k in ("family", "sampler", "num_steps", "episodes", "success_rate")}
    row["ci95"] = f"[{res['ci95'][0]:.2f}, {res['ci95'][1]:.2f}]"
    row.update({f"lat_{k}_ms": v for k, v in res["latency_ms"].items()})
    print_table([row])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    return 0
