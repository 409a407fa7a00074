"""``robot-policy evaluate``: operator-labelled sessions (blind A/B), reports, sim-vs-real correlation."""

from __future__ import annotations

import json
import sys

from robot_policy.console import add_command, add_group, print_table

SESSION_DESCRIPTION = """\
Run (or resume) an evaluation session. In 'ab' mode each trial runs two policies from the same
reset seed in a random order; the operator sees only the labels A and B, labels each episode
(success / failure / partial 0-100 / note, or abort: re-run, not counted) and then states a
preference A / B / tie. The policy behind each label is stored in the session file and
revealed in the report once the session is complete. The session file is rewritten
atomically after every episode: run the same command again to resume an interrupted session.

Policies: checkpoint folders, or 'expert' / 'expert:noise=N,action_noise=S' (the task's
scripted expert, a baseline). Operator: 'terminal' (a person at the keyboard) or 'scripted'
(labels from the simulator's success oracle: a fully automatic simulated session).
"""

SESSION_EPILOG = """\
examples:
  robot-policy evaluate session --session outputs/eval/s1.json --policy runs/lift_flow --policy runs/lift_dp \\
      --task lift --trials 20 --operator terminal
  robot-policy evaluate session --session outputs/eval/demo.json --policy expert \\
      --policy expert:action_noise=0.03 --trials 20 --operator scripted --report outputs/eval/demo
  robot-policy evaluate session --session outputs/eval/s1.json            # resume
"""

CORRELATE_EPILOG = """\
example (two simulated "worlds": the default randomization vs the wide one):
  robot-policy evaluate correlate --policy expert --policy expert:action_noise=0.02 \\
      --policy expert:action_noise=0.05 --episodes 20 --sim-randomization none --real-randomization wide
"""


def register(sub) -> None:
    g = add_group(sub, "evaluate", help="operator-labelled evaluation sessions, blind A/B, reports")
    p = add_command(
        g,
        "session",
        help="run or resume an evaluation session",
        description=SESSION_DESCRIPTION,
        epilog=SESSION_EPILOG,
    )
    p.add_argument("--session", required=True, help="session JSON file (created, or resumed if it exists)")
    p.add_argument("--policy", action="append", default=[], help="policy source (repeat); omit to resume")
    p.add_argument(
        "--name", action="append", default=[], help="display name per --policy (repeat, same order)"
    )
    p.add_argument("--task", default="tabletop", help="simulation task (default tabletop)")
    p.add_argument("--trials", type=int, default=10, help="trials (ab: episode pairs; single: episodes)")
    p.add_argument(
        "--mode", choices=("ab", "single"), default="ab", help="blind pairwise trials or one policy per trial"
    )
    p.add_argument("--seed", type=int, default=100_000, help="reset seed of trial 0 (then +1 per trial)")
    p.add_argument("--order-seed", type=int, default=0, help="seed of the random pair order and A/B sides")
    p.add_argument("--randomization", help="domain-randomization YAML or name (sim/randomization/)")
    p.add_argument(
        "--operator", choices=("terminal", "scripted"), default="terminal", help="who labels episodes"
    )
    p.add_argument("--operator-name", default="", help="recorded in the session file")
    p.add_argument("--device", default="cpu", help="torch device for checkpoint policies")
    p.add_argument("--report", help="write report.html/.md/.json into this folder at the end")
    p.set_defaults(func=run_session_cmd)

    r = add_command(g, "report", help="write the HTML + markdown report of a session file")
    r.add_argument("session", help="session JSON file")
    r.add_argument("--out", required=True, help="output folder")
    r.set_defaults(func=run_report)

    c = add_command(
        g,
        "correlate",
        help="sim-vs-real correlation (Pearson r, MMRV) of policies evaluated in two worlds",
        description="Evaluate the same policies in two worlds and report SIMPLER's Pearson r and MMRV.",
        epilog=CORRELATE_EPILOG,
    )
    c.add_argument("--policy", action="append", required=True, help="policy source (repeat, at least 2)")
    c.add_argument("--task", default="tabletop")
    c.add_argument("--episodes", type=int, default=20, help="episodes per policy per world")
    c.add_argument("--seed", type=int, default=100_000)
    c.add_argument("--sim-randomization", default="none", help="randomization of the 'sim' world")
    c.add_argument("--real-randomization", default="wide", help="randomization of the 'real' world")
    c.add_argument("--json", help="write the results JSON here")
    c.set_defaults(func=run_correlate)


