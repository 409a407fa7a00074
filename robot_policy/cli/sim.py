"""``robot-policy sim ...``: list tasks, collect expert demonstrations, replay recorded episodes."""

from __future__ import annotations

import json
import sys
import textwrap
from functools import wraps

from robot_policy.cli._util import add_command, add_group


def _fill(text: str) -> str:
    return textwrap.fill(text, 92)


def _friendly(func):
    """User errors (unknown task, bad file, existing output) print one line, not a traceback."""

    @wraps(func)
    def run(args):
        from robot_policy.config import ConfigError

        try:
            return func(args)
        except (KeyError, ValueError, ConfigError, FileExistsError, FileNotFoundError, IndexError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"error: {msg}", file=sys.stderr)
            return 2

    return run


@_friendly
def _tasks(args) -> int:
    from robot_policy.sim import list_tasks, make_env

    rows = []
    for name in list_tasks():
        env = make_env(name, cameras=None)
        env = make_env(name, cameras=env.unwrapped.default_cameras) if args.cameras else env
        rows.append(env.unwrapped.describe())
        env.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        obs = ", ".join(f"{k}{tuple(v)}" for k, v in r["observation"].items())
        print(
            f"{r['name']}: {r['control_hz']:g} Hz, action_dim {r['action_dim']}, max {r['max_episode_steps']} steps"
        )
        print(f"  obs: {obs}")
        print(f"  cameras: {', '.join(r['cameras'])} (default: {', '.join(r['default_cameras'])})")
    return 0


@_friendly
def _collect(args) -> int:
    from robot_policy.sim.collect import collect, parse_cameras

    summary = collect(
        args.task,
        args.episodes,
        args.out,
        randomization=args.randomization,
        seed=args.seed,
        cameras=parse_cameras(args.cameras),
        keep_failures=args.keep_failures,
        overwrite=args.overwrite,
    )
    for line in summary.lines():
        print(line)
    if summary.interrupted:
        return 130
    if summary.kept < args.episodes:
        print(
            f"error: only {summary.kept} of {args.episodes} episodes were kept; the expert failed too often"
        )
        return 1
    return 0


@_friendly
def _replay(args) -> int:
    from robot_policy.sim.collect import replay

    result = replay(args.path, args.episode, video=args.video)
    for line in result.lines():
        print(line)
    return 0 if result.reproduced else 1


def register(sub) -> None:
    group = add_group(
        sub,
        "sim",
        help="simulation: list tasks, collect expert demonstrations, replay episodes",
        description=_fill(
            "Simulated tasks (native MuJoCo 'tabletop', robosuite 'lift' and 'stack'), their scripted "
            "experts and domain randomization (sim/randomization/*.yaml). Python API: "
            "robot_policy.sim.make_env / make_expert; docs/sim.md."
        ),
    )
    p = add_command(
        group,
        "tasks",
        help="list the registered tasks with observation keys, action size and control rate",
        epilog="example:\n  robot-policy sim tasks --json",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of task descriptions")
    p.add_argument("--cameras", action="store_true", help="include each task's default camera images")
    p.set_defaults(func=_tasks)

    p = add_command(
        group,
        "collect",
        help="run a task's scripted expert and record episodes into a zarr episode store",
        description=_fill(
            "Runs the scripted expert of TASK under domain randomization and writes each episode "
            "through the episode store as soon as it ends (an interrupted run keeps its finished episodes). "
            "Episode k uses seed S+k; metadata per episode: success, seed, task, randomization (the flat "
            "draw). By default only successful episodes are kept and the run tries new seeds until N are "
            "stored. The summary gives the expert's success rate with a 95% Wilson interval."
        ),
        epilog="examples:\n"
        "  robot-policy sim collect --task lift --episodes 50 --out datasets/lift.zarr\n"
        "  robot-policy sim collect --task tabletop --episodes 20 --out datasets/tt.zarr \\\n"
        "      --cameras agentview:84x84,wrist:84x84 --randomization sim/randomization/wide.yaml",
    )
    p.add_argument("--task", required=True, help="task name (see 'robot-policy sim tasks')")
    p.add_argument("--episodes", type=int, required=True, help="number of episodes to store")
    p.add_argument("--out", required=True, help="output store, e.g. datasets/lift.zarr")
    p.add_argument(
        "--randomization",
        default="default",
        help="randomization YAML or a name in sim/randomization/ ('none' disables); default: default",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (default 0)")
    p.add_argument(
        "--cameras", default=None, help="camera images to record, NAME:HxW,... e.g. agentview:84x84"
    )
    p.add_argument("--keep-failures", action="store_true", help="also store failed episodes (success=false)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_collect)

    p = add_command(
        group,
        "replay",
        help="replay an episode's recorded actions from its seed and check the outcome reproduces",
        description=_fill(
            "Rebuilds the episode's task, resets it with the recorded seed and randomization draw, "
            "executes the recorded actions and compares success and joint trajectory with the recording. "
            "Exit code 0 when the outcome reproduces, 1 otherwise."
        ),
        epilog="example:\n  robot-policy sim replay datasets/lift.zarr --episode 0 --video lift0.mp4",
    )
    p.add_argument("path", help="episode store written by 'sim collect'")
    p.add_argument("--episode", type=int, required=True, help="episode index")
    p.add_argument("--video", default=None, help="write a video of the replay (.mp4 or .gif)")
    p.set_defaults(func=_replay)
