"""``robot-policy serve``: a checkpoint behind a websocket policy server (openpi's protocol)."""

from __future__ import annotations

from robot_policy.console import add_command

DESCRIPTION = """\
Serve a checkpoint over the network, so a robot without a GPU can use a policy that runs on
another machine. The server speaks openpi's websocket protocol (msgpack-numpy frames; the
metadata first, then one reply per observation), so openpi's client can call it, and
`policy_node` uses it with `server:=ws://HOST:PORT`. Inference runs in the inference engine
(CUDA graphs, bf16, warm start), one request at a time, off the network loop.

Security defaults: it listens on 127.0.0.1 only. To listen on the network a shared key is
required (--api-key, or better the ROBOT_POLICY_API_KEY environment variable, which stays out
of `ps`); clients send it as 'Authorization: Api-Key KEY'. Give --certfile/--keyfile for TLS
(wss://) on networks you do not trust.

Health: GET /healthz answers 200 while the process runs; GET /readyz answers 503 until the
model is loaded and warmed up, then 200. Stop with Ctrl-C or SIGTERM (connections are closed
with 1001, the running inference finishes). Protocol and limits: docs/serving.md.
"""

EPILOG = """\
examples:
  robot-policy serve --checkpoint runs/lift_flow                       # ws://127.0.0.1:8000, this machine only
  ROBOT_POLICY_API_KEY=$(openssl rand -hex 16) \\
    robot-policy serve --checkpoint runs/lift_flow --host 0.0.0.0 --device cuda --warm-start 1
  robot-policy serve --checkpoint runs/lift_flow --host 0.0.0.0 --certfile server.pem --keyfile server.key
  curl -f http://127.0.0.1:8000/readyz                                   # 200 once warm
then, on the robot:  policy_node --ros-args -p server:=ws://GPU_HOST:8000 (key from ROBOT_POLICY_API_KEY)
"""

ENGINE_FLAGS = (
    "--device",
    "--threads",
    "--steps",
    "--sampler",
    "--precision",
    "--warm-start",
    "--warm-schedule",
)
"""The serving flags the server takes (robot_policy.inference.serving): the engine's; the chunk
scheduler runs on the robot."""


def _defaults():
    from robot_policy.inference.serving import EngineConfig, ServingConfig

    return ServingConfig(engine=EngineConfig(device="auto"))


def register(sub) -> None:
    p = add_command(
        sub,
        "serve",
        help="serve a checkpoint over websockets (openpi protocol) for remote robots",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder written by 'robot-policy train'")
    net = p.add_argument_group("network and security (docs/serving.md)")
    net.add_argument("--host", default="127.0.0.1", help="interface to listen on [default: %(default)s]")
    net.add_argument(
        "--port", type=int, default=8000, help="TCP port (0: any free port) [default: %(default)s]"
    )
    net.add_argument(
        "--api-key",
        default=None,
        help="shared key clients must send ('Authorization: Api-Key KEY'); default: $ROBOT_POLICY_API_KEY; "
        "required unless --host is a loopback address",
    )
    net.add_argument("--certfile", default="", help="PEM certificate: serve TLS (wss://)")
    net.add_argument("--keyfile", default="", help="PEM private key of --certfile (if not inside it)")
    lim = p.add_argument_group("limits")
    lim.add_argument(
        "--max-message-bytes",
        type=int,
        default=0,
        help="largest request; bigger ones close the connection (0: twice the largest valid request, >= 1 MiB)",
    )
    lim.add_argument(
        "--queue",
        type=int,
        default=4,
        help="requests waiting or running at once; more are answered 'busy' [%(default)s]",
    )
    lim.add_argument(
        "--deadline-ms",
        type=float,
        default=1000.0,
        help="answer 'deadline' instead of actions this long after a request arrived [%(default)s]",
    )
    lim.add_argument("--max-connections", type=int, default=32, help="open connections at once [%(default)s]")
    from robot_policy.inference.serving import add_serving_args

    add_serving_args(p, _defaults(), only=ENGINE_FLAGS, title="inference engine")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    import os
    import sys
    from pathlib import Path

    from robot_policy.inference.serving import serving_from_args
    from robot_policy.policies import CheckpointError, read_config
    from robot_policy.serving.server import API_KEY_ENV, PolicyServer, ServerConfig, message_limit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        serving = serving_from_args(args, _defaults(), only=ENGINE_FLAGS)
        pcfg = read_config(args.checkpoint)  # fails fast, before listening, on a bad folder
        cfg = ServerConfig(
            host=args.host,
            port=args.port,
            api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV, ""),
            certfile=args.certfile,
            keyfile=args.keyfile,
            max_message_bytes=args.max_message_bytes or message_limit(pcfg),
            queue_size=args.queue,
            deadline_ms=args.deadline_ms,
            max_connections=args.max_connections,
        )
    except (ValueError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def load():
        from robot_policy.inference.engine import InferenceEngine

        return InferenceEngine.load(args.checkpoint, serving.engine)

    return PolicyServer(load, cfg, name=Path(args.checkpoint).name).run()
