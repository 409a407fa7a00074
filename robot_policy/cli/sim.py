"""``robot-policy sim ...``: list tasks, collect expert demonstrations, replay recorded episodes."""

from __future__ import annotations

import json
import sys
import textwrap
from functools import wraps

from robot_policy.console import add_command, add_group


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


def _steps_or_never(text: str) -> int | None:
    """argparse type of --stop-after-success: a step count >= 0, or 'never'."""
    import argparse

    if text.strip().lower() in ("never", "none"):
        return None
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step count: give an integer >= 0 or 'never'"
        ) from None
    if k < 0:
        raise argparse.ArgumentTypeError(f"{k} steps: give an integer >= 0 or 'never'")
    return k


@_friendly
def _tasks(args) -> int:
    from robot_policy.sim import list_tasks, make_env, task_class

    rows = []
    for name in list_tasks():
        env = make_env(name, cameras=dict(task_class(name).default_cameras) if args.cameras else None)
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
    from robot_policy.pipelines.collect import collect, parse_cameras

    summary = collect(
        args.task,
        args.episodes,
        args.out,
        randomization=args.randomization,
        seed=args.seed,
        cameras=parse_cameras(args.cameras, task=args.task),
        keep_failures=args.keep_failures,
        overwrite=args.overwrite,
        stop_after_success=args.stop_after_success,
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
    from robot_policy.pipelines.collect import replay

    result = replay(args.path, args.episode, video=args.video)
    for line in result.lines():
        print(line)
    return 0 if result.reproduced else 1


@_friendly
def _adapt(args) -> int:
    from robot_policy.pipelines import curriculum
    from robot_policy.sim.randomization import AdaptiveSchedule, load_randomization

    if bool(args.checkpoint) == bool(args.expert):
        raise ValueError("give exactly one of --checkpoint RUN_DIR or --expert")
    if args.resume:
        schedule = AdaptiveSchedule.load(args.resume)
    else:
        schedule = AdaptiveSchedule(
            load_randomization(args.target),
            threshold=args.threshold,
            scale=args.initial_scale,
            grow=args.grow,
            shrink=args.shrink,
        )
    if args.expert:
        evaluate = curriculum.expert_evaluator(args.task, args.episodes, seed=args.seed)
    else:
        evaluate = curriculum.policy_evaluator(args.checkpoint, args.task, args.episodes, seed=args.seed)
    curriculum.run_schedule(schedule, evaluate, args.rounds)
    schedule.save(args.out)
    print(f"schedule state and history: {args.out}")
    if args.save_config:
        path = curriculum.save_randomization(
            schedule.current(),
            args.save_config,
            comment=f"adaptive schedule scale {schedule.scale:.3f} of {args.target}",
        )
        print(f"final ranges: {path} (use with --randomization)")
    return 0


def register(sub) -> None:
    group = add_group(
        sub,
        "sim",
        help="simulation: list tasks, collect expert demonstrations, replay episodes",
        description=_fill(
            "Simulated tasks (native MuJoCo 'tabletop', robosuite 'lift', 'stack', 'pick_place_can'), their scripted "
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
            "stored. Each episode ends K control steps after the step at which the task first reports "
            "success (--stop-after-success K, default 10), so demonstrations end holding the goal; the "
            "episode metadata records K and that step (success_step). The summary gives the expert's "
            "success rate with a 95% Wilson interval."
        ),
        epilog="examples:\n"
        "  robot-policy sim collect --task lift --episodes 50 --out datasets/lift.zarr\n"
        "  # the Lift training data of docs/results.md: no randomization, 9 steps kept after success\n"
        "  robot-policy sim collect --task lift --episodes 200 --seed 0 --randomization none \\\n"
        "      --stop-after-success 9 --out datasets/lift_state.zarr\n"
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
        "--cameras",
        default=None,
        help="camera images to record, NAME:HxW,... e.g. agentview:84x84, or 'default' for the task's "
        "default cameras (84x84 each); none by default (state only)",
    )
    p.add_argument(
        "--stop-after-success",
        type=_steps_or_never,
        default=10,
        metavar="K",
        help="end each episode K control steps after the step at which the task first reports success "
        "(0: on that step); 'never' runs every episode to the task's step limit (default 10)",
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

    p = add_command(
        group,
        "adapt",
        help="adaptive domain randomization: widen ranges while success holds, shrink when it falls",
        description=_fill(
            "DORAEMON-style schedule: each round evaluates a policy checkpoint (or the scripted expert) "
            "under the current ranges, a fraction SCALE of the target config's ranges around nominal; "
            "SCALE is multiplied by --grow when the success rate is >= --threshold, by --shrink otherwise. "
            "Saves the schedule (state + history, JSON) and optionally the final ranges as a YAML for "
            "'sim collect --randomization' or 'eval'."
        ),
        epilog="examples:\n"
        "  robot-policy sim adapt --checkpoint runs/lift_flow --task lift --target wide --rounds 5 \\\n"
        "      --episodes 20 --out runs/lift_flow/dr_schedule.json --save-config sim/randomization/lift_adapted.yaml\n"
        "  robot-policy sim adapt --expert --task stack --target wide --rounds 3 --episodes 10 --out /tmp/s.json",
    )
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--checkpoint", default=None, help="policy run directory to evaluate")
    p.add_argument("--expert", action="store_true", help="evaluate the task's scripted expert instead")
    p.add_argument("--target", default="wide", help="randomization config at scale 1 (default: wide)")
    p.add_argument("--rounds", type=int, default=5, help="evaluation rounds (default 5)")
    p.add_argument("--episodes", type=int, default=20, help="episodes per round (default 20)")
    p.add_argument("--threshold", type=float, default=0.8, help="success rate needed to widen (default 0.8)")
    p.add_argument("--initial-scale", type=float, default=0.25, help="starting fraction of the ranges (0.25)")
    p.add_argument("--grow", type=float, default=1.5, help="scale multiplier after a good round (1.5)")
    p.add_argument("--shrink", type=float, default=0.7, help="scale multiplier after a bad round (0.7)")
    p.add_argument("--seed", type=int, default=100_000, help="first evaluation seed (default 100000)")
    p.add_argument("--resume", default=None, help="continue a schedule saved by a previous run (JSON)")
    p.add_argument("--out", required=True, help="where to save the schedule state and history (JSON)")
    p.add_argument("--save-config", default=None, help="also write the final ranges as a randomization YAML")
    p.set_defaults(func=_adapt)
