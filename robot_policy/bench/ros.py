"""``robot-policy bench ros``: ROS 2 transport and observation-to-command latency.

1. Image transport between two processes: 640x480 rgb8 at 30 Hz, arrival minus capture stamp,
   frames delivered, for Fast DDS defaults vs the shipped profile (32 MB shared memory), with
   reliable and sensor-data (best-effort) QoS.
2. Observation-to-command latency through the graph, measured by sim_node as the arrival time
   of a JointTrajectory minus the capture stamp of the observation it answers: (a) an echo node
   that answers every joint state at once (no inference), (b) policy_node with a checkpoint
   (real inference, asynchronous chunking).
3. For (b), every chunk's path stage by stage (capture, arrival, settle, queue, inference,
   pickup, publish, transport to the robot, first action executed; robot_policy.inference.trace):
   a table of p50/p90/p99 per stage against its budget, the trace file (JSON lines) and, with
   --plot, a PNG of the breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robot_policy import conventions as conv
from robot_policy.console import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "ros",
        help="ROS 2: 640x480 image transport (default vs shipped DDS profile), observation-to-command latency",
        description=__doc__.split("\n", 2)[2],
        epilog="examples:\n  robot-policy bench ros\n  robot-policy bench ros --frames 300 --seconds 30 "
        "--checkpoint outputs/demo/policy\n  robot-policy bench ros --skip-graph",
    )
    p.add_argument(
        "--frames", type=int, default=150, help="frames per transport run (default 150 = 5 s at 30 Hz)"
    )
    p.add_argument("--rate", type=float, default=30.0, help="image rate in Hz (default 30)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per graph-latency run (default 15)")
    p.add_argument(
        "--checkpoint",
        help="policy checkpoint for the with-inference run (default: outputs/demo/policy, "
        "else a tiny policy is trained first, ~1 min)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds of graph run discarded before each latency window (DDS discovery, node start-up; "
        "default 5)",
    )
    p.add_argument("--skip-transport", action="store_true", help="only the graph latency")
    p.add_argument("--skip-graph", action="store_true", help="only the image transport")
    p.add_argument(
        "--skip-policy",
        action="store_true",
        help="graph latency of the echo path only (no checkpoint needed)",
    )
    p.add_argument("--out", help="JSON path (default outputs/bench/ros.json)")
    p.add_argument(
        "--plot", action="store_true", help="draw the stage breakdown to ros_stages.png beside the JSON"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra policy_node parameter (repeatable), e.g. --param threads:=2 to compare settings",
    )
    p.add_argument(
        "--realtime",
        type=int,
        default=0,
        metavar="PRIORITY",
        help="run every node of the latency graphs under SCHED_FIFO at this priority (node parameter "
        "realtime_priority; needs root or an rtprio limit; default 0: normal scheduler)",
    )
    p.add_argument(
        "--robot-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra sim_node parameter (repeatable), e.g. --robot-param realtime_priority:=10",
    )
    p.set_defaults(func=run)


def _env(profile: str | None, domain: int) -> dict:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain))
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    return env


def transport_run(profile: str | None, qos: str, frames: int, rate: float, domain: int) -> dict:
    """One publisher process and one subscriber process; returns the subscriber's figures."""
    cmd = [sys.executable, "-m", "robot_policy.ros.bench_nodes"]
    common = ["--count", str(frames), "--rate", str(rate), "--qos", qos]
    env = _env(profile, domain)
    sub = subprocess.Popen([*cmd, "image_sub", *common], env=env, stdout=subprocess.PIPE, text=True)
    pub = subprocess.Popen([*cmd, "image_pub", *common], env=env, stdout=subprocess.DEVNULL)
    out, _ = sub.communicate(timeout=frames / rate + 90)
    pub.wait(timeout=30)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"received": 0, "sent": frames}


