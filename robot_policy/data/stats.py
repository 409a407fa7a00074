"""Normalization statistics of a store's keys (min, max, mean, std)."""

from __future__ import annotations

import numpy as np

from robot_policy.data.codecs import is_image_spec
from robot_policy.data.schema import KeySpec

# Decoding every frame of a long image dataset costs minutes; per-channel statistics from an
# evenly spaced sample are as good for normalization.
IMAGE_STATS_MAX_FRAMES = 512


def compute_stats(arr, n: int, spec: KeySpec) -> dict[str, list]:
    """Statistics of the first ``n`` frames of ``arr``: per element for low-dim keys, per
    channel (shape (C,)) for uint8 image keys. Returned as JSON-able lists."""
    if n == 0:
        raise ValueError("the store has no episodes: statistics need at least one committed frame")
    if is_image_spec(spec.dtype, spec.shape):
        idx = np.unique(np.linspace(0, n - 1, min(n, IMAGE_STATS_MAX_FRAMES)).astype(np.int64))
        c = spec.shape[2] if len(spec.shape) == 3 else 1
        cnt, s1, s2 = 0, np.zeros(c), np.zeros(c)
        lo, hi = np.full(c, 255), np.zeros(c, dtype=np.int64)
        # 16 frames at a time: a float copy of 512 full-HD frames would need gigabytes.
        for b in range(0, len(idx), 16):
            x = np.asarray(arr.get_orthogonal_selection((idx[b : b + 16],))).reshape(-1, c)
            xf = x.astype(np.float64)
            cnt += x.shape[0]
            s1 += xf.sum(0)
            s2 += (xf * xf).sum(0)  # uint8 range: no cancellation problem
            lo, hi = np.minimum(lo, x.min(0)), np.maximum(hi, x.max(0))
        mean = s1 / cnt
        std = np.sqrt(np.maximum(s2 / cnt - mean * mean, 0.0))
        return {"min": lo.tolist(), "max": hi.tolist(), "mean": mean.tolist(), "std": std.tolist()}
    # Chunked accumulation keeps memory flat on long datasets; chunk moments are merged with
    # Chan et al.'s update, which stays exact for keys with a large offset (e.g. timestamps),
    # where E[x^2] - E[x]^2 cancels catastrophically.
    step = max(1, (64 << 20) // max(1, int(np.prod(spec.shape, dtype=np.int64)) * 8))
    cnt, mean, m2, lo, hi = 0, 0.0, 0.0, None, None
    for a in range(0, n, step):
        x = np.asarray(arr[a : min(n, a + step)], dtype=np.float64)
        nb, mb = x.shape[0], x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        delta = mb - mean
        tot = cnt + nb
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta * delta * (cnt * nb / tot)
        cnt = tot
        lo = x.min(0) if lo is None else np.minimum(lo, x.min(0))
        hi = x.max(0) if hi is None else np.maximum(hi, x.max(0))
    std = np.sqrt(m2 / cnt)
    return {k: np.asarray(v).tolist() for k, v in (("min", lo), ("max", hi), ("mean", mean), ("std", std))}
