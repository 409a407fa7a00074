"""Atomic learner checkpoints: a folder per save, a ``LATEST`` pointer replaced last.

Layout::

    <checkpoint_dir>/
      LATEST                  name of the newest complete checkpoint folder (one line)
      step-00001200/
        learner.json          step, published version, transitions seen, per-actor sequence numbers
        ...                   whatever the learner writes: agent and buffers (safetensors + JSON)

A save writes everything into a hidden temporary folder, fsyncs it, renames it into place and
only then replaces ``LATEST`` (write + ``os.replace``). A crash at any point leaves the previous
checkpoint intact and pointed to; a half-written folder is never named by ``LATEST``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LATEST = "LATEST"
STATE_FILE = "learner.json"
FORMAT = "robot_policy.hil.rpc.learner/1"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: str | Path, step: int, state: dict[str, Any], write_payload: Callable[[Path], None], keep: int = 2
) -> Path:
    """Write ``state`` (JSON) and the learner's payload as ``root/step-<step>``; returns that folder.

    ``write_payload(folder)`` writes the agent and buffers into ``folder``. ``keep`` newest
    checkpoints stay on disk; older ones are removed after the pointer moved.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:010d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_payload(tmp)
    (tmp / STATE_FILE).write_text(json.dumps({"format": FORMAT, "time": time.time(), **state}, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = root / name
    k = 0
    while final.exists():  # the same step saved twice (a signal right after a periodic save):
        k += 1  # never replace the folder LATEST may point to
        final = root / f"{name}.{k}"
    os.rename(tmp, final)
    pointer_tmp = root / f".{LATEST}.tmp"
    with open(pointer_tmp, "w") as fh:
        fh.write(final.name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, root / LATEST)
    _fsync_dir(root)
    # Prune old checkpoints and temporaries a crash may have left (never the one just written).
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
    for old in done[: max(0, len(done) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # one learner per folder: these are from crashed saves
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``LATEST`` names, or ``None`` when there is no complete checkpoint."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    folder = Path(root) / pointer.read_text().strip()
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"{pointer} names '{folder.name}', which has no {STATE_FILE}: the checkpoint folder was "
            f"removed or edited by hand; point {pointer} at a complete step-* folder or start without --resume"
        )
    return folder


def load_state(folder: str | Path) -> dict[str, Any]:
    """The ``learner.json`` of a checkpoint folder, format checked."""
    state = json.loads((Path(folder) / STATE_FILE).read_text())
    if state.get("format") != FORMAT:
        raise ValueError(f"{folder}/{STATE_FILE}: format {state.get('format')!r}, expected {FORMAT!r}")
    return state
