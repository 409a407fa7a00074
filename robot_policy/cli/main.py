"""Entry point of ``robot-policy``.

Every module in ``robot_policy/cli/`` (other than this one) that defines
``register(subparsers)`` adds one top-level command or command group. Modules import heavy
dependencies (torch, mujoco, rclpy) inside their handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import robot_policy
import robot_policy.cli as cli_pkg

DESCRIPTION = """\
robot_policy: teleoperated demonstrations -> generative policy (diffusion, flow matching,
consistency) -> deployment on a ROS 2 graph, in simulation or on hardware.

Typical workflow:
  robot-policy sim collect --task lift --episodes 50 --out datasets/lift.zarr
  robot-policy dataset info datasets/lift.zarr
  robot-policy train --data datasets/lift.zarr --policy flow --out runs/lift_flow
  robot-policy eval --checkpoint runs/lift_flow --task lift --episodes 50

Run 'robot-policy COMMAND --help' for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robot-policy",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"robot_policy {robot_policy.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if mod_info.name in ("main",) or mod_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"robot_policy.cli.{mod_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A group without a subcommand: show that group's help.
        (getattr(args, "_group_parser", None) or parser).print_help()
        return 2
    try:
        rc = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of the command.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
