"""``robot-policy teleop ...``: run a teleop device in this terminal, attached to a running graph;
list the devices; calibrate a leader arm."""

from __future__ import annotations

import argparse
import sys
import tempfile

from robot_policy.console import add_command, add_group, print_table

EPILOG = """\
examples:
  robot-policy launch launch/sim.launch.xml                  # terminal 1: the robot (+ recorder)
  robot-policy teleop keyboard                               # terminal 2: jog it, n/m/l/b for episodes
  robot-policy launch launch/sim.launch.xml checkpoint:=runs/x arbiter:=true
  robot-policy teleop spacemouse --arbiter                   # take over from the policy by moving the cap
  robot-policy teleop gamepad --set deadman_button=4 --arbiter
  robot-policy teleop leader --options my_leader.yaml        # calibration, port: see calibrate-leader

The device's command goes to /forward_position_controller/commands (with --arbiter to
/teleop/command, where arbiter_node gives it priority over the policy), its intervention flag
to /teleop/intervention. Device options: 'robot-policy teleop list'; docs/teleop.md.
"""


def register(sub) -> None:
    from robot_policy.teleop import TELEOPS

    group = add_group(
        sub,
        "teleop",
        help="teleoperate the running robot from this terminal (keyboard, gamepad, spacemouse, leader arm)",
        description="Run one teleop device here, attached to a graph started elsewhere (robot-policy "
        "launch ...): a launched node has no terminal, this command does. Ctrl-C ends it; the arm "
        "then holds (the robot's watchdog; with --arbiter, the arbiter holds it if you had control, "
        "and the policy keeps it if you had not).\n\n" + EPILOG,
    )
    for name in TELEOPS.names():
        cls = TELEOPS.get(name)
        first = (cls.__doc__ or name).strip().splitlines()[0]
        p = add_command(group, name, help=first, description=_doc(cls), epilog=EPILOG)
        p.add_argument("--hardware", default="sim_tabletop", help="robot setup: hardware/NAME.yaml or a path")
        p.add_argument("--options", default="", help="device options YAML file (fields: 'teleop list')")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="one device option (YAML value), over --options; repeatable",
        )
        p.add_argument(
            "--arbiter",
            action="store_true",
            help="publish to /teleop/command for arbiter_node (launch with arbiter:=true) instead of the robot",
        )
        p.add_argument("--no-record", action="store_true", help="episode keys do not call the recorder")
        p.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME:=VALUE",
            help="a teleop_node parameter (e.g. workspace_upper:=[0.7,0.4,0.6], episodes:=3)",
        )
        p.set_defaults(func=_run, device=name)

    p = add_command(group, "list", help="the teleop devices, their SDK extra and options")
    p.set_defaults(func=_list)

    p = add_command(
        group,
        "calibrate-leader",
        help="write a leader arm's calibration (servo ids, signs, offsets) from one shared pose",
        description="Hold the leader arm in the same pose as the follower (GELLO: the follower's "
        "home pose), then run this: it reads the servos once and writes offset = reading - sign * "
        "follower_angle per joint. The follower's angles come from --pose, or from /joint_states of "
        "the running graph. Signs: +1 where the servo turns the joint's way, -1 where it turns "
        "against it (move one joint and check). Writes calibration/<setup>/leader.json by default.",
        epilog="examples:\n  robot-policy teleop calibrate-leader --bus dynamixel --port /dev/ttyUSB0 "
        "--ids 1,2,3,4,5,6,7 --signs 1,-1,1,1,1,-1,1 --gripper-id 8 --gripper-open 3.0 --gripper-closed 3.9 "
        "--pose 0,0,0,-1.57,0,1.57,0.785 --snap 1.5708",
    )
    p.add_argument("--bus", required=True, choices=["dynamixel", "feetech"], help="servo bus")
    p.add_argument("--port", required=True, help="serial port (e.g. /dev/ttyUSB0)")
    p.add_argument("--baudrate", type=int, default=1_000_000, help="bus baud rate (default 1000000)")
    p.add_argument("--ids", required=True, help="servo ids, one per follower joint in joint order: 1,2,3,...")
    p.add_argument("--signs", default="", help="+1/-1 per joint (default all +1)")
    p.add_argument("--gripper-id", type=int, default=-1, help="gripper servo id (-1: none)")
    p.add_argument("--gripper-open", type=float, default=0.0, help="gripper servo angle (rad) fully open")
    p.add_argument("--gripper-closed", type=float, default=1.0, help="gripper servo angle (rad) fully closed")
    p.add_argument("--pose", default="", help="follower joint angles (rad) now; default: read /joint_states")
    p.add_argument(
        "--snap", type=float, default=0.0, help="round offsets to multiples of this (GELLO: 1.5708)"
    )
    p.add_argument("--hardware", default="sim_tabletop", help="follower robot setup")
    p.add_argument("--out", default="", help="JSON to write (default calibration/<setup>/leader.json)")
    p.set_defaults(func=_calibrate_leader)


