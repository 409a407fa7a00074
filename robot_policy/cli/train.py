"""``robot-policy train``: train a diffusion, flow-matching or consistency policy on a dataset."""

from __future__ import annotations

from robot_policy.console import add_command

DESCRIPTION = """\
Train a generative policy on an episode store (zarr) and write a self-describing checkpoint
folder: model.safetensors (EMA weights), config.json, normalization.json, meta.json, plus
train_log.csv, train_curve.png and train_state/ (for --resume).

Families: diffusion (DDPM training; DDPM/DDIM/DPM-Solver++ sampling), flow (rectified flow;
Euler/midpoint/Heun), consistency (distilled from a trained diffusion or flow run: --teacher).
Under torchrun the same command runs distributed data parallel (gloo on CPU, NCCL on GPU).
"""

EPILOG = """\
examples:
  robot-policy train --data datasets/lift.zarr --policy flow --out runs/lift_flow --steps 3000
  robot-policy train --data datasets/lift.zarr --policy consistency --teacher runs/lift_flow --out runs/lift_cm
  robot-policy train --data datasets/lift.zarr --policy diffusion --out runs/lift_dp --resume
  torchrun --nproc_per_node 2 -m robot_policy.cli.main train --data datasets/lift.zarr --policy flow --out runs/ddp

config file (YAML, every field optional; see robot_policy/train/config.py and policies/config.py):
  policy: {down_dims: [64, 128, 256], horizon: 16, n_obs_steps: 2, n_action_steps: 8,
           obs_keys: [joint_pos, gripper, object], diffusion: {prediction_type: epsilon}}
  train: {steps: 3000, batch_size: 128, lr: 3.0e-4, checkpoint_every: 1000}
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "train",
        help="train a diffusion / flow / consistency policy",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument("--data", required=True, help="episode store (.zarr) to train on")
    p.add_argument(
        "--policy", required=True, choices=["diffusion", "flow", "consistency"], help="policy family"
    )
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--config", help="YAML/JSON run config with 'policy:' and 'train:' sections")
    p.add_argument("--steps", type=int, help="total optimizer steps (overrides train.steps)")
    p.add_argument("--batch-size", type=int, help="batch size per process (overrides train.batch_size)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training device (default cpu)")
    p.add_argument("--teacher", help="trained diffusion/flow checkpoint folder to distil (consistency only)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to DIR)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os
    from dataclasses import replace

    from robot_policy.config import load_config
    from robot_policy.train.config import RunConfig
    from robot_policy.train.trainer import train

    run_cfg = load_config(RunConfig, args.config) if args.config else RunConfig()
    run_cfg = replace(run_cfg, policy=replace(run_cfg.policy, family=args.policy))
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
    if overrides:
        run_cfg = replace(run_cfg, train=replace(run_cfg.train, **overrides))
    summary = train(
        run_cfg, args.data, args.out, args.device, args.teacher, args.resume, progress=not args.no_progress
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0
