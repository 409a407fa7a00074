"""``robot-policy eval``: closed-loop success rate of a checkpoint in simulation."""

from __future__ import annotations

from robot_policy.console import add_command

DESCRIPTION = """\
Roll a trained policy out in a simulated task with receding-horizon control (execute
n_action_steps of every predicted chunk), over N seeded episodes. Prints a table and
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
    p.add_argument(
        "--steps", type=int, help="denoising / integration / consistency steps (default: the policy's)"
    )
    p.add_argument("--sampler", help="diffusion: ddpm|ddim|dpmsolver++; flow: euler|midpoint|heun")
    p.add_argument("--seed", type=int, default=100_000, help="seed of the first episode (then +1 each)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="inference device")
    p.add_argument("--json", help="write the results JSON here")
    p.add_argument("--video", help="save videos of the first episodes into this folder")
    from robot_policy.inference.rollout import add_engine_args  # [inference engine, issue 6]

    add_engine_args(p)
    p.set_defaults(func=run)


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
    from robot_policy.inference.rollout import engine_rollout
    from robot_policy.policies import load

    policy = load(args.checkpoint, device=args.device)
    # [inference engine, issue 6] engine + ChunkScheduler unless --no-engine.
    predict, episode_fn, inference = engine_rollout(policy, args)
    res = evaluate(
        policy,
        args.task,
        args.episodes,
        args.randomization,
        args.steps,
        args.sampler,
        args.seed,
        args.video,
        predict=predict,
        episode_fn=episode_fn,
    )
    res["inference"] = inference
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
