"""Shared helpers for benchmarks: machine description and saving results as JSON (tables: ``robot_policy.console``)."""

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
