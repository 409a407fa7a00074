"""``robot-policy dagger``: HG-DAgger in simulation with the scripted expert as the corrector."""

from __future__ import annotations

import argparse
import dataclasses

from robot_policy.console import add_command

EPILOG = """\
examples:
  robot-policy dagger --out outputs/dagger                         # 8 demos, 3 rounds (about 20 min on 2 CPU cores)
  robot-policy dagger --demos 8 --rounds 4 --eval-episodes 100 --train-steps 2500   # docs/results.md
  robot-policy dagger --demos 2 --rounds 1 --corrections 2 --eval-episodes 2 --train-steps 50   # smoke run

Per round it prints the success of the policy alone with its 95% Wilson interval, the data it
was trained on, and how much the corrector had to intervene; <out>/dagger.json holds the same.
The same correction runs through the ROS 2 graph with
  robot-policy launch launch/record.launch.xml checkpoint:=DIR arbiter:=true teleop:=scripted
      teleop_options:=intervene=disagree
"""


def register(sub) -> None:
    from robot_policy.config import field_docs
    from robot_policy.hil.dagger import DaggerConfig

    p = add_command(
        sub,
        "dagger",
        help="HG-DAgger in simulation: run the policy, let the scripted expert correct it, retrain (K rounds)",
        description="Start from a deliberately weak policy (few scripted demonstrations), then per "
        "round: run it with the scripted expert as corrector (it takes over when the policy strays, as "
        "a person with a teleop device would, through the same arbiter rules), add the expert-labelled "
        "intervention segments to the data, retrain from scratch with the same passes over the data "
        "(--min-epochs), and evaluate "
        "the policy alone. docs/teleop.md explains the corrector; docs/results.md has measured rounds.",
        epilog=EPILOG,
    )
    docs = field_docs(DaggerConfig)
    for f in dataclasses.fields(DaggerConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=docs.get(f.name)
            )
        else:
            kind = {"int": int, "float": float, "str": str}[
                f.type if isinstance(f.type, str) else f.type.__name__
            ]
            p.add_argument(
                flag, type=kind, default=f.default, help=f"{docs.get(f.name, '')} (default {f.default})"
            )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from robot_policy.hil.dagger import DaggerConfig, run_dagger

    cfg = DaggerConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DaggerConfig)})
    results = run_dagger(cfg, log=lambda s: print(s, flush=True))
    first, last = results[0], results[-1]
    print(
        f"\nsuccess {100 * first.success_rate:.0f}% -> {100 * last.success_rate:.0f}% over {len(results) - 1} "
        f"rounds; details in {cfg.out}/dagger.json"
    )
    return 0
