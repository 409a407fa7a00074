"""``robot-policy launch FILE [name:=value ...]``: run a ROS 2 XML launch file without ``ros2 launch``."""

from __future__ import annotations

import argparse

from robot_policy.console import add_command

EPILOG = """\
examples:
  robot-policy launch launch/sim.launch.xml                         # simulated robot + recorder
  robot-policy launch launch/sim.launch.xml checkpoint:=runs/demo   # ... plus the policy node
  robot-policy launch launch/record.launch.xml teleop:=scripted dataset:=datasets/teleop.zarr
  robot-policy launch launch/sim.launch.xml --show-args             # list the file's arguments

A file name without a directory is a shipped launch file (sim, sim.launch.xml == launch/sim.launch.xml).
On a ROS 2 workstation the same files run with: ros2 launch robot_policy sim.launch.xml
Ctrl-C stops every node (SIGINT, then SIGTERM/SIGKILL after --grace seconds); the launch also
stops when a node marked on_exit="shutdown" exits. Exit code 1 when any node failed.
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "launch",
        help="run a ROS 2 XML launch file (nodes as processes, prefixed logs, clean shutdown)",
        description="Start the nodes of a ROS 2 XML launch file as separate processes with their "
        "parameters and remappings, prefix their output with the node name, and stop them all "
        "cleanly. Applies the shipped Fast DDS profile (32 MB shared memory) unless "
        "FASTDDS_DEFAULT_PROFILES_FILE is already set.",
        epilog=EPILOG,
    )
    p.add_argument("file", help="launch file (path, or a name under launch/)")
    p.add_argument("launch_args", nargs="*", metavar="name:=value", help="launch arguments")
    p.add_argument("--show-args", action="store_true", help="print the file's arguments and exit")
    p.add_argument("--dry-run", action="store_true", help="print the node command lines and exit")
    p.add_argument("--grace", type=float, default=5.0, help="seconds between SIGINT and SIGTERM (default 5)")
    p.set_defaults(func=run)


def _resolve_file(name: str):
    """A path as given wins; a bare name is a shipped launch file (the checkout's launch/, else the
    installed package's copy: robot_policy.resources)."""
    from robot_policy import resources
    from robot_policy.ros.launch_file import LaunchError

    try:
        return resources.find_file(name, "launch", (".launch.xml", ".xml"), what="launch file")
    except resources.ResourceNotFoundError as e:
        raise LaunchError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    import sys

    from robot_policy.ros.launch_file import LaunchError, parse_cli_args, parse_launch_file
    from robot_policy.ros.launcher import Launcher, resolve_executable
    from robot_policy.ros.transport import apply_profile

    try:
        path = _resolve_file(args.file)
        env: dict[str, str] = {}
        # Export the profile first so $(env FASTDDS_DEFAULT_PROFILES_FILE ...) in files sees it
        # (the loopback-only variant when ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
        apply_profile()
        desc = parse_launch_file(path, parse_cli_args(args.launch_args), env=env)
        if args.show_args:
            for name, (default, doc) in desc.arg_docs.items():
                d = "(required)" if default is None else f"default {default!r}"
                print(f"  {name}:={desc.args.get(name, '')!s:<30} {d}  {doc}")
            return 0
        if args.dry_run:
            for k, v in desc.env.items():
                print(f"export {k}={v}")
            for n in desc.nodes:
                flag = " (required)" if n.required else ""
                print(f"[{n.name}]{flag} " + " ".join(resolve_executable(n) + n.args + n.ros_args()))
            return 0
        return Launcher(desc, grace=args.grace).run()
    except LaunchError as e:
        print(f"robot-policy launch: {e}", file=sys.stderr)
        return 2
