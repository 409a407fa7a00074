"""Success-rate statistics shared by evaluation, expert collection and the demo."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` of a binomial proportion (95% for z = 1.96).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0/n or n/n,
    which is where small evaluation runs often land. ``n == 0`` gives the whole range.
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