def _doc(cls) -> str:
    import inspect

    mod = sys.modules.get(cls.__module__)
    return inspect.cleandoc((mod.__doc__ if mod is not None and mod.__doc__ else cls.__doc__) or cls.name)


def _options(args) -> dict:
    import yaml

    from robot_policy.ros.teleop_node import parse_options

    opts = parse_options(args.options)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        opts[key.strip()] = yaml.safe_load(value)
    return opts


def _run(args: argparse.Namespace) -> int:
    import yaml

    from robot_policy import conventions as conv
    from robot_policy.config import ConfigError
    from robot_policy.teleop import TeleopError, teleop_config

    try:
        opts = _options(args)
        teleop_config(args.device, opts)  # option errors here, before any ROS start-up
    except (ConfigError, TeleopError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="teleop_", delete=False) as f:
        yaml.safe_dump(opts, f)
    ros = ["--ros-args", "-r", "__node:=teleop_terminal"]
    ros += ["-p", f"mode:={args.device}", "-p", f"hardware:={args.hardware}", "-p", f"options:={f.name}"]
    ros += ["-p", "drive_episodes:=false"] if args.device == "scripted" and args.arbiter else []
    ros += ["-p", "record:=false"] if args.no_record else []
    for item in args.param:
        ros += ["-p", item]
    if args.arbiter:
        ros += ["-r", f"{conv.FORWARD_COMMANDS}:={conv.TELEOP_COMMAND}"]
    from robot_policy.ros.teleop_node import main

    sys.argv = ["robot-policy teleop", *ros]
    return main()


def _list(args: argparse.Namespace) -> int:
    import dataclasses

    from robot_policy.teleop import TELEOPS

    rows = []
    for name in TELEOPS.names():
        cls = TELEOPS.get(name)
        fields = [f.name for f in dataclasses.fields(cls.config_class)]
        rows.append(
            {
                "device": name,
                "extra": cls.extra or "-",
                "terminal": "yes" if cls.needs_terminal else "",
                "options": ", ".join(fields),
            }
        )
    print_table(rows)
    print("\nInstall an extra: pip install 'robot_policy[teleop]'. Option docs: docs/teleop.md.")
    return 0


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{what}: expected comma-separated numbers, got {text!r}") from None


def _calibrate_leader(args: argparse.Namespace) -> int:
    import numpy as np

    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.teleop.leader import SERVO_BUSES, LeaderCalibration, LeaderGripper

    hw = load_hardware_config(args.hardware)
    ids = [int(x) for x in _floats(args.ids, "--ids")]
    n = len(hw.joint_names)
    if len(ids) != n:
        raise SystemExit(
            f"--ids lists {len(ids)} servos, robot '{hw.name}' has {n} joints ({hw.joint_names})"
        )
    signs = [int(s) for s in _floats(args.signs, "--signs")] if args.signs else [1] * n
    if args.pose:
        pose = np.asarray(_floats(args.pose, "--pose"))
    else:
        from sensor_msgs.msg import JointState

        from robot_policy.ros.client import GraphClient
        from robot_policy.ros.convert import msg_to_joint_state

        with GraphClient("calibrate_leader") as c:
            c.subscribe("/joint_states", JointState)
            pose = msg_to_joint_state(c.latest("/joint_states", timeout=10.0), hw.joint_names).position
    if len(pose) != n:
        raise SystemExit(f"--pose has {len(pose)} angles, robot '{hw.name}' has {n} joints")
    gripper = None
    all_ids = list(ids)
    if args.gripper_id >= 0:
        gripper = LeaderGripper(args.gripper_id, args.gripper_open, args.gripper_closed)
        all_ids.append(args.gripper_id)
    bus = SERVO_BUSES.get(args.bus)(args.port, args.baudrate, all_ids)
    bus.open()
    try:
        raw = np.median([bus.read_radians() for _ in range(5)], axis=0)  # one glitch must not matter
    finally:
        bus.close()
    cal = LeaderCalibration.from_pose(
        args.bus, ids, raw[:n], pose, signs, follower=hw.name, snap=args.snap, gripper=gripper
    )
    out = cal.save(args.out or f"calibration/{hw.name}/leader.json")
    err = np.abs(cal.to_joints(raw)[0] - pose)
    rows = [
        {
            "joint": j,
            "servo": i,
            "sign": s,
            "offset_rad": round(o.offset, 4),
            "residual_rad": round(float(e), 4),
        }
        for j, i, s, o, e in zip(hw.joint_names, ids, signs, cal.joints, err)
    ]
    print_table(rows)
    print(
        f"\nwrote {out}; use it with: robot-policy teleop leader --set calibration={out} --set port={args.port}"
    )
    return 0