def graph_run(
    checkpoint: str | None,
    seconds: float,
    domain: int,
    log: Path,
    trace: Path | None = None,
    params: dict[str, str] | None = None,
    warmup: float = 5.0,
    robot_params: dict[str, str] | None = None,
    realtime: int = 0,
) -> dict:
    """sim_node + (policy_node | echo node); returns sim's cmd-latency and policy diagnostics."""
    from robot_policy.ros.launch_file import NodeSpec, parse_launch_file
    from robot_policy.ros.launcher import Launcher

    os.environ.update(_env(None, domain))
    from robot_policy.ros.transport import apply_profile

    apply_profile(override=True)
    from robot_policy import resources  # the checkout's launch/, else the installed copy

    args = {"record": "false"}
    if checkpoint:
        args["checkpoint"] = checkpoint
    desc = parse_launch_file(resources.shipped_file("launch/sim.launch.xml"), args)
    for spec in desc.nodes:
        if spec.name == "sim":
            # The robot's latency figures cover the measured window only, not the start-up.
            spec.params["latency_window_s"] = f"{float(seconds):.3f}"
            spec.params.update(robot_params or {})
        if spec.name == "policy":
            if trace is not None:
                trace.unlink(missing_ok=True)
                spec.params["trace_file"] = str(trace.resolve())
            spec.params.update(params or {})
    if not checkpoint:
        desc.nodes.append(
            NodeSpec(
                pkg="robot_policy",
                executable=Path(sys.executable).name,
                name="echo",
                args=["-m", "robot_policy.ros.bench_nodes", "echo"],
            )
        )
    if realtime:
        for spec in desc.nodes:
            spec.params["realtime_priority"] = str(int(realtime))
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState

    from robot_policy.ros.client import GraphClient

    with open(log, "w") as f:
        launcher = Launcher(desc, grace=3.0, color=False, out=f)
        launcher.start()
        try:
            with GraphClient("bench_ros") as c:
                c.subscribe(conv.JOINT_STATES, JointState, keep=2)
                c.subscribe(conv.DIAGNOSTICS, DiagnosticArray, keep=20, sensor=False)
                c.latest(conv.JOINT_STATES, timeout=180)
                if checkpoint:
                    c.call(conv.POLICY_RESET, timeout=120)
                time.sleep(warmup + seconds)
                since = c.now() - 1.5
                deadline = time.time() + 5
                sim, pol = {}, {}
                while time.time() < deadline and not (sim and (pol or not checkpoint)):
                    time.sleep(0.2)
                    sim = c.diagnostics("sim: safety", since=since) or {}
                    pol = (c.diagnostics("policy: inference", since=since) or {}) if checkpoint else {}
        finally:
            launcher.shutdown()
    row = {
        k: float(sim[k])
        for k in ("cmd_latency_ms_p50", "cmd_latency_ms_p90", "cmd_latency_ms_p99")
        if k in sim
    }
    row["commands"] = int(sim.get("cmd_latency_n", 0))
    for k in (
        "inference_ms_p50",
        "inference_ms_p90",
        "inference_ms_p99",
        "obs_to_cmd_ms_p50",
        "obs_to_cmd_ms_p90",
        "obs_to_cmd_ms_p99",
        "dropped_late_actions",
        # Parts, when reported: image message -> array in the node, encoder and sampler (CPU).
        "image_decode_ms_p50",
        "image_decode_ms_p99",
        "encode_ms_p50",
        "encode_ms_p99",
        "denoise_ms_p50",
        "denoise_ms_p99",
    ):
        if k in pol and pol[k] != "nan":
            row[k] = float(pol[k])
    if pol.get("over_budget"):
        row["over_budget"] = pol["over_budget"]
    row["load_1min"] = round(os.getloadavg()[0], 2)
    row["realtime_priority"] = int(realtime)
    return row


def _stages(trace: Path, plot: bool, out_dir: Path, fps: float) -> list[dict]:
    """Per-stage table of the policy_node run's chunk trace (and its plot)."""
    from robot_policy.console import print_table
    from robot_policy.inference.trace import StageBudget, load, plot_stages, stage_table

    if not trace.exists():
        print(f"no chunk trace at {trace}: the policy node published nothing?")
        return []
    traces = load(trace)
    rows = stage_table(traces, StageBudget().resolved(1.0 / fps))
    print(f"chunk path by stage ({len(traces)} chunks; trace {trace}):")
    print_table(rows, ["stage", "n", "p50_ms", "p90_ms", "p99_ms", "budget_ms"])
    if plot and traces:
        print(f"saved {plot_stages(traces, out_dir / 'ros_stages.png')}")
    return rows


