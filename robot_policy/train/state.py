"""Training state for exact resume (no pickle), EMA weights, CSV log and training-curve PNG.

``DIR/train_state/`` holds ``model.safetensors`` (raw weights), ``ema.safetensors``,
``optimizer.pt`` (an optimizer state_dict of tensors and numbers, read back with
``torch.load(weights_only=True)``, which refuses arbitrary objects) and ``state.json`` (step),
written last so a half-written state is never picked up.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch
from torch import nn


class EMA:
    """Exponential moving average of a module's parameters (buffers copied), DP's decay warmup."""

    def __init__(self, model: nn.Module, power: float = 0.75, max_decay: float = 0.9999):
        import copy

        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.max_decay = power, max_decay

    def decay(self, step: int) -> float:
        return min(self.max_decay, max(0.0, 1.0 - (1.0 + step) ** -self.power))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay(step)
        for pe, p in zip(self.module.parameters(), model.parameters()):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.module.buffers(), model.buffers()):
            be.copy_(b)


def save_train_state(out: Path, model: nn.Module, ema: EMA, optimizer, step: int, extra: dict) -> None:
    from safetensors.torch import save_file

    d = out / "train_state"
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").unlink(missing_ok=True)  # invalid until everything below is written
    for name, m in (("model", model), ("ema", ema.module)):
        sd = {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
        save_file(sd, str(d / f"{name}.safetensors.tmp"))
        os.replace(d / f"{name}.safetensors.tmp", d / f"{name}.safetensors")
    torch.save(optimizer.state_dict(), d / "optimizer.pt.tmp")
    os.replace(d / "optimizer.pt.tmp", d / "optimizer.pt")
    (d / "state.json").write_text(json.dumps({"step": step, **extra}, indent=2))


def load_train_state(out: Path, model: nn.Module, ema: EMA, optimizer, device) -> dict:
    """Restore weights, EMA and optimizer; returns state.json (``step`` = steps already done)."""
    from safetensors.torch import load_file

    d = out / "train_state"
    if not (d / "state.json").is_file():
        raise FileNotFoundError(
            f"--resume: {d}/state.json not found; nothing to resume in {out} (drop --resume to start fresh)"
        )
    model.load_state_dict(load_file(str(d / "model.safetensors"), device=str(device)))
    ema.module.load_state_dict(load_file(str(d / "ema.safetensors"), device=str(device)))
    optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location=device, weights_only=True))
    return json.loads((d / "state.json").read_text())


class ScalarLog:
    """Append-only CSV of scalars (one row per log step); columns fixed by the first row."""

    def __init__(self, path: Path, resume_from_step: int | None = None):
        self.path = path
        self.columns: list[str] | None = None
        if resume_from_step is not None and path.is_file():
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_from_step]
            self.columns = list(rows[0]) if rows else None
            self._rewrite(rows)
        elif path.exists():
            path.unlink()

    def _rewrite(self, rows: list[dict]) -> None:
        with open(self.path, "w", newline="") as f:
            if self.columns:
                w = csv.DictWriter(f, self.columns)
                w.writeheader()
                w.writerows(rows)

    def write(self, row: dict) -> None:
        new = self.columns is None
        if new:
            self.columns = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path) as f:
            return list(csv.DictReader(f))


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    """Loss (log scale) and learning rate against step."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = [float(r["step"]) for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot(step, [float(r["loss"]) for r in rows], label="train loss")
    val = [(float(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss") not in (None, "")]
    if val:
        ax[0].plot(*zip(*val), "o-", label="val loss")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("step")
    ax[0].legend()
    ax[0].set_title(title)
    ax[1].plot(step, [float(r["lr"]) for r in rows])
    ax[1].set_xlabel("step")
    ax[1].set_title("learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
