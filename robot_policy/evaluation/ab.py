"""Statistics of operator-labelled evaluation sessions: pure numpy, no ROS, no torch.

* ``bootstrap_mean`` — mean partial score (0-100) with a percentile bootstrap interval.
* ``fisher_exact`` — two-sided Fisher exact test of two success counts (do two policies differ?).
* ``sign_test`` — two-sided exact sign test on A/B preferences (ties dropped).
* ``win_rates`` — pairwise win rates from A/B trials (a tie counts half).
* ``bradley_terry`` — Bradley-Terry strengths (MM algorithm of Hunter 2004, ties as half a win
  each way, a weak prior of one tie against a virtual average opponent so that undefeated
  policies stay finite) with a bootstrap interval over trials and each policy's rank range.
* ``pearson`` and ``mmrv`` — SIMPLER's sim-vs-real metrics (Li et al. 2024,
  ``simpler_env/utils/metrics.py``): MMRV = mean over policies i of
  ``max_j |real_i - real_j| * [(sim_i > sim_j) != (real_i > real_j)]``; lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robot_policy.evaluation.stats import wilson_interval

__all__ = [
    "Comparison",
    "bootstrap_mean",
    "fisher_exact",
    "sign_test",
    "win_rates",
    "bradley_terry",
    "pearson",
    "mmrv",
    "success_summary",
]


def success_summary(successes: int, n: int) -> dict:
    """``{successes, episodes, success_rate, ci95}`` with the Wilson 95% interval."""
    lo, hi = wilson_interval(int(successes), int(n))
    return {
        "successes": int(successes),
        "episodes": int(n),
        "success_rate": successes / n if n else 0.0,
        "ci95": [lo, hi],
    }


def bootstrap_mean(
    values: Sequence[float], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean and its percentile-bootstrap interval. Empty input: NaNs."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(x.mean()), float(lo), float(hi)


def _hypergeom_pmf(k: int, K: int, n: int, N: int) -> float:
    return math.comb(K, k) * math.comb(N - K, n - k) / math.comb(N, n)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact p-value of ``k1/n1`` vs ``k2/n2`` successes.

    Sums the probabilities of all tables with the same margins that are no more likely than the
    observed one (scipy's ``fisher_exact`` convention, relative tolerance 1e-7).
    """
    for name, k, n in (("k1", k1, n1), ("k2", k2, n2)):
        if not 0 <= k <= n:
            raise ValueError(f"{name}={k} must lie in [0, n={n}]")
    N, K, n = n1 + n2, k1 + k2, n1
    if N == 0:
        return 1.0
    p_obs = _hypergeom_pmf(k1, K, n, N)
    lo, hi = max(0, n - (N - K)), min(K, n)
    p = sum(q for k in range(lo, hi + 1) if (q := _hypergeom_pmf(k, K, n, N)) <= p_obs * (1 + 1e-7))
    return float(min(1.0, p))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (binomial, p = 1/2) of ``wins`` vs ``losses``; ties excluded."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(min(1.0, 2.0 * tail))


@dataclass(frozen=True)
class Comparison:
    """One A/B trial outcome between two named policies: ``winner`` is a name or ``None`` (tie)."""

    first: str
    second: str
    winner: str | None


def win_rates(comparisons: Sequence[Comparison]) -> dict[str, dict[str, dict]]:
    """``rates[a][b] = {wins, losses, ties, trials, win_rate}`` of ``a`` against ``b`` (tie = half)."""
    out: dict[str, dict[str, dict]] = {}
    for c in comparisons:
        for me, other in ((c.first, c.second), (c.second, c.first)):
            r = out.setdefault(me, {}).setdefault(other, {"wins": 0, "losses": 0, "ties": 0})
            if c.winner is None:
                r["ties"] += 1
            elif c.winner == me:
                r["wins"] += 1
            else:
                r["losses"] += 1
    for row in out.values():
        for r in row.values():
            r["trials"] = r["wins"] + r["losses"] + r["ties"]
            r["win_rate"] = (r["wins"] + 0.5 * r["ties"]) / r["trials"] if r["trials"] else math.nan
    return out


