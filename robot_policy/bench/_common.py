"""Shared helpers for benchmarks: saving results as JSON and printing tables."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

DEFAULT_DIR = Path("outputs/bench")


def machine_info() -> dict:
    """What the figures were measured on."""
    import os

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def save_results(name: str, results, out: str | Path | None = None) -> Path:
    """Write ``{"benchmark", "time", "machine", "results"}`` JSON; returns the path."""
    path = Path(out) if out else DEFAULT_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_info(),
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Print a list of dicts as an aligned text table."""
    if not rows:
        print("(no rows)")
        return
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
