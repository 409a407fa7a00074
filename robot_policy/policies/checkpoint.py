"""Self-describing checkpoint folders, loaded without unpickling anything.

A folder holds::

    config.json            {"format": "robot_policy.policy", "format_version": 1, "policy": {...PolicyConfig}}
    model.safetensors      weights (EMA weights after training) incl. normalization buffers
    normalization.json     dataset statistics {key: {min, max, mean, std}} the normalizer was built from
    meta.json              training metadata: dataset path + fingerprint, step, git commit, timings
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch

from robot_policy.config import ConfigError, from_dict, to_dict
from robot_policy.policies.base import POLICIES, Policy
from robot_policy.policies.config import PolicyConfig
from robot_policy.policies.normalize import stats_from_json, stats_to_json

FORMAT = "robot_policy.policy"
FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "normalization.json")


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete, corrupt or from another format version."""


def git_commit(root: str | Path | None = None) -> str:
    """Commit of the source tree at ``root`` (default: this checkout), ``unknown`` outside git or
    when running from an installed copy (whatever repository encloses site-packages is not ours);
    ``+dirty`` appended when tracked files have uncommitted changes (untracked files do not count)."""
    if root is None:
        from robot_policy.resources import source_root

        root = source_root()
        if root is None:
            return "unknown"
    root = Path(root)

    def git(*args: str) -> str:
        # --no-optional-locks: a status query never takes the index lock from a concurrent git.
        cmd = ["git", "--no-optional-locks", *args]
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=5, check=True).stdout

    try:
        sha = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_policy(
    policy: Policy, out: str | Path, meta: dict | None = None, state_dict: dict | None = None
) -> Path:
    """Write a checkpoint folder; ``state_dict`` overrides the weights (e.g. EMA weights)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else policy.state_dict()
    sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    tmp = out / "model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    os.replace(tmp, out / "model.safetensors")
    _atomic_write(out / "normalization.json", json.dumps(stats_to_json(policy.stats), indent=1))
    meta = {"git_commit": git_commit(), **(meta or {})}
    _atomic_write(out / "meta.json", json.dumps(meta, indent=2))
    # config.json last: a folder with a config is a complete folder.
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "policy": to_dict(policy.config)}
    _atomic_write(out / "config.json", json.dumps(cfg, indent=2))
    return out


def _transic_base(path: Path) -> Path | None:
    """The base folder of a TRANSIC checkpoint (robot_policy.policies.transic), else None."""
    from robot_policy.policies.transic.checkpoint import is_transic_checkpoint, read_transic_config

    if not is_transic_checkpoint(path):
        return None
    return Path(read_transic_config(path)["base"]["path"])


def read_config(path: str | Path) -> PolicyConfig:
    """Validate a checkpoint folder's config.json and return its PolicyConfig (a TRANSIC
    folder's: its base policy's)."""
    path = Path(path)
    base = _transic_base(path)
    if base is not None:
        return read_config(base)
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint folder {path} does not exist (train one with 'robot-policy train')"
        )
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"{path} is not a complete policy checkpoint: missing {missing} (needs {list(REQUIRED_FILES)}); "
            "was training interrupted before the first checkpoint?"
        )
    try:
        data = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}/config.json is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}/config.json is not a robot_policy policy config (format != '{FORMAT}')"
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format_version {data.get('format_version')!r}, this robot_policy reads "
            f"version {FORMAT_VERSION}; re-train or use the matching robot_policy release"
        )
    try:
        return from_dict(PolicyConfig, data.get("policy", {}), where=f"{path}/config.json:policy")
    except ConfigError as e:
        raise CheckpointError(f"{e} (checkpoint from another robot_policy version?)") from None


def read_meta(path: str | Path) -> dict:
    p = Path(path) / "meta.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def load(path: str | Path, device: str | torch.device = "cpu") -> Policy:
    """Rebuild a ready-to-use policy (eval mode) from a checkpoint folder, without pickle.

    A TRANSIC folder (residual + gate over a frozen base, ``robot_policy.policies.transic``) loads as
    its gated predictor, base hash checked; serve its base with ``served_by(engine)``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if _transic_base(path) is not None:
        from robot_policy.policies.transic.gated import load_gated

        return load_gated(path, device=str(device))
    cfg = read_config(path)
    try:
        stats = stats_from_json(json.loads((path / "normalization.json").read_text()))
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{path}/normalization.json is corrupt ({e})") from None
    try:
        cls = POLICIES.get(cfg.family)
    except KeyError as e:
        raise CheckpointError(f"{path}: {e}") from None
    policy = cls(cfg, stats)
    try:
        sd = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}/model.safetensors cannot be read ({e}); the file is corrupt or truncated"
        ) from None
    try:
        result = policy.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(
            f"{path}/model.safetensors does not match config.json: {str(e)[:300]}"
        ) from None
    bad = [k for k in result.missing_keys] + [k for k in result.unexpected_keys]
    if bad:
        raise CheckpointError(
            f"{path}/model.safetensors does not match config.json (missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}): the folder mixes files from different runs or versions"
        )
    return policy.to(device).eval()
