"""``robot-policy evaluate``: operator-labelled sessions (blind A/B), reports, sim-vs-real correlation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from robot_policy.console import add_command, add_group, print_table

OPERATORS = ("terminal", "scripted", "keyboard", "gamepad", "service")

SESSION_DESCRIPTION = """\
Run (or resume) an evaluation session. In 'ab' mode each trial runs two policies from the same
reset in a random order; the operator sees only the labels A and B, labels each episode
(success / failure / partial 0-100 / note, or abort: re-run, not counted) and then states a
preference A / B / tie. The policy behind each label is stored in the session file and
revealed in the report once the session is complete. The session file is rewritten
atomically after every episode: run the same command again (or just --session FILE) to resume.

Where episodes run:
  (default)   in this process's simulation; policies: checkpoint folders, or 'expert' /
              'expert:noise=N,action_noise=S' (the task's scripted expert, a baseline).
  --ros       through the ROS 2 graph on the robot of --hardware: a simulated one (sim_node;
              resets from the trial's seed, success from /sim/success) or a real one (robot_node
              + camera_node; the operator resets the scene). One policy_node per policy:
              checkpoint folders or remote policy servers (ws://HOST:PORT, 'robot-policy serve').
              Every episode is recorded (all streams, labels, hidden identity, latencies) to
              --dataset. --attach uses a robot graph you started (launch files, without policy).

Operators: 'terminal' (typed answers), 'keyboard' / 'gamepad' (the teleop device's episode
keys: start, success, failure, discard=abort, commit=end/tie), 'service' (/evaluate/* ROS
services for an operator's UI), 'scripted' (labels from the simulator's success oracle: a fully
automatic simulated session; the tests run it).
"""

SESSION_EPILOG = """\
examples:
  robot-policy evaluate session --session outputs/eval/demo.json --policy expert \\
      --policy expert:action_noise=0.03 --trials 20 --operator scripted --report outputs/eval/demo
  robot-policy evaluate session --ros --session outputs/eval/ros.json --policy runs/a --policy runs/b \\
      --trials 10 --operator scripted --report outputs/eval/ros            # simulated robot, graph
  robot-policy evaluate session --ros --hardware fr3 --session sessions/fr3.json --policy runs/a \\
      --policy ws://gpu-box:8000 --trials 30 --operator gamepad --operator-name alice
  robot-policy evaluate session --session sessions/fr3.json --ros --hardware fr3 --operator gamepad   # resume
"""

CORRELATE_EPILOG = """\
examples:
  # from two labelled sessions (policies matched by name), e.g. simulation vs the real robot:
  robot-policy evaluate correlate --sim-session sessions/sim.json --real-session sessions/fr3.json --report out/corr
  # both worlds in process: the plain simulation vs the transfer benchmark's target world
  robot-policy evaluate correlate --policy expert --policy expert:action_noise=0.05 \\
      --policy expert:action_noise=0.1 --episodes 20 --sim-randomization none --real-randomization target_world
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
    p.add_argument(
        "--task", default="tabletop", help="simulation task of the in-process runner (default tabletop)"
    )
    p.add_argument("--trials", type=int, default=10, help="trials (ab: episode pairs; single: episodes)")
    p.add_argument(
        "--mode", choices=("ab", "single"), default="ab", help="blind pairwise trials or one policy per trial"
    )
    p.add_argument("--seed", type=int, default=100_000, help="reset seed of trial 0 (then +1 per trial)")
    p.add_argument("--order-seed", type=int, default=0, help="seed of the random pair order and A/B sides")
    p.add_argument("--randomization", help="domain-randomization YAML or name (sim/randomization/)")
    p.add_argument("--operator", choices=OPERATORS, default="terminal", help="who labels episodes, and how")
    p.add_argument(
        "--device-options", default="", help="keyboard/gamepad options: key=value[,key=value] or a YAML"
    )
    p.add_argument("--operator-name", default="", help="recorded in the session file and the dataset")
    p.add_argument("--device", default="cpu", help="torch device for checkpoint policies (in process)")
    p.add_argument("--report", help="write report.html/.md/.json into this folder at the end")
    p.add_argument("--no-media", action="store_true", help="no per-episode camera thumbnails and videos")
    ros = p.add_argument_group("through the ROS 2 graph")
    ros.add_argument("--ros", action="store_true", help="run episodes through the graph (see above)")
    ros.add_argument("--hardware", default="sim_tabletop", help="robot setup: hardware/NAME.yaml or a path")
    ros.add_argument(
        "--episode-seconds", type=float, default=10.0, help="time limit of one episode [%(default)s]"
    )
    ros.add_argument(
        "--attach", action="store_true", help="use a running robot graph (start only the policies)"
    )
    ros.add_argument("--dataset", help="recorder's episode store (default: next to the session file)")
    ros.add_argument("--no-record", action="store_true", help="do not record episodes")
    ros.add_argument("--startup-timeout", type=float, default=240.0, help="seconds for the graph to come up")
    p.set_defaults(func=run_session_cmd)

    r = add_command(g, "report", help="write the HTML + markdown report of a session file")
    r.add_argument("session", help="session JSON file")
    r.add_argument("--out", required=True, help="output folder")
    r.set_defaults(func=run_report)

    c = add_command(
        g,
        "correlate",
        help="sim-vs-real correlation (Pearson r, MMRV) of policies evaluated in two worlds",
        description="Compare the success rates of the same policies in two worlds and report SIMPLER's "
        "Pearson r and MMRV: from two labelled session files (e.g. simulation and the real robot), or "
        "by running both worlds in process with two randomization configs.",
        epilog=CORRELATE_EPILOG,
    )
    c.add_argument("--sim-session", help="labelled session file of the 'sim' world")
    c.add_argument("--real-session", help="labelled session file of the 'real' world")
    c.add_argument(
        "--policy", action="append", default=[], help="policy source (repeat, >= 2; in-process runs)"
    )
    c.add_argument("--name", action="append", default=[], help="display name per --policy")
    c.add_argument("--task", default="tabletop")
    c.add_argument("--episodes", type=int, default=20, help="episodes per policy per world")
    c.add_argument("--seed", type=int, default=100_000)
    c.add_argument("--sim-randomization", default="none", help="randomization of the 'sim' world")
    c.add_argument("--real-randomization", default="wide", help="randomization of the 'real' world")
    c.add_argument("--json", help="write the results JSON here")
    c.add_argument("--report", help="write correlation.html/.md/.json into this folder")
    c.set_defaults(func=run_correlate)


def _session_config(args, path: Path):
    from robot_policy.evaluation.session import SessionConfig, config_of, load_state

    if args.policy:
        return SessionConfig(
            policies=tuple(args.policy),
            names=tuple(args.name),
            task=args.task,
            trials=args.trials,
            mode=args.mode,
            seed=args.seed,
            randomization=args.randomization,
            order_seed=args.order_seed,
            operator=args.operator_name or args.operator,
            hardware=args.hardware if args.ros else "",
            episode_s=args.episode_seconds,
        ), True
    if path.exists():
        return config_of(load_state(path)), False
    return None, False


def _labeller(args, hw, client=None):
    """The operator of ``--operator`` (and what to close afterwards)."""
    from robot_policy.evaluation.labels import DeviceOperator, ScriptedOperator, TerminalOperator

    if args.operator == "scripted":
        return ScriptedOperator(), []
    if args.operator == "terminal":
        return TerminalOperator(), []
    if args.operator == "service":
        from robot_policy.ros.client import GraphClient
        from robot_policy.ros.evaluate import ServiceOperator

        own = client is None
        client = client or GraphClient("evaluator")
        return ServiceOperator(client), [client.close] if own else []
    from robot_policy.teleop.base import load_options, make_teleop

    opts = args.device_options
    options = load_options(opts) if opts.endswith((".yaml", ".yml")) else _kv(opts)
    dev = make_teleop(args.operator, hw, options)
    dev.connect()
    estop = None
    if client is not None:
        from robot_policy import conventions as conv

        estop = lambda latched: client.call(conv.ESTOP if latched else conv.ESTOP_RESET)  # noqa: E731
    return DeviceOperator(dev, estop=estop), [dev.disconnect]


def _kv(text: str) -> dict:
    import yaml

    out = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        out[k.strip()] = yaml.safe_load(v)
    return out


def _print_summary(state) -> None:
    from robot_policy.evaluation.report import summarize

    s = summarize(state)
    if not s["complete"]:
        print(f"session not complete: {s['episodes']} labelled episodes so far (identities stay hidden)")
        return
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


def run_session_cmd(args) -> int:
    from robot_policy.config import ConfigError
    from robot_policy.evaluation.report import write_reports
    from robot_policy.evaluation.session import SessionError
    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.teleop.base import TeleopError

    path = Path(args.session)
    try:
        cfg, new = _session_config(args, path)
        if cfg is None:
            print(
                f"error: {path} does not exist: give --policy (at least 2 for --mode ab) to start a session",
                file=sys.stderr,
            )
            return 2
        media = None if args.no_media else path.parent / f"{path.stem}_media"
        hw = load_hardware_config(cfg.hardware or args.hardware)
        if cfg.hardware:
            state = _graph_session(args, cfg, new, path, hw, media)
        else:
            from robot_policy.evaluation.session import InProcessRunner, run_session

            runner = InProcessRunner(cfg, device=args.device, media_dir=media)
            labeller, closers = _labeller(args, hw)
            try:
                state = run_session(path, runner, labeller, cfg=cfg if new else None)
            finally:
                runner.close()
                for close in closers:
                    close()
    except (SessionError, ConfigError, TeleopError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: every labelled episode is saved in {path}; run the same command to resume")
        return 130
    _print_summary(state)
    if args.report:
        paths = write_reports(state, args.report, root=path.parent)
        print(f"report: {paths['html']}")
    return 0


def _graph_session(args, cfg, new: bool, path: Path, hw, media):
    """Launch the session's graph, run the session through it, stop the graph."""
    from robot_policy.evaluation.session import run_session
    from robot_policy.ros.client import GraphClient
    from robot_policy.ros.evaluate_graph import GraphRunner, GraphRunnerConfig, session_launch
    from robot_policy.ros.launcher import Launcher
    from robot_policy.ros.transport import apply_profile

    apply_profile()
    record = not args.no_record
    dataset = args.dataset or str(path.parent / f"{path.stem}.zarr")
    desc = session_launch(
        list(cfg.policies),
        cfg.hardware,
        launch_world=not args.attach,
        record=record,
        dataset=dataset,
        operator=cfg.operator,
        randomization=cfg.randomization,
        seed=cfg.seed,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    log_path = path.parent / f"{path.stem}_graph.log"
    print(f"starting {', '.join(n.name for n in desc.nodes)} (logs: {log_path})", flush=True)
    with open(log_path, "a") as log:
        launcher = Launcher(desc, grace=3.0, color=False, out=log)
        launcher.start()
        closers = []
        try:
            with GraphClient("evaluator") as client:
                rcfg = GraphRunnerConfig(
                    episode_s=cfg.episode_s,
                    record=record,
                    dataset=dataset if (args.dataset or not args.attach) else "",
                )
                runner = GraphRunner(client, hw, list(cfg.names), rcfg, media_dir=media)
                labeller, closers = _labeller(args, hw, client)
                runner.end_requested = getattr(labeller, "end_requested", None)

                def dead():
                    return next((p.spec.name for p in launcher.procs if p.popen.poll() is not None), None)

                runner.wait_ready(timeout=args.startup_timeout, alive=dead)
                print("graph ready", flush=True)
                return run_session(path, runner, labeller, cfg=cfg if new else None)
        finally:
            for close in closers:
                close()
            launcher.shutdown()


def run_report(args) -> int:
    from robot_policy.evaluation.report import write_reports
    from robot_policy.evaluation.session import SessionError, load_state

    try:
        paths = write_reports(load_state(args.session), args.out, root=Path(args.session).parent)
    except (SessionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {paths['html']}\n        {paths['md']}")
    return 0


def _rates_in_process(args) -> tuple[dict, dict]:
    from tqdm import tqdm

    from robot_policy.evaluation.session import InProcessRunner, SessionConfig

    worlds = {}
    for world, rnd in (("sim", args.sim_randomization), ("real", args.real_randomization)):
        cfg = SessionConfig(
            policies=tuple(args.policy),
            names=tuple(args.name),
            task=args.task,
            mode="single",
            randomization=rnd,
        )
        runner = InProcessRunner(cfg)
        worlds[world] = {}
        try:
            for name in cfg.names:
                ok = sum(
                    bool(runner.run(name, args.seed + i)["success"])
                    for i in tqdm(
                        range(args.episodes), desc=f"{world} ({rnd}): {name}", unit="ep", dynamic_ncols=True
                    )
                )
                worlds[world][name] = (ok, args.episodes)
        finally:
            runner.close()
    return worlds["sim"], worlds["real"]


def run_correlate(args) -> int:
    from robot_policy.config import ConfigError
    from robot_policy.evaluation.correlation import correlate, rates_from_session, write_correlation_report
    from robot_policy.evaluation.session import SessionError, load_state

    try:
        if args.sim_session or args.real_session:
            if not (args.sim_session and args.real_session):
                raise SessionError(
                    "give both --sim-session and --real-session (or --policy for in-process runs)"
                )
            sim_state, real_state = load_state(args.sim_session), load_state(args.real_session)
            sim, real = rates_from_session(sim_state), rates_from_session(real_state)
            names = (Path(args.sim_session).stem, Path(args.real_session).stem)
        else:
            if len(args.policy) < 2:
                raise SessionError(
                    "--policy: correlation needs at least 2 policies (or two --*-session files)"
                )
            sim, real = _rates_in_process(args)
            names = (f"sim ({args.sim_randomization})", f"real ({args.real_randomization})")
        out = correlate(sim, real, *names)
    except (SessionError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(
        [
            {
                "policy": p["name"],
                out["sim_world"]: round(p["sim"], 3),
                out["real_world"]: round(p["real"], 3),
            }
            for p in out["policies"]
        ]
    )
    print(f"Pearson r = {out['pearson_r']:.3f}   MMRV = {out['mmrv']:.3f}")
    # Flat lists too, as before (scripts read sim/real/pearson_r/mmrv).
    out.update(
        sim=[p["sim"] for p in out["policies"]],
        real=[p["real"] for p in out["policies"]],
        names=[p["name"] for p in out["policies"]],
        episodes=args.episodes,
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.report:
        paths = write_correlation_report(out, args.report)
        print(f"report: {paths['html']}")
    return 0
