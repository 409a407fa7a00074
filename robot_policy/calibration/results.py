"""Calibration result files: JSON under the top-level ``calibration/<setup>/``.

Every result says what it is (``kind``), when it was made (``date``, UTC ISO 8601), from what
(``data``: image folder, board, counts), how good it is (``residuals``), and with which software
(``software``). Files are written atomically (temporary file + rename): a crash never leaves half
a calibration that a camera would then load.

Names: ``calibration/<setup>/<camera>_intrinsics.json``, ``<camera>_hand_eye.json``, ``latency.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

KIND_FILE = {
    "intrinsics": "{camera}_intrinsics.json",
    "hand_eye": "{camera}_hand_eye.json",
    "latency": "latency.json",
}
"""File name of each kind of result inside ``calibration/<setup>/``."""


def default_path(setup: str, kind: str, camera: str = "camera", root: str | Path = "calibration") -> Path:
    """``calibration/<setup>/<file>`` for a result ``kind`` (intrinsics, hand_eye, latency)."""
    if kind not in KIND_FILE:
        raise ValueError(f"unknown calibration kind {kind!r}; known: {sorted(KIND_FILE)}")
    return Path(root) / setup / KIND_FILE[kind].format(camera=camera)


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import cv2

        out["opencv"] = cv2.__version__
    except ImportError:
        pass
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars, tuples and paths turned into JSON types."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(path: str | Path, kind: str, body: dict[str, Any]) -> Path:
    """Write ``body`` plus ``kind``, ``date`` and ``software`` as JSON (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"kind": kind, "date": now_iso(), **jsonable(body), "software": software_versions()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_result(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read a result file; with ``kind``, check it is one (a clear error otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist")
    doc = json.loads(path.read_text())
    if kind is not None and doc.get("kind") != kind:
        raise ValueError(f"{path}: kind is {doc.get('kind')!r}, expected {kind!r}")
    return doc
