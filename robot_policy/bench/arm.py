"""``robot-policy bench arm``: control-loop timing and command-to-motion latency of an arm backend.

Drives the backend of each hardware config through ``ArmController`` (the loop ``robot_node``
runs; no ROS) and measures:

1. Loop period jitter: the time between the starts of consecutive control ticks minus the nominal
   period, at the backend's own rate (franka 50 Hz, sim the hardware config's control_hz); p50 and
   p99 of its absolute value, plus overruns (ticks longer than a period) and, for grid-paced
   simulations, late ticks run at once to keep the grid.
2. Command-to-motion latency: from ``submit_trajectory`` (a 0.1 rad move of joint 1 over 0.5 s)
   until the measured state first shows the joint more than ``--threshold`` rad from where it was,
   by the capture stamp of that state; moves alternate direction, with a rest and a random phase
   against the loop in between. It includes the arm's own response (franky's jerk-limited
   planning, the simulated actuator's dynamics), not only the software path.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from robot_policy.console import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "arm",
        help="arm backends: control-loop period jitter and command-to-motion latency",
        description=__doc__.split("\n", 2)[2],
        epilog="examples:\n  robot-policy bench arm --hardware fr3_sim sim_tabletop\n"
        "  robot-policy bench arm --hardware sim_tabletop --moves 20",
    )
    p.add_argument(
        "--hardware",
        nargs="+",
        default=["fr3_sim", "sim_tabletop"],
        help="hardware configs to measure (default: fr3_sim sim_tabletop)",
    )
    p.add_argument("--moves", type=int, default=10, help="trajectory submissions per config (default 10)")
    p.add_argument("--threshold", type=float, default=1e-3, help="motion onset in rad (default 0.001)")
    p.add_argument("--rest", type=float, default=1.0, help="seconds of rest between moves (default 1)")
    p.add_argument("--out", default=None, help="JSON output path (default outputs/bench/arm.json)")
    p.set_defaults(func=_run)


class _Recorder:
    """Tick start times and (stamp, joint 1) of every state the loop read, from ``on_tick``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.starts: list[float] = []
        self.states: list[tuple[float, float]] = []

    def __call__(self, r) -> None:
        with self.lock:
            self.starts.append(r.started)
            if r.state is not None:
                self.states.append((r.state.stamp, float(r.state.position[0])))


def measure(hw_name: str, moves: int, threshold: float, rest: float) -> dict:
    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.robots import ArmController, make_arm

    hw = load_hardware_config(hw_name)
    rec = _Recorder()
    ctl = ArmController(make_arm(hw), on_tick=rec)  # clock: time.monotonic, as the arm stamps
    latencies: list[float] = []
    missed = 0
    t_start = time.monotonic()
    with ctl:
        ctl.wait_for_state(60.0)
        time.sleep(rest)
        rng = np.random.default_rng(0)
        for i in range(moves):
            # A random phase against the loop: submitting right after the onset check (always just
            # after a tick) would measure the worst case every time.
            time.sleep(rng.uniform(0.0, 1.0 / ctl.arm.control_hz))
            cmd = ctl.current_command()
            q_from = ctl.state().position[0]
            cmd[0] = q_from + (0.1 if i % 2 == 0 else -0.1)
            with rec.lock:
                n0 = len(rec.states)
            t_submit = time.monotonic()
            if not ctl.submit_trajectory([0.5], [cmd]):
                raise RuntimeError(f"{hw_name}: trajectory refused: {ctl.status()['last_rejection']}")
            onset = None
            deadline = t_submit + 10.0
            while onset is None and time.monotonic() < deadline:
                time.sleep(0.002)
                with rec.lock:
                    new = rec.states[n0:]
                onset = next((s for s, q in new if s >= t_submit and abs(q - q_from) > threshold), None)
            if onset is None:
                missed += 1
            else:
                latencies.append(onset - t_submit)
            # Let the move finish (the watchdog then holds) before the next one.
            time.sleep(0.5 + rest)
        status = ctl.status()
        pacing = ctl.pacing_status()
        hz = ctl.arm.control_hz
    starts = np.asarray(rec.starts)
    err = np.abs(np.diff(starts) - 1.0 / hz) * 1e3 if starts.size > 2 else np.zeros(1)
    lat = np.asarray(latencies) * 1e3
    row = {
        "hardware": hw_name,
        "backend": hw.arm,
        "loop_hz": hz,
        "ticks": int(starts.size),
        "seconds": round(time.monotonic() - t_start, 1),
        "period_err_ms_p50": float(np.percentile(err, 50)),
        "period_err_ms_p99": float(np.percentile(err, 99)),
        "period_err_ms_max": float(err.max()),
        "overruns": int(status["overruns"]),
        "late_ticks": int(pacing.get("late_ticks", 0)),
        "moves": moves,
        "motion_ms_p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "motion_ms_p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "motion_ms_max": float(lat.max()) if lat.size else float("nan"),
        "no_motion": missed,
    }
    return row


def _run(args: argparse.Namespace) -> int:
    from robot_policy.bench._common import save_results
    from robot_policy.console import print_table

    rows = []
    for name in args.hardware:
        print(
            f"arm bench: {name}: {args.moves} moves of joint 1 (0.1 rad in 0.5 s), onset > {args.threshold:g} rad"
        )
        rows.append(measure(name, args.moves, args.threshold, args.rest))
    print_table(
        rows,
        [
            "hardware",
            "backend",
            "loop_hz",
            "ticks",
            "period_err_ms_p50",
            "period_err_ms_p99",
            "overruns",
            "late_ticks",
            "motion_ms_p50",
            "motion_ms_p99",
            "no_motion",
        ],
    )
    path = save_results("arm", rows, args.out)
    print(f"saved {path}")
    return 0
