"""``robot-policy bench sim``: environment steps/s per task, without cameras and with default cameras.

The arm follows the scripted expert so contacts and grasps are exercised as in data
collection, but only ``env.step`` is timed (the expert's IK is excluded). Rendering time per
frame is measured separately on the same cameras.
"""

from __future__ import annotations

import time

from robot_policy.console import add_command


def _measure(task: str, cameras: dict | None, steps: int, randomization) -> dict:
    from robot_policy.sim import make_env, make_expert

    env = make_env(task, cameras=cameras, randomization=randomization)
    expert = make_expert(task, env)
    u = env.unwrapped
    step_time, cpu_time, n, seed = 0.0, 0.0, 0, 0
    while n < steps:
        obs, _ = env.reset(seed=seed)
        expert.reset(seed)
        seed += 1
        for _ in range(u.max_episode_steps):
            action = expert.act(obs)
            t0, c0 = time.perf_counter(), time.process_time()
            obs, _, _, truncated, info = env.step(action)
            step_time += time.perf_counter() - t0
            cpu_time += time.process_time() - c0
            n += 1
            if info["success"] or truncated or n >= steps:
                break
    render_ms = None
    if cameras:
        names = list(cameras)
        t0 = time.perf_counter()
        reps = 20
        for _ in range(reps):
            for name in names:
                h, w = cameras[name]
                u._renderer.render(name, h, w)
        render_ms = 1000 * (time.perf_counter() - t0) / (reps * len(names))
    env.close()
    return {
        "task": task,
        "cameras": ",".join(f"{k}:{h}x{w}" for k, (h, w) in (cameras or {}).items()) or "none",
        "steps": n,
        "steps_per_s": n / step_time,
        "ms_per_step": 1000 * step_time / n,
        # CPU time of this process (all its threads): comparable across loaded/idle machines.
        "cpu_ms_per_step": 1000 * cpu_time / n,
        "render_ms_per_frame": render_ms,
        "realtime_factor": (n / step_time) / u.control_hz,
    }


def _run(args) -> int:
    from robot_policy.bench._common import save_results
    from robot_policy.console import print_table
    from robot_policy.sim import list_tasks, task_class

    tasks = args.tasks.split(",") if args.tasks else list_tasks()
    rows = []
    for task in tasks:
        default_cameras = dict(task_class(task).default_cameras)  # unknown names fail here
        for cams in (None, default_cameras):
            rows.append(_measure(task, cams, args.steps, args.randomization))
            print(
                f"  {task:9s} cameras={rows[-1]['cameras']}: {rows[-1]['steps_per_s']:.1f} steps/s",
                flush=True,
            )
    print()
    print_table(
        [{**r, "render_ms_per_frame": r["render_ms_per_frame"] or float("nan")} for r in rows],
        [
            "task",
            "cameras",
            "steps",
            "steps_per_s",
            "ms_per_step",
            "cpu_ms_per_step",
            "render_ms_per_frame",
            "realtime_factor",
        ],
    )
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = {"steps": args.steps, "randomization": args.randomization, "load_avg_1min": load, "rows": rows}
    path = save_results("sim", results, args.out)
    print(f"\nsaved {path}")
    print("wall-clock figures depend on other load; cpu_ms_per_step is this process's CPU time per step")
    return 0


def register(sub) -> None:
    p = add_command(
        sub,
        "sim",
        help="simulation: env steps/s per task, without cameras and with the default cameras",
        description="Steps every task with its scripted expert (only env.step is timed) under the default "
        "randomization, first without cameras, then with the task's default cameras (84x84 each), and "
        "reports steps/s, ms/step, render ms per frame and the real-time factor at the task's control "
        "rate. Saves JSON (default outputs/bench/sim.json).",
        epilog="examples:\n  robot-policy bench sim\n  robot-policy bench sim --tasks tabletop --steps 500",
    )
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: all registered)")
    p.add_argument("--steps", type=int, default=300, help="timed env steps per configuration (default 300)")
    p.add_argument("--randomization", default="default", help="randomization config (default: default)")
    p.add_argument("--out", default=None, help="JSON output path (default outputs/bench/sim.json)")
    p.set_defaults(func=_run)
