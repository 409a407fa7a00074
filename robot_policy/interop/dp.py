"""Diffusion Policy drop-in stores: codec configs that DP's own zarr-python 2 code accepts.

Stores written now already carry portable configs (``robot_policy.data.codecs.PORTABLE_OMIT``).
Stores written before that carry imagecodecs' full configs (``planar``, ``mct``, ``squeeze``,
``bitspersample``), which Diffusion Policy's codec classes reject. The compressed bytes are the
same either way (the parameters left out hold their defaults), so fixing such a store is a
rewrite of array metadata files only: :func:`make_dp_compatible`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from robot_policy.data.codecs import portable_config
from robot_policy.data.layout import DATA_GROUP, StoreError


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def make_dp_compatible(path: str | os.PathLike, dry_run: bool = False) -> list[str]:
    """Rewrite the codec configs of every ``data/<key>`` array of the store at ``path`` so that
    Diffusion Policy's codec registration (and imagecodecs') opens them; returns the keys changed.

    Format 2: the ``compressor`` of ``.zarray``; format 3: the ``numcodecs.imagecodecs_*`` codec
    configuration of ``zarr.json``. Each file is replaced atomically. Refuses while a writer
    holds the store open (its metadata files are being rewritten by that writer).
    """
    from robot_policy.data import _zarr_io as zio

    root = Path(path)
    data = root / DATA_GROUP
    if not data.is_dir():
        raise StoreError(f"{root} is not an episode store: it has no {DATA_GROUP}/ group")
    if zio.writer_active(str(root)):
        raise StoreError(f"{root} is open for writing by another process; stop that writer first")
    changed: list[str] = []
    for arr in sorted(p for p in data.iterdir() if p.is_dir()):
        v2, v3 = arr / ".zarray", arr / "zarr.json"
        if v2.exists():
            meta = json.loads(v2.read_text())
            comp = meta.get("compressor")
            if isinstance(comp, dict) and portable_config(comp) != comp:
                meta["compressor"] = portable_config(comp)
                changed.append(arr.name)
                if not dry_run:
                    _write_json_atomic(v2, meta)
        elif v3.exists():
            meta = json.loads(v3.read_text())
            dirty = False
            for codec in meta.get("codecs") or []:
                name = str(codec.get("name", ""))
                if name.startswith("numcodecs.imagecodecs_"):
                    cfg = {"id": name.removeprefix("numcodecs."), **(codec.get("configuration") or {})}
                    new = portable_config(cfg)
                    if new != cfg:
                        new.pop("id")
                        codec["configuration"] = new
                        dirty = True
            if dirty:
                changed.append(arr.name)
                if not dry_run:
                    _write_json_atomic(v3, meta)
    return changed