def _ensure_checkpoint(path: str | None) -> str:
    if path:
        return path
    if (Path("outputs/demo/policy") / "config.json").exists():
        return "outputs/demo/policy"
    from robot_policy.demo import DemoConfig, collect_and_train

    out = Path(tempfile.mkdtemp(prefix="bench_ros_"))
    ckpt, _ = collect_and_train(
        DemoConfig(out=str(out), demos=4, train_steps=20, batch_size=16, progress=False), out
    )
    return str(ckpt)


def run(args: argparse.Namespace) -> int:
    from robot_policy.bench._common import save_results
    from robot_policy.console import print_table
    from robot_policy.ros.transport import PROFILE_LOCALHOST

    results: dict = {"transport": [], "graph": []}
    if not args.skip_transport:
        print(f"image transport: 640x480 rgb8, {args.frames} frames at {args.rate:g} Hz, two processes")
        domain = 60
        for pname, prof in (("Fast DDS default", None), ("shipped (32 MB SHM)", str(PROFILE_LOCALHOST))):
            for qos in ("reliable", "sensor"):
                r = transport_run(prof, qos, args.frames, args.rate, domain)
                domain += 1
                row = {"profile": pname, "qos": qos, "delivered": f"{r['received']}/{r['sent']}"}
                row.update({k: r[k] for k in ("p50_ms", "p90_ms", "p99_ms") if k in r})
                results["transport"].append(row)
                print(
                    f"  {pname:<20} {qos:<8} delivered {row['delivered']:>8}  p50 {r.get('p50_ms', float('nan')):.2f} ms"
                )
        print_table(results["transport"], ["profile", "qos", "delivered", "p50_ms", "p90_ms", "p99_ms"])
    if not args.skip_graph:
        ckpt = None if args.skip_policy else _ensure_checkpoint(args.checkpoint)
        out_dir = Path(args.out).parent if args.out else Path("outputs/bench")
        out_dir.mkdir(parents=True, exist_ok=True)
        trace = out_dir / "ros_trace.jsonl"
        params = dict(p.split(":=", 1) for p in args.param)
        runs = [("echo (no inference)", None)] + ([] if ckpt is None else [(f"policy_node ({ckpt})", ckpt)])
        for name, cp in runs:
            print(f"graph: sim_node + {name}, {args.seconds:g} s")
            row = {
                "graph": name,
                **graph_run(
                    cp,
                    args.seconds,
                    70 + len(results["graph"]),
                    out_dir / "ros_graph.log",
                    trace if cp else None,
                    params if cp else None,
                    args.warmup,
                    dict(p.split(":=", 1) for p in args.robot_param),
                    args.realtime,
                ),
            }
            results["graph"].append(row)
        print_table(
            results["graph"],
            [
                "graph",
                "commands",
                "cmd_latency_ms_p50",
                "cmd_latency_ms_p90",
                "cmd_latency_ms_p99",
                "inference_ms_p50",
                "inference_ms_p90",
                "inference_ms_p99",
                "obs_to_cmd_ms_p90",
                "obs_to_cmd_ms_p99",
                "dropped_late_actions",
                "load_1min",
                "realtime_priority",
            ],
        )
        parts = [r for r in results["graph"] if "encode_ms_p50" in r]
        if parts:
            print("inference by part (policy node, CPU):")
            print_table(
                parts,
                [
                    "graph",
                    *(f"{p}_ms_{q}" for p in ("image_decode", "encode", "denoise") for q in ("p50", "p99")),
                ],
            )
        if ckpt is not None:
            fps = json.loads((Path(ckpt) / "config.json").read_text()).get("fps", 20.0)
            results["stages"] = _stages(trace, args.plot, out_dir, float(fps))
    path = save_results("ros", results, args.out)
    print(f"saved {path}")
    return 0
