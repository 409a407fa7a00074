"""``robot-policy bench ...``: benchmarks that print figures and save them as JSON.

Each module in ``robot_policy/bench/`` that defines ``register(subparsers)`` adds one
benchmark. Tests never assert on wall-clock time; speed and memory are measured here.
"""

from __future__ import annotations

import importlib
import pkgutil

import robot_policy.bench as bench_pkg
from robot_policy.console import add_group


def register(sub) -> None:
    group = add_group(
        sub,
        "bench",
        help="benchmarks: measure throughput and latency, print a table, save JSON",
        description="Benchmarks print a table and save their figures as JSON (default under "
        "outputs/bench/). Figures quoted in docs/benchmarks.md come from these commands.",
    )
    for mod_info in sorted(pkgutil.iter_modules(bench_pkg.__path__), key=lambda m: m.name):
        if mod_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"robot_policy.bench.{mod_info.name}")
        if hasattr(module, "register"):
            module.register(group)
