"""TRANSIC checkpoint folders: the residual/gate head, referencing its frozen base by path and hash.

A folder holds::

    config.json        {"format": "robot_policy.transic", "format_version": 1, "transic": {...TransicConfig},
                        "base": {"path": ABS_PATH, "sha256": HEX}, "feature_dim": C, "action_dim": A}
    model.safetensors  the head's weights (trunk, residual, gripper flip, gate; per-joint bounds)
    report.json        training report (gate precision/recall on held-out episodes, residual error)

The base checkpoint is not copied: it is found by path and must hash to the recorded sha256
(its config.json, normalization.json and model.safetensors), so a head is never served on a
base it was not trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from robot_policy.config import ConfigError, from_dict, to_dict
from robot_policy.policies.checkpoint import CheckpointError
from robot_policy.policies.transic.model import ResidualGate, TransicConfig

FORMAT = "robot_policy.transic"
FORMAT_VERSION = 1
BASE_FILES = ("config.json", "normalization.json", "model.safetensors")


class BaseMismatchError(CheckpointError):
    """The base checkpoint a TRANSIC head points to is not the one it was trained on."""


def base_hash(path: str | Path) -> str:
    """sha256 over the base checkpoint's config, normalization and weights (names included)."""
    path = Path(path)
    h = hashlib.sha256()
    for name in BASE_FILES:
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"base checkpoint {path} has no {name}: not a policy checkpoint folder")
        h.update(name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def is_transic_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a TRANSIC folder (config.json with this format)."""
    p = Path(path) / "config.json"
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def save_transic(
    head: ResidualGate, cfg: TransicConfig, base_dir: str | Path, out: str | Path, report: dict | None = None
) -> Path:
    """Write the folder; config.json last (a folder with a config is complete)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    tmp = out / "model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    os.replace(tmp, out / "model.safetensors")
    if report is not None:
        (out / "report.json").write_text(json.dumps(report, indent=2))
    base = Path(base_dir).resolve()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "transic": to_dict(cfg),
        "base": {"path": str(base), "sha256": base_hash(base)},
        "feature_dim": head.feature_dim,
        "action_dim": head.action_dim,
    }
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, out / "config.json")
    return out


def read_transic_config(path: str | Path) -> dict:
    """config.json of a TRANSIC folder, validated; ``transic`` parsed into a TransicConfig."""
    path = Path(path)
    try:
        data = json.loads((path / "config.json").read_text())
    except OSError:
        raise CheckpointError(
            f"{path} is not a TRANSIC checkpoint (no config.json); train one with 'robot-policy transic train'"
        ) from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}/config.json is not valid JSON ({e})") from None
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path}/config.json is not a TRANSIC config (format != '{FORMAT}')")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has TRANSIC format_version {data.get('format_version')!r}; this robot_policy reads "
            f"{FORMAT_VERSION}"
        )
    try:
        data["transic"] = from_dict(
            TransicConfig, data.get("transic", {}), where=f"{path}/config.json:transic"
        )
    except (ConfigError, ValueError) as e:
        raise CheckpointError(str(e)) from None
    return data


def load_head(
    path: str | Path, base: str | Path | None = None, device: str = "cpu"
) -> tuple[ResidualGate, TransicConfig, Path]:
    """Load the head and check its base: returns (head, config, base folder).

    ``base`` overrides the recorded base path (a moved checkpoint); its hash must still match.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    data = read_transic_config(path)
    cfg: TransicConfig = data["transic"]
    recorded = data.get("base") or {}
    base_dir = Path(base) if base else Path(recorded.get("path", ""))
    if not base_dir.is_dir():
        raise CheckpointError(
            f"{path}: its base checkpoint {base_dir} does not exist; pass the base folder explicitly "
            "(base=..., or --base on the command line) if it was moved"
        )
    actual = base_hash(base_dir)
    if actual != recorded.get("sha256"):
        raise BaseMismatchError(
            f"{path} was trained on the base checkpoint with sha256 {recorded.get('sha256')} "
            f"({recorded.get('path')}), but {base_dir} hashes to {actual}: the base was retrained or "
            "replaced. Serve the head with its own base, or retrain it: "
            f"robot-policy transic train --base {base_dir} --data CORRECTIONS.zarr --out {path}"
        )
    # Bounds live in the weights (a buffer); the config's are only for building the module.
    import numpy as np

    n_joints = int(data["action_dim"]) - 1
    head = ResidualGate(int(data["feature_dim"]), int(data["action_dim"]), np.ones(n_joints), cfg)
    try:
        sd = load_file(str(path / "model.safetensors"))
        head.load_state_dict(sd)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}/model.safetensors cannot be loaded ({str(e)[:300]})") from None
    return head.to(torch.device(device)).eval(), cfg, base_dir
