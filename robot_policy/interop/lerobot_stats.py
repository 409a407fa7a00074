"""LeRobot v3 statistics, computed the way LeRobot computes them (``lerobot/datasets/compute_stats.py``).

Per episode and feature: min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99,
the quantiles read off a 5000-bin histogram spanning the episode's range (LeRobot's
``RunningQuantileStats`` after one update). Numeric features are reduced over frames, per
element; camera features over up to ~100 evenly spaced frames (``estimate_num_samples``),
downsampled to ~150 px when larger than 300 px, per channel, in [0, 1], shape ``(3, 1, 1)``.
The dataset's ``meta/stats.json`` aggregates the episodes: min/max of the extremes, the
count-weighted mean, the pooled variance, and count-weighted quantiles (LeRobot's
``aggregate_stats``: an approximation it accepts, reproduced here so numbers match).
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)
NUM_BINS = 5000


def estimate_num_samples(
    n: int, min_samples: int = 100, max_samples: int = 10_000, power: float = 0.75
) -> int:
    if n < min_samples:
        min_samples = n
    return max(min_samples, min(int(n**power), max_samples))


def sample_indices(n: int) -> np.ndarray:
    """Frames LeRobot samples from an episode of ``n`` frames for image statistics."""
    return np.round(np.linspace(0, n - 1, estimate_num_samples(n))).astype(int)


def downsample(img_chw: np.ndarray, target: int = 150, threshold: int = 300) -> np.ndarray:
    """LeRobot's ``auto_downsample_height_width`` on (N, C, H, W) or (C, H, W) images."""
    h, w = img_chw.shape[-2:]
    if max(w, h) < threshold:
        return img_chw
    f = int(w / target) if w > h else int(h / target)
    return img_chw[..., ::f, ::f]


def _quantiles(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, np.ndarray]:
    """Histogram quantiles per column of ``x`` (N, D), exactly as RunningQuantileStats."""
    n, d = x.shape
    out = {k: np.empty(d, dtype=np.float64) for k in QUANTILE_KEYS}
    for j in range(d):
        edges = np.linspace(lo[j] - 1e-10, hi[j] + 1e-10, NUM_BINS + 1)
        hist, _ = np.histogram(x[:, j], bins=edges)
        cumsum = np.cumsum(hist)
        for q, key in zip(QUANTILES, QUANTILE_KEYS):
            target = q * n
            idx = int(np.searchsorted(cumsum, target))
            if idx == 0:
                v = edges[0]
            elif idx >= len(cumsum):
                v = edges[-1]
            else:
                before = cumsum[idx - 1]
                inside = cumsum[idx] - before
                v = (
                    edges[idx]
                    if inside == 0
                    else edges[idx] + (target - before) / inside * (edges[idx + 1] - edges[idx])
                )
            out[key][j] = v
    return out


def feature_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of ``x`` (N, D) per column: min, max, mean, std, count, quantiles."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    lo, hi = x.min(0), x.max(0)
    mean = x.mean(0)
    if n < 2:
        stats = {"min": lo, "max": hi, "mean": mean, "std": x.std(0), "count": np.array([n])}
        stats.update({k: mean.copy() for k in QUANTILE_KEYS})
        return stats
    std = np.sqrt(np.maximum(0.0, (x * x).mean(0) - mean * mean))
    stats = {"min": lo, "max": hi, "mean": mean, "std": std, "count": np.array([n])}
    stats.update(_quantiles(x, lo, hi))
    return stats


def numeric_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """A numeric feature's episode statistics: ``values`` is (T,) for shape-(1,) features (stats
    of shape (1,)) or (T, D) (stats of shape (D,))."""
    v = np.asarray(values)
    if v.dtype == np.bool_:
        v = v.astype(np.float64)
    return feature_stats(v.reshape(v.shape[0], -1))


def image_stats(frames_hwc: np.ndarray) -> dict[str, np.ndarray]:
    """A camera feature's episode statistics from its sampled frames (N, H, W, C) uint8:
    per channel, in [0, 1], each of shape (C, 1, 1); count = N (sampled frames)."""
    chw = downsample(np.asarray(frames_hwc).transpose(0, 3, 1, 2))
    n, c = chw.shape[:2]
    stats = feature_stats(chw.transpose(0, 2, 3, 1).reshape(-1, c))
    stats["count"] = np.array([n])
    return {k: v if k == "count" else (v / 255.0).reshape(c, 1, 1) for k, v in stats.items()}


def aggregate(episode_stats: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot's ``aggregate_stats`` over per-episode statistics."""
    keys = {k for s in episode_stats for k in s}
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        parts = [s[key] for s in episode_stats if key in s]
        means = np.stack([p["mean"] for p in parts])
        variances = np.stack([p["std"] ** 2 for p in parts])
        counts = np.stack([p["count"] for p in parts]).astype(np.float64)
        total = counts.sum(axis=0)
        while counts.ndim < means.ndim:
            counts = np.expand_dims(counts, -1)
        mean = (means * counts).sum(0) / total
        var = ((variances + (means - mean) ** 2) * counts).sum(0) / total
        agg = {
            "min": np.min(np.stack([p["min"] for p in parts]), axis=0),
            "max": np.max(np.stack([p["max"] for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": total.astype(np.int64),
        }
        for q in QUANTILE_KEYS:
            if all(q in p for p in parts):
                agg[q] = (np.stack([p[q] for p in parts]) * counts).sum(0) / total
        out[key] = agg
    return out


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
