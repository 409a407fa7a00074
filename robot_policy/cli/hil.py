"""``robot-policy hil``: human-in-the-loop RL (HIL-SERL / RLIF) in simulation.

``hil run`` runs a whole in-process experiment (HIL-SERL, RLIF, BC baseline) with a progress bar
and plots; ``hil reward train`` trains the success classifier; ``hil learner`` / ``hil actor``
(from :mod:`robot_policy.cli.hil_rpc`, when present) split actor and learner over gRPC.
"""

from __future__ import annotations

import argparse
import dataclasses

from robot_policy.console import add_command, add_group

RUN_EPILOG = """\
examples:
  robot-policy hil run --out outputs/hil                       # tabletop, state obs, 20 demos, all three modes
  robot-policy hil run --modes hil_serl rlif --env-steps 20000 --rl-hidden 128 128 --rl-batch-size 128
  robot-policy hil run --env gym_hil --modes hil_serl rlif     # gym-hil PandaPickCube (state)
  robot-policy hil run --obs-mode image --modes hil_serl --env-steps 4000   # wrist camera frames
  robot-policy hil run --demos 2 --env-steps 200 --final-episodes 2 --curve-episodes 1 --bc-steps 20  # smoke run

It prints, per mode, the success of the policy alone on --final-episodes held-out seeds with its
95% Wilson interval and how the intervention rate moved; <out>/curves.png plots success rate,
intervention rate and return over env steps, <out>/curves.json holds every point.
docs/hil.md explains the modes and the simulated human's rule; docs/results.md has measured runs.
"""

REWARD_EPILOG = """\
examples:
  robot-policy hil reward train --out outputs/reward_clf                   # 60 labelled sim episodes, wrist frames
  robot-policy hil reward train --inputs state --episodes 30 --out outputs/reward_state
  robot-policy hil reward train --frames my_frames.safetensors --out outputs/reward_clf

It prints the chosen threshold and precision / recall / false-positive rate on held-out
episodes (the FPR is the number to watch: a false success teaches the policy the wrong thing);
<out>/classifier.json holds them next to the weights (classifier.safetensors).
"""


def _kind(annotation: str):
    base = annotation.replace(" | None", "")
    return {"int": int, "float": float, "str": str}.get(base, str)


