"""``robot-policy hil learner`` and ``robot-policy hil actor``: HIL-SERL's two processes over gRPC.

This module only adds the two subcommands to the ``hil`` group (``robot_policy/cli/hil.py``
calls :func:`add_learner_parser` and :func:`add_actor_parser`); it registers no group itself.
Heavy imports (grpc, torch, mujoco) happen inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from robot_policy.console import add_command

LEARNER_EPILOG = """\
examples:
  # learner on this machine, two actors against it (a token is optional on 127.0.0.1)
  robot-policy hil learner --task tabletop --demos 20 --checkpoint-dir outputs/hil/learner
  robot-policy hil actor --task tabletop --actor-id a1 &
  robot-policy hil actor --task tabletop --actor-id a2 --seed 1 --episode-seed 20000 &

  # learner on a GPU box, reachable from the robot workstation: a token is required
  export ROBOT_POLICY_HIL_TOKEN=$(python -c "import secrets; print(secrets.token_hex(16))")
  robot-policy hil learner --address 0.0.0.0:50051 --device cuda --checkpoint-dir runs/hil

  # after a crash or Ctrl-C: continue with the same buffers, step count and weights
  robot-policy hil learner --checkpoint-dir outputs/hil/learner --resume

The learner trains continuously once the online buffer holds --min-online transitions and the
offline buffer (demonstrations + intervention steps) is not empty, publishes the actor's weights
every --publish-every steps, checkpoints every --checkpoint-every steps and on SIGINT/SIGTERM
(everything acknowledged to an actor is in that last checkpoint). It prints one status line
every --status-every seconds. docs/hil.md, "Actor and learner over gRPC", has the details.
"""

ACTOR_EPILOG = """\
examples:
  robot-policy hil actor --task tabletop --address 127.0.0.1:50051 --actor-id a1
  ROBOT_POLICY_HIL_TOKEN=... robot-policy hil actor --address gpu-box:50051 --steps 20000
  robot-policy hil actor --human none --steps 2000        # RL only, no simulated corrections

  # the actor on the ROS 2 graph: robot + arbiter in their own processes, the human through the arbiter
  robot-policy launch launch/sim.launch.xml arbiter:=true record:=false &
  robot-policy hil actor --env graph --actor-id graph1

