"""``robot-policy bench record``: does recording lose demonstrations, and whose fault is a gap?

Runs ``launch/record.launch.xml`` (simulated robot with its cameras, recorder, scripted teleop)
for N episodes at its default settings, then compares two timelines:

* what the **publisher** did: the simulated robot's control loop reports on ``/diagnostics``
  (``sim: control loop``) how many ticks it ran, how many ran late and were caught up on the
  grid, and how many it had to skip in stalls;
* what the **receiver** got: the recorder's per-episode ``frames_missing`` and ``gaps`` in the
  committed store.

A gap the receiver saw while the publisher skipped nothing was lost on the way (transport or
subscriber); skipped ticks are the publisher's own stalls.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from robot_policy import conventions as conv
from robot_policy.console import add_command

SIM_LOOP = "sim: control loop"


def register(sub) -> None:
    p = add_command(
        sub,
        "record",
        help="record N scripted episodes through record.launch.xml: committed, gaps per stream, publisher vs receiver",
        description=__doc__.split("\n", 2)[2],
        epilog="examples:\n  robot-policy bench record                 # 50 episodes, two 84x84 cameras\n"
        "  robot-policy bench record --episodes 10 --dataset /tmp/rec.zarr",
    )
    p.add_argument("--episodes", type=int, default=50, help="scripted episodes to record (default 50)")
    p.add_argument("--hardware", default="sim_tabletop", help="robot setup (default: two cameras at 20 Hz)")
    p.add_argument("--dataset", help="where to record (default: a temporary folder, deleted after)")
    p.add_argument("--out", help="JSON path (default outputs/bench/record.json)")
    p.set_defaults(func=run)


def record_run(episodes: int, hardware: str, dataset: Path, log: Path) -> dict:
    """Run the launch file to its end; returns the publisher's last loop diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray

    from robot_policy import resources
    from robot_policy.ros.client import GraphClient
    from robot_policy.ros.launch_file import parse_launch_file
    from robot_policy.ros.launcher import Launcher
    from robot_policy.ros.transport import apply_profile

    apply_profile()
    args = {"episodes": str(episodes), "dataset": str(dataset), "hardware": hardware}
    desc = parse_launch_file(resources.shipped_file("launch/record.launch.xml"), args)
    publisher: dict = {}
    with open(log, "w") as f, GraphClient("bench_record") as client:
        client.subscribe(conv.DIAGNOSTICS, DiagnosticArray, keep=50, sensor=False)
        launcher = Launcher(desc, grace=5.0, color=False, out=f)
        launcher.start()
        try:
            from tqdm import tqdm

            bar = tqdm(total=episodes, unit="ep", desc="recording", dynamic_ncols=True)
            while launcher.poll():
                time.sleep(0.5)
                # The sim node is gone at the end: keep its newest report.
                publisher = client.diagnostics(SIM_LOOP) or publisher
                bar.n = _committed(dataset)
                bar.refresh()
            bar.close()
        finally:
            launcher.shutdown()
    if launcher.failed:
        raise RuntimeError(f"nodes failed: {launcher.failed}; see {log}")
    return publisher


def _committed(dataset: Path) -> int:
    from robot_policy.data import EpisodeStore

    try:
        return EpisodeStore.open(dataset).num_episodes
    except Exception:  # noqa: BLE001 - not created yet, or being written
        return 0


def summarize(dataset: Path, episodes: int, publisher: dict) -> dict:
    """Committed episodes, gaps per stream (size histogram) and the publisher/receiver split."""
    from robot_policy.data import EpisodeStore

    store = EpisodeStore.open(dataset)
    hist: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    missing: collections.Counter = collections.Counter()
    gapped_episodes = 0
    for i in range(store.num_episodes):
        meta = store.episode_meta(i)
        gaps = meta.get("gaps") or []
        gapped_episodes += bool(gaps)
        for g in gaps:
            hist[g["stream"]][int(g.get("missing", g.get("frames", 1)))] += 1
        missing.update({k: int(v) for k, v in (meta.get("frames_missing") or {}).items()})
    skipped = int(publisher.get("skipped_ticks", 0))
    received_missing = missing.get(conv.JOINT_STATES, 0)
    return {
        "episodes_requested": episodes,
        "episodes_committed": store.num_episodes,
        "episodes_with_gaps": gapped_episodes,
        "frames": store.num_frames,
        "gap_histogram": {s: dict(sorted(c.items())) for s, c in hist.items()},
        "frames_missing_per_stream": dict(missing),
        "publisher": {
            "ticks": int(publisher.get("ticks", 0)),
            "late_ticks_caught_up": int(publisher.get("late_ticks", 0)),
            "max_lateness_ms": float(publisher.get("max_lateness_ms", "nan")),
            "stalls": int(publisher.get("stalls", 0)),
            "skipped_ticks": skipped,
        },
        # Joint-state frames the recorder missed that the publisher never skipped: lost on the way.
        "receiver_only_missing_joint_states": max(received_missing - skipped, 0),
    }


def run(args: argparse.Namespace) -> int:
    from robot_policy.bench._common import save_results
    from robot_policy.console import print_table

    tmp = None
    if args.dataset:
        dataset = Path(args.dataset)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_record_")
        dataset = Path(tmp.name) / "rec.zarr"
    out_dir = Path(args.out).parent if args.out else Path("outputs/bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "record_graph.log"
    print(
        f"recording {args.episodes} scripted episodes through record.launch.xml ({args.hardware}); logs: {log}"
    )
    t0 = time.perf_counter()
    publisher = record_run(args.episodes, args.hardware, dataset, log)
    res = summarize(dataset, args.episodes, publisher)
    res["wall_s"] = time.perf_counter() - t0
    pub = res["publisher"]
    print_table(
        [
            {
                "committed": f"{res['episodes_committed']}/{args.episodes}",
                "with gaps": res["episodes_with_gaps"],
                "frames": res["frames"],
                "pub ticks": pub["ticks"],
                "pub late (caught up)": pub["late_ticks_caught_up"],
                "pub max late ms": pub["max_lateness_ms"],
                "pub skipped": pub["skipped_ticks"],
                "recv-only missing": res["receiver_only_missing_joint_states"],
            }
        ]
    )
    rows = [
        {
            "stream": s,
            "gaps by size (frames: count)": h,
            "frames missing": res["frames_missing_per_stream"].get(s),
        }
        for s, h in res["gap_histogram"].items()
    ]
    if rows:
        print_table(rows)
    else:
        print("no gaps in any stream")
    path = save_results("record", res, args.out)
    print(f"saved {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if res["episodes_committed"] == args.episodes else 1