def add_dataclass_flags(
    p: argparse.ArgumentParser, cls, prefix: str = "", skip: tuple[str, ...] = ()
) -> None:
    """One flag per field of ``cls`` (``--<prefix><field>``), help from the field docstrings."""
    from robot_policy.config import field_docs

    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        t = f.type if isinstance(f.type, str) else f.type.__name__
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag, dest = "--" + (prefix + f.name).replace("_", "-"), prefix + f.name
        help_text = f"{docs.get(f.name, '')} (default {default})"
        if t == "bool":
            p.add_argument(
                flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif t.startswith("list["):
            p.add_argument(flag, dest=dest, nargs="+", type=_kind(t[5:-1]), default=default, help=help_text)
        elif t.startswith("Literal["):
            choices = [c.strip().strip("'\"") for c in t[8:-1].split(",")]
            p.add_argument(flag, dest=dest, choices=choices, default=default, help=help_text)
        else:
            p.add_argument(flag, dest=dest, type=_kind(t), default=default, help=help_text)


def _from_args(cls, args: argparse.Namespace, prefix: str = "", **override):
    kw = {
        f.name: getattr(args, prefix + f.name)
        for f in dataclasses.fields(cls)
        if hasattr(args, prefix + f.name)
    }
    kw.update(override)
    return cls(**kw)


def register(sub) -> None:
    from robot_policy.hil.rl.agent import RLConfig
    from robot_policy.hil.rl.experiment import ExperimentConfig
    from robot_policy.hil.rl.human import HumanConfig
    from robot_policy.hil.rl.reward import RewardConfig

    group = add_group(
        sub,
        "hil",
        help="human-in-the-loop RL: HIL-SERL (RLPD + reward classifier + gripper critic) and RLIF",
        description="Off-policy RL with a human (here: the scripted expert) correcting the robot. "
        "'hil run' runs a whole simulated experiment in one process; 'hil reward train' trains the "
        "success classifier; 'hil learner' / 'hil actor' run learner and actors as separate processes. "
        "See docs/hil.md.",
    )
    p = add_command(
        group,
        "run",
        help="one whole simulated experiment: HIL-SERL, RLIF and the BC baseline, with curves",
        description="From --demos scripted demonstrations, train SAC/RLPD while the simulated human "
        "(the task's scripted expert, docs/hil.md 'The simulated human') takes over when the policy "
        "stops making progress. Modes: hil_serl (reward = success classifier), rlif (reward -1 at each "
        "intervention, no classifier), bc (the project's flow policy on the demos + hil_serl's "
        "interventions). Evaluation: the policy alone on held-out seeds.",
        epilog=RUN_EPILOG,
    )
    add_dataclass_flags(p, ExperimentConfig, skip=("rl", "human"))
    add_dataclass_flags(p, RLConfig, prefix="rl_", skip=("obs_mode",))  # --obs-mode sets it
    add_dataclass_flags(p, HumanConfig, prefix="human_")
    p.set_defaults(func=_run)

    b = add_command(
        group,
        "throughput",
        help="learner throughput: RLPD updates per second for state and image observations (no env)",
        description="Times SACAgent.update on random transitions shaped like the tabletop task's "
        "(state: 12 + 1 values; image: + one 48x48 wrist frame). One update = --rl-utd critic updates "
        "+ one actor update on --rl-batch-size rows each. Results go to docs/benchmarks.md.",
    )
    b.add_argument(
        "--updates", type=int, default=50, help="timed updates per configuration (default %(default)s)"
    )
    b.add_argument("--threads", type=int, default=1, help="torch CPU threads (default %(default)s)")
    b.add_argument(
        "--image-size", type=int, default=48, help="frame size of the image case (default %(default)s)"
    )
    b.add_argument("--json", default="", help="also write the results to this JSON file")
    add_dataclass_flags(b, RLConfig, prefix="rl_", skip=("obs_mode",))
    b.set_defaults(func=_throughput)

    reward = add_group(group, "reward", help="the success (reward) classifier")
    r = add_command(
        reward,
        "train",
        help="train the binary success classifier, choose its threshold, report held-out precision/recall/FPR",
        description="Trains on labelled frames: a safetensors file (--frames: 'label', 'episode', "
        "'state' and/or 'image/<camera>') or, by default, frames collected in simulation (--episodes "
        "expert episodes, a third never closing the gripper, a third letting go: hard negatives). "
        "Episodes are split train / validation (threshold: most recall at validation FPR <= --max-fpr) "
        "/ test (the report).",
        epilog=REWARD_EPILOG,
    )
    r.add_argument("--out", default="outputs/reward_classifier", help="output folder (default %(default)s)")
    r.add_argument(
        "--frames", default="", help="labelled frames (.safetensors); empty: collect in simulation"
    )
    r.add_argument("--env", default="tabletop", help="sim env to collect from (default %(default)s)")
    r.add_argument("--episodes", type=int, default=60, help="episodes to collect (default %(default)s)")
    r.add_argument(
        "--image-size", type=int, default=64, help="camera frame size when collecting (default %(default)s)"
    )
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    add_dataclass_flags(r, RewardConfig)
    r.set_defaults(func=_reward_train)

    try:  # the actor/learner transport lives in its own module (it needs grpcio)
        from robot_policy.cli.hil_rpc import add_actor_parser, add_learner_parser
    except ImportError:
        add_learner_parser = add_actor_parser = None
    if add_learner_parser is not None:
        add_learner_parser(group)
        add_actor_parser(group)


def _run(args: argparse.Namespace) -> int:
    from robot_policy.hil.rl.agent import RLConfig
    from robot_policy.hil.rl.experiment import ExperimentConfig, run_experiment
    from robot_policy.hil.rl.human import HumanConfig

    try:
        cfg = _from_args(
            ExperimentConfig,
            args,
            rl=_from_args(RLConfig, args, "rl_"),
            human=_from_args(HumanConfig, args, "human_"),
        )
        results = run_experiment(cfg, log=lambda s: print(s, flush=True))
    except ValueError as e:
        print(f"error: {e}")
        return 2
    print(f"\ncurves: {cfg.out}/curves.png, every number: {cfg.out}/curves.json ({results['seconds']:.0f} s)")
    return 0


def _reward_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_policy.hil.rl.envs import make_rl_env
    from robot_policy.hil.rl.reward import (
        RewardConfig,
        collect_frames,
        load_frames,
        save_frames,
        train_classifier,
    )

    cfg = _from_args(RewardConfig, args)
    out = Path(args.out)
    if args.frames:
        if not Path(args.frames).exists():
            print(f"error: no labelled frames at {args.frames} (omit --frames to collect them in simulation)")
            return 2
        frames = load_frames(args.frames)
        save_frames(out / "frames.safetensors", frames)  # beside the classifier: `hil run` relabels with them
    else:
        mode = "state" if cfg.inputs == "state" else "image"
        kw = {"image_size": args.image_size, "cameras": ("wrist",)} if mode == "image" else {}
        env = make_rl_env(args.env, obs_mode=mode, **kw)
        print(
            f"collecting {args.episodes} labelled episodes of '{args.env}' ({mode} observations)", flush=True
        )
        frames = collect_frames(env, args.episodes, progress=args.progress)
        env.close()
        save_frames(out / "frames.safetensors", frames)
    pos = int(frames["label"].sum())
    print(
        f"{len(frames['label'])} frames ({pos} positive, {len(frames['label']) - pos} negative)", flush=True
    )
    try:
        clf, report = train_classifier(frames, cfg, progress=args.progress)
    except ValueError as e:
        print(f"error: {e}")
        return 2
    clf.save(out, report)
    print(
        f"threshold {report.threshold:.3f}; held-out ({report.episodes} episodes, {report.positives} positive / "
        f"{report.negatives} negative frames): precision {report.precision:.3f}, recall {report.recall:.3f}, "
        f"false-positive rate {report.false_positive_rate:.4f}\nsaved {out}/classifier.safetensors + classifier.json"
    )
    return 0


def _throughput(args: argparse.Namespace) -> int:
    import json

    import torch

    from robot_policy.console import print_table
    from robot_policy.hil.rl.agent import RLConfig
    from robot_policy.hil.rl.experiment import learner_throughput

    torch.set_num_threads(args.threads)
    rows = []
    state = {"state": (12,), "gripper_cmd": (1,)}
    image = {"state": (6,), "gripper_cmd": (1,), "wrist_rgb": (args.image_size, args.image_size, 3)}
    for name, spec in (("state", state), ("image", image)):
        rl = _from_args(RLConfig, args, "rl_", obs_mode=name)
        n = args.updates if name == "state" else max(5, args.updates // 5)
        r = learner_throughput(rl, spec, 5, updates=n)
        rows.append(
            {
                "obs": name,
                "hidden": "x".join(map(str, rl.hidden)),
                "batch": rl.batch_size,
                "utd": rl.utd,
                "ensemble": rl.ensemble_size,
                **{k: round(v, 1) for k, v in r.items()},
            }
        )
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0