def run_session_cmd(args) -> int:
    from pathlib import Path

    from robot_policy.evaluation.report import write_reports
    from robot_policy.evaluation.session import (
        InProcessRunner,
        ScriptedOperator,
        SessionConfig,
        SessionError,
        TerminalOperator,
        config_of,
        load_state,
        run_session,
    )

    path = Path(args.session)
    try:
        if args.policy:
            cfg = SessionConfig(
                policies=tuple(args.policy),
                names=tuple(args.name),
                task=args.task,
                trials=args.trials,
                mode=args.mode,
                seed=args.seed,
                randomization=args.randomization,
                order_seed=args.order_seed,
                operator=args.operator_name or args.operator,
            )
        elif path.exists():
            cfg = config_of(load_state(path))
        else:
            print(
                f"error: {path} does not exist: give --policy (at least 2 for --mode ab) to start a session",
                file=sys.stderr,
            )
            return 2
        runner = InProcessRunner(cfg, device=args.device)
        labeller = ScriptedOperator() if args.operator == "scripted" else TerminalOperator()
        try:
            state = run_session(path, runner, labeller, cfg=cfg if args.policy else None)
        finally:
            runner.close()
    except SessionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from robot_policy.evaluation.report import summarize

    s = summarize(state)
    print_table(
        [
            {
                "policy": n,
                "episodes": p["episodes"],
                "success": f"{p['successes']}/{p['episodes']}",
                "wilson95": f"[{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]",
                "partial": round(p["partial_mean"], 1),
            }
            for n, p in s["policies"].items()
        ]
    )
    if s["ranking"]:
        print_table(
            [{"rank": r["rank"], "policy": r["name"], "bt_score": round(r["score"], 3)} for r in s["ranking"]]
        )
    if args.report:
        paths = write_reports(state, args.report)
        print(f"report: {paths['html']}")
    return 0


def run_report(args) -> int:
    from robot_policy.evaluation.report import write_reports
    from robot_policy.evaluation.session import SessionError, load_state

    try:
        paths = write_reports(load_state(args.session), args.out)
    except (SessionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {paths['html']}\n        {paths['md']}")
    return 0


def run_correlate(args) -> int:
    from robot_policy.evaluation.ab import mmrv, pearson
    from robot_policy.evaluation.session import InProcessRunner, SessionConfig, SessionError

    if len(args.policy) < 2:
        print("error: --policy: correlation needs at least 2 policies", file=sys.stderr)
        return 2
    rates: dict[str, list[float]] = {}
    try:
        for world, rnd in (("sim", args.sim_randomization), ("real", args.real_randomization)):
            cfg = SessionConfig(policies=tuple(args.policy), task=args.task, mode="single", randomization=rnd)
            runner = InProcessRunner(cfg)
            from tqdm import tqdm

            rates[world] = []
            for name in cfg.names:
                ok = sum(
                    bool(runner.run(name, args.seed + i)["success"])
                    for i in tqdm(
                        range(args.episodes), desc=f"{world}: {name}", unit="ep", dynamic_ncols=True
                    )
                )
                rates[world].append(ok / args.episodes)
            runner.close()
    except SessionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {
        "policies": list(cfg.names),
        "sim": rates["sim"],
        "real": rates["real"],
        "pearson_r": pearson(rates["sim"], rates["real"]),
        "mmrv": mmrv(rates["sim"], rates["real"]),
        "episodes": args.episodes,
    }
    print_table(
        [{"policy": n, "sim": s, "real": r} for n, s, r in zip(out["policies"], out["sim"], out["real"])]
    )
    print(f"Pearson r = {out['pearson_r']:.3f}   MMRV = {out['mmrv']:.3f}")
    if args.json:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0
