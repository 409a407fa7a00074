"""``robot-policy demo``: the main job on the embedded default, end to end, in minutes on a CPU."""

from __future__ import annotations

import argparse

from robot_policy.console import add_command
from robot_policy.demo import DemoConfig

DESCRIPTION = """\
The whole stack on the simulated robot, with defaults that finish within 15 minutes
on a 2-core CPU:

  1. collect scripted demonstrations of the tabletop pick task in simulation (episode store);
  2. train a small flow-matching policy on them (state observations: joints, gripper, cube pose);
  3. launch the sim graph (launch/sim.launch.xml: sim_node, policy_node, recorder_node as
     separate processes over ROS 2 / Fast DDS with the shipped shared-memory profile);
  4. run evaluation episodes through ROS 2 (policy_node -> JointTrajectory -> safety layer ->
     simulated arm), recording each one with recorder_node;
  5. print the success rate (Wilson 95% CI), latency percentiles and where the report is.

Without rclpy (or with --no-ros) step 3-4 run the same policy in-process instead.
"""

EPILOG = """\
examples:
  robot-policy demo                                   # defaults: 100 demos, 6000 steps, 10 episodes
  robot-policy demo --episodes 3 --train-steps 300    # quick smoke run (~2 min)
  robot-policy demo --demos 200 --train-steps 8000 --episodes 50 --out outputs/demo_big
  robot-policy demo --checkpoint runs/x --episodes 20 # evaluate an existing checkpoint
  robot-policy demo --no-ros                          # in-process evaluation only

outputs (under --out): demos.zarr, policy/ (checkpoint), eval.zarr (recorded evaluation
episodes), report.md, report.json, eval.png, graph.log (node logs).
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "demo",
        help="collect demos in sim, train a policy, evaluate it through the ROS 2 graph",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--task", default="tabletop", help="sim task (default tabletop, the sim robot's twin)")
    p.add_argument(
        "--hardware", default="sim_tabletop", help="robot setup for the graph (hardware/NAME.yaml)"
    )
    p.add_argument(
        "--demos",
        type=int,
        default=DemoConfig.demos,
        help=f"scripted demonstrations to collect (default {DemoConfig.demos})",
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=DemoConfig.train_steps,
        help=f"optimizer steps (default {DemoConfig.train_steps})",
    )
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for training (default 1)")
    p.add_argument(
        "--policy", default="flow", choices=["flow", "diffusion"], help="policy family (default flow)"
    )
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default 10)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the first evaluation scene (default 1000)")
    p.add_argument("--episode-seconds", type=float, default=10.0, help="time limit per episode (default 10)")
    p.add_argument("--checkpoint", help="skip collection and training: evaluate this checkpoint folder")
    p.add_argument("--no-ros", action="store_true", help="evaluate in-process instead of through ROS 2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from robot_policy.demo import run_demo

    # Flags carry the DemoConfig field names; only the two negated switches differ.
    same = {f.name: getattr(args, f.name) for f in fields(DemoConfig) if hasattr(args, f.name)}
    cfg = DemoConfig(**same, use_ros=not args.no_ros, progress=not args.no_progress)
    summary = run_demo(cfg)
    return 0 if summary.get("episodes", 0) > 0 else 1
