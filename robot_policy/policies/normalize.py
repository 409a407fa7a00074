"""Normalization from dataset statistics: one transform chain for training and inference.

Low-dim observations and actions are min-max scaled to [-1, 1] (Diffusion Policy's "limits"
mode; diffusion samplers clip to that range). Dimensions with (almost) no range are only
centred so they do not explode. Images go from uint8 HxWx3 to float CxHxW in [0, 1]. The
scale/offset live in buffers, so they are saved in model.safetensors with the weights and
cannot drift from them; the raw statistics are also written as JSON for people.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

STAT_NAMES = ("min", "max", "mean", "std")


def stats_to_json(stats: dict) -> dict:
    """{key: {stat: array}} -> JSON-able lists."""
    return {
        k: {s: np.asarray(v[s], dtype=np.float64).tolist() for s in STAT_NAMES if s in v}
        for k, v in stats.items()
    }


def stats_from_json(data: dict) -> dict:
    return {k: {s: np.asarray(v[s], dtype=np.float32) for s in v} for k, v in data.items()}


class Normalizer(nn.Module):
    """Per-key affine normalization ``x_n = x * scale + offset`` with scale/offset as buffers."""

    def __init__(self, stats: dict, keys: list[str], eps: float = 1e-4):
        super().__init__()
        self.keys = list(keys)
        for k in self.keys:
            if k not in stats:
                raise KeyError(f"no normalization statistics for key '{k}'; available: {sorted(stats)}")
            lo = np.asarray(stats[k]["min"], dtype=np.float32).reshape(-1)
            hi = np.asarray(stats[k]["max"], dtype=np.float32).reshape(-1)
            rng = hi - lo
            ok = rng > eps
            scale = np.where(ok, 2.0 / np.where(ok, rng, 1.0), 1.0).astype(np.float32)
            offset = np.where(ok, -1.0 - lo * scale, -(lo + hi) / 2).astype(np.float32)
            self.register_buffer(f"{k}__scale", torch.from_numpy(scale))
            self.register_buffer(f"{k}__offset", torch.from_numpy(offset))

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, f"{key}__scale") + getattr(self, f"{key}__offset")

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{key}__offset")) / getattr(self, f"{key}__scale")


def image_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return x.movedim(-1, -3)