def _bt_fit(names: list[str], comps: Sequence[Comparison], prior: float, iters: int = 500) -> np.ndarray:
    """Bradley-Terry log-strengths (mean zero) by Hunter's MM updates."""
    idx = {n: i for i, n in enumerate(names)}
    m = len(names)
    w = np.zeros((m, m))  # w[i, j]: wins of i over j (ties: half each)
    for c in comps:
        i, j = idx[c.first], idx[c.second]
        if c.winner is None:
            w[i, j] += 0.5
            w[j, i] += 0.5
        elif c.winner == c.first:
            w[i, j] += 1
        else:
            w[j, i] += 1
    n = w + w.T
    wins = w.sum(axis=1) + prior / 2.0  # prior: `prior` ties against a virtual opponent of strength 1
    p = np.ones(m)
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1) + prior / (p + 1.0)
        new = np.maximum(wins / np.maximum(denom, 1e-300), 1e-12)  # a winless policy: tiny, not zero
        new /= math.exp(np.log(new).mean())
        if np.max(np.abs(new - p)) < 1e-10:
            p = new
            break
        p = new
    return np.log(p)


def bradley_terry(
    comparisons: Sequence[Comparison],
    names: Sequence[str] | None = None,
    n_boot: int = 500,
    prior: float = 1.0,
    seed: int = 0,
) -> list[dict]:
    """Bradley-Terry ranking, best first: ``{name, score, ci95, rank, rank_range, p_beats_average}``.

    ``score`` is the log-strength (mean zero over policies): ``P(i beats j) = 1 / (1 + exp(s_j - s_i))``.
    Uncertainty: a bootstrap over trials gives a 95% interval of each score and the 2.5-97.5%
    range of each policy's rank. ``prior`` (ties against a virtual average policy) keeps a
    policy that won or lost every trial finite; 0 gives the plain maximum-likelihood fit.
    """
    names = (
        list(names) if names is not None else sorted({n for c in comparisons for n in (c.first, c.second)})
    )
    if not names:
        return []
    comps = list(comparisons)
    scores = _bt_fit(names, comps, prior)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(names)))
    for b in range(n_boot):
        sample = [comps[i] for i in rng.integers(0, len(comps), len(comps))] if comps else []
        boot[b] = _bt_fit(names, sample, prior, iters=200)
    ranks = (-boot).argsort(axis=1).argsort(axis=1) + 1  # 1 = best, per bootstrap draw
    order = np.argsort(-scores, kind="stable")
    out = []
    for r, i in enumerate(order, start=1):
        lo, hi = np.quantile(boot[:, i], [0.025, 0.975]) if n_boot else (math.nan, math.nan)
        rlo, rhi = np.quantile(ranks[:, i], [0.025, 0.975]) if n_boot else (r, r)
        out.append(
            {
                "name": names[i],
                "score": float(scores[i]),
                "ci95": [float(lo), float(hi)],
                "rank": r,
                "rank_range": [int(round(rlo)), int(round(rhi))],
                "p_beats_average": float(1.0 / (1.0 + math.exp(-scores[i]))),
            }
        )
    return out


def pearson(sim: Sequence[float], real: Sequence[float]) -> float:
    """Pearson r of sim vs real performance (SIMPLER's convention: identical vectors give 1)."""
    s, r = np.asarray(sim, np.float64), np.asarray(real, np.float64)
    if s.shape != r.shape or s.ndim != 1:
        raise ValueError(f"sim and real need the same 1-D shape, got {s.shape} and {r.shape}")
    s, r = s - s.mean(), r - r.mean()
    if np.all(s == r):
        return 1.0
    den = math.sqrt(float((s * s).sum() * (r * r).sum()))
    return float((s * r).sum() / den) if den > 0 else math.nan


def mmrv(sim: Sequence[float], real: Sequence[float]) -> float:
    """Mean Maximum Rank Violation (SIMPLER): 0 when sim orders every pair as real does."""
    s, r = np.asarray(sim, np.float64), np.asarray(real, np.float64)
    if s.shape != r.shape or s.ndim != 1 or s.size == 0:
        raise ValueError(f"sim and real need the same non-empty 1-D shape, got {s.shape} and {r.shape}")
    worst = []
    for i in range(s.size):
        v = 0.0
        for j in range(s.size):
            if (s[i] > s[j]) != (r[i] > r[j]):
                v = max(v, abs(r[i] - r[j]))
        worst.append(v)
    return float(np.mean(worst))