The actor steps the simulated task with the newest weights it received and the simulated human
(the task's scripted expert taking over when the policy strays), pushes transitions in batches
of --push-every, and polls for new weights every --pull-every-s seconds. Network calls run in a
background thread with a --deadline-s deadline each: a learner that is down or restarting never
stalls the control loop; transitions wait in a bounded outbox (--max-pending-batches) and are
resent with the same sequence numbers (the learner drops duplicates) once it is back.
"""


def _flag_type(annotation: str):
    return {"int": int, "float": float, "str": str, "str | None": str, "float | None": float}[annotation]


def _add_config_flags(
    p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), group: str | None = None
) -> None:
    """One flag per dataclass field, its docstring as help (the configs document themselves)."""
    from robot_policy.config import field_docs

    docs = {k: v.replace("``", "") for k, v in field_docs(cls).items()}
    target = p.add_argument_group(group) if group else p
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            target.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=docs.get(f.name)
            )
        else:
            target.add_argument(
                flag,
                type=_flag_type(str(f.type)),
                default=f.default,
                help=f"{docs.get(f.name, '')} (default {f.default})",
            )


def _config(cls, args: argparse.Namespace, **override):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **override})


def _token(args: argparse.Namespace) -> str | None:
    from robot_policy.hil.rpc.config import TOKEN_ENV

    return args.token or os.environ.get(TOKEN_ENV) or None


def _add_env_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task (the same on learner and actors)")
    g.add_argument("--task", default="tabletop", help="simulated task (default tabletop)")
    g.add_argument(
        "--obs-mode", choices=["state", "image"], default="state", help="state vectors, or also camera frames"
    )
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    g.add_argument("--seed", type=int, default=0, help="torch / sampling seed (default 0)")
    g.add_argument(
        "--reward",
        choices=["env", "classifier", "rlif"],
        default="env",
        help="env: 1 when the simulator reports success (a perfect reward classifier); classifier: the "
        "trained success classifier of --classifier; rlif: -1 on the step that made the human take over, "
        "nothing else (default env)",
    )
    g.add_argument(
        "--classifier", default=None, help="folder of a trained reward classifier (--reward classifier)"
    )
    g.add_argument("--max-steps", type=int, default=120, help="episode step limit (default 120)")


def add_learner_parser(subparsers) -> argparse.ArgumentParser:
    """``hil learner``: the gRPC learner process (RLPD/SAC on the actors' transitions)."""
    from robot_policy.hil.rpc.config import LearnerLoopConfig, ServerConfig

    p = add_command(
        subparsers,
        "learner",
        help="the learner process: receive transitions over gRPC, train RLPD/SAC, publish weights",
        description="Runs the HIL-SERL learner as its own process: actors push transitions over gRPC "
        "(msgpack + safetensors, never pickle; a shared-secret token; bounded message sizes), a training "
        "thread updates the SAC agent on half-online / half-offline batches, and the actors pull the newest "
        "policy weights. A dead or stalled actor never blocks training.",
        epilog=LEARNER_EPILOG,
    )
    _add_config_flags(p, ServerConfig, group="server")
    _add_config_flags(p, LearnerLoopConfig, group="training loop and checkpoints")
    g = p.add_argument_group("learner process")
    g.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir"
    )
    g.add_argument(
        "--status-every", type=float, default=10.0, help="seconds between status lines (default 10)"
    )
    g.add_argument("--port-file", default=None, help="write the bound port here (for --address HOST:0)")
    _add_env_flags(p)
    g = p.add_argument_group("agent (RLPD / SAC, see docs/hil.md)")
    g.add_argument(
        "--demos",
        type=int,
        default=20,
        help="scripted demonstrations seeding the offline buffer (default 20)",
    )
    g.add_argument("--capacity", type=int, default=200_000, help="transitions per buffer (default 200000)")
    g.add_argument(
        "--min-online", type=int, default=256, help="online transitions before the first update (default 256)"
    )
    g.add_argument(
        "--batch-size", type=int, default=256, help="minibatch size, half online half offline (default 256)"
    )
    g.add_argument("--utd", type=int, default=2, help="critic updates per actor update (default 2)")
    g.add_argument("--discount", type=float, default=0.97, help="discount (default 0.97)")
    g.add_argument("--hidden", default="256,256", help="MLP widths, comma-separated (default 256,256)")
    g.add_argument(
        "--no-gripper-critic", action="store_true", help="let the actor drive the gripper dimension too"
    )
    g.add_argument("--device", default="cpu", help="torch device of the learner (default cpu)")
    p.set_defaults(func=_run_learner)
    return p


def add_actor_parser(subparsers) -> argparse.ArgumentParser:
    """``hil actor``: the simulated actor process (env + policy + simulated human)."""
    from robot_policy.hil.rpc.config import ActorConfig, ClientConfig

    p = add_command(
        subparsers,
        "actor",
        help="an actor process: run the policy in simulation with the simulated human, push transitions",
        description="Runs the simulated task with the newest policy weights from a learner "
        "(robot-policy hil learner) and the simulated human correcting it, and pushes every transition "
        "to the learner. Several actors (distinct --actor-id, --seed and --episode-seed) can feed one learner.",
        epilog=ACTOR_EPILOG,
    )
    _add_config_flags(p, ClientConfig, group="connection")
    _add_config_flags(p, ActorConfig, group="actor loop")
    _add_env_flags(p)
    g = p.add_argument_group("actor")
    g.add_argument(
        "--human",
        choices=["scripted", "none"],
        default="scripted",
        help="simulated human: the scripted expert, or none",
    )
    g.add_argument(
        "--episode-seed",
        type=int,
        default=10_000,
        help="seed of the first training episode; give each actor its own range (default 10000; "
        "demonstrations use 0.., evaluations 100000..)",
    )
    g.add_argument("--summary", default=None, help="write the run summary as JSON here")
    g = p.add_argument_group("where the arm is (docs/hil.md, 'The actor on the ROS graph')")
    g.add_argument(
        "--env",
        choices=["sim", "graph"],
        default="sim",
        help="sim: the task simulated in this process (fast); graph: a running ROS 2 graph (robot node "
        "behind the intervention arbiter: robot-policy launch launch/sim.launch.xml arbiter:=true "
        "record:=false), the policy on the arbiter's policy input and the simulated human on its teleop "
        "input (default sim)",
    )
    g.add_argument(
        "--graph-hardware",
        default="sim_tabletop",
        help="--env graph: the graph's robot setup, hardware/NAME.yaml or a path (default sim_tabletop)",
    )
    g.add_argument(
        "--graph-sim-node",
        default="/sim",
        help="--env graph: the simulated robot node whose seed parameter picks each scene (default /sim)",
    )
    g.add_argument(
        "--graph-tick-timeout-s",
        type=float,
        default=2.0,
        help="--env graph: a step fails when the robot has not ticked for this long (default 2)",
    )
    p.set_defaults(func=_run_actor)
    return p


def _run_learner(args: argparse.Namespace) -> int:
    from robot_policy.hil.rpc.config import LearnerLoopConfig, ServerConfig
    from robot_policy.hil.rpc.setup import build_learner

    server_cfg = _config(ServerConfig, args, token=_token(args))
    loop_cfg = _config(LearnerLoopConfig, args)
    if args.resume and not loop_cfg.checkpoint_dir:
        print(
            "error: --resume needs --checkpoint-dir (the folder the previous run checkpointed to)",
            file=sys.stderr,
        )
        return 2
    from robot_policy.hil.rpc.config import is_loopback

    if not server_cfg.token and not is_loopback(server_cfg.address):
        print(
            f"error: refusing to listen on {server_cfg.address} without a token; set ROBOT_POLICY_HIL_TOKEN "
            "(or --token) on the learner and every actor, or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    if not server_cfg.tls_cert and not is_loopback(server_cfg.address):
        print(
            f"warning: serving on {server_cfg.address} without TLS: the token and the weights cross the "
            "network in the clear; pass --tls-cert/--tls-key (actors: --tls-ca) or use a VPN/SSH tunnel",
            file=sys.stderr,
        )
    from robot_policy.hil.rpc.runner import run_learner

    learner, info = build_learner(args, log=lambda s: print(s, flush=True))
    return run_learner(
        learner,
        loop_cfg,
        server_cfg,
        resume=args.resume,
        info=info,
        status_every_s=args.status_every,
        port_file=args.port_file,
    )


def _graph_env(args: argparse.Namespace):
    """``--env graph``: the RL env over the running ROS 2 graph (layer 7, built here for hil.rpc)."""
    if args.task != "tabletop" or args.obs_mode != "state":
        raise ValueError(
            f"--env graph runs the tabletop task with state observations (got --task {args.task} "
            f"--obs-mode {args.obs_mode}); start the learner with --task tabletop --obs-mode state"
        )
    from robot_policy.hil_graph import GraphEnv, GraphEnvConfig

    return GraphEnv(
        GraphEnvConfig(
            hardware=args.graph_hardware,
            sim_node=args.graph_sim_node,
            max_steps=args.max_steps,
            tick_timeout_s=args.graph_tick_timeout_s,
        )
    )


def _run_actor(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading

    import grpc

    from robot_policy.hil.rpc.actor import run_actor
    from robot_policy.hil.rpc.client import LearnerClient
    from robot_policy.hil.rpc.config import ActorConfig, ClientConfig
    from robot_policy.hil.rpc.runner import check_transitions_match, wait_for_learner
    from robot_policy.hil.rpc.setup import build_actor, check_task

    client_cfg = _config(ClientConfig, args, token=_token(args))
    actor_cfg = _config(ActorConfig, args)
    probe = LearnerClient(client_cfg)
    try:
        # The actor builds its policy from the learner's agent description: it needs the learner once.
        status = wait_for_learner(probe, wait_s=max(actor_cfg.wait_for_weights_s, client_cfg.deadline_s))
        if status is None:
            print(
                f"error: no learner answered at {client_cfg.address} within {actor_cfg.wait_for_weights_s} s; "
                "start `robot-policy hil learner` first (or raise --wait-for-weights-s)",
                file=sys.stderr,
            )
            return 2
        check_task(args, status["spec"])
        env = _graph_env(args) if args.env == "graph" else None
        source, policy, spec = build_actor(args, status["spec"], env=env)
        check_transitions_match(status, spec)
    except grpc.RpcError as e:
        print(
            f"error: the learner at {client_cfg.address} refused the call: {e.code().name}: {e.details()}",
            file=sys.stderr,
        )
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        probe.close()
    print(f"learner at {client_cfg.address}: step {status['step']}, version {status['version']}", flush=True)
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: stop.set())

    def on_episode(ep: dict) -> None:
        print(
            f"episode {ep['seed']} ended at step {ep['step']}: success {ep['success']}  return {ep['return']:.2f}  "
            f"intervention steps {ep['intervention_steps']}/{ep['steps']}  weights v{ep['version']}",
            flush=True,
        )

    sessions: list[str] = []

    def on_weights(session: str, version: int, step: int) -> None:
        if session not in sessions:  # first weights of a learner run (a start or a restart)
            sessions.append(session)
            print(f"loaded weights v{version} (learner step {step}) of learner session {session}", flush=True)

    try:
        summary = run_actor(
            source,
            policy,
            client_cfg,
            actor_cfg,
            should_stop=stop.is_set,
            on_episode=on_episode,
            on_weights=on_weights,
        )
    finally:
        if env is not None:
            env.close()  # the graph env: a human still flagged in control lets go
    eps = summary["episodes"]
    rate = sum(bool(e.get("success")) for e in eps) / len(eps) if eps else float("nan")
    print(
        f"actor {client_cfg.actor_id}: {summary['steps']} steps, {len(eps)} episodes (success {rate:.2f}), "
        f"{summary['sent_transitions']} transitions delivered, {summary['dropped_transitions']} dropped, "
        f"{summary['unsent_batches']} batches undelivered, weights loaded {len(summary['weights_loaded'])}x "
        f"(last v{(summary['weights_loaded'] or [[0, 0]])[-1][1]})"
    )
    if args.summary:
        with open(args.summary, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == "__main__":  # python -m robot_policy.cli.hil_rpc {learner,actor} ...
    parser = argparse.ArgumentParser(prog="python -m robot_policy.cli.hil_rpc")
    sub = parser.add_subparsers(dest="command", required=True)
    add_learner_parser(sub)
    add_actor_parser(sub)
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
