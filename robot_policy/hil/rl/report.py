"""What ``robot-policy hil run`` shows: the curves figure and the summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _smooth(x: list[float], k: int = 10) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    lo = np.maximum(0, np.arange(1, len(x) + 1) - k)
    return (c[1:] - c[lo]) / (np.arange(1, len(x) + 1) - lo)


def plot_curves(results: dict, path: Path) -> None:
    """Success rate (policy alone, held-out), intervention rate and return over env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for mode, r in results["runs"].items():
        if "curves" not in r:  # bc: one number
            axes[0].axhline(r["final"]["success_rate"], ls="--", color="gray", label=f"{mode} (final)")
            continue
        ev, eps = r["curves"]["eval"], r["curves"]["episodes"]
        line = axes[0].plot(
            [e["env_steps"] for e in ev], [e["success_rate"] for e in ev], marker="o", label=mode
        )
        xs = [e["env_steps"] for e in eps]
        axes[0].plot(
            xs,
            _smooth([float(e["success"]) for e in eps]),
            ls=":",
            color=line[0].get_color(),
            label=f"{mode}: training episodes (with the human)",
        )
        axes[1].plot(xs, _smooth([e["intervention_rate"] for e in eps]), label=mode)
        axes[2].plot(xs, _smooth([e["return"] for e in eps]), label=mode)
    titles = (
        "success: policy alone, held-out (dotted: training episodes)",
        "intervention rate (share of steps, 10-ep mean)",
        "training return (10-ep mean)",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylim(-0.02, 1.02)
    fig.suptitle(
        f"{results['config']['env']} ({results['config']['obs_mode']} obs), {results['config']['demos']} demos"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown_table(results: dict) -> str:
    """The final numbers of every mode as a markdown table (for docs/results.md)."""
    lines = [
        "| mode | success, policy alone | 95% Wilson | interventions: share of steps, first -> last 10% of episodes | env steps | updates | updates/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in results["runs"].items():
        f = r["final"]
        lo, hi = f["ci95"]
        interv = (
            f"{r['intervention_rate_first_10pct']:.2f} -> {r['intervention_rate_last_10pct']:.2f}"
            if "intervention_rate_last_10pct" in r
            else "-"
        )
        steps = r["curves"]["episodes"][-1]["env_steps"] if "curves" in r else "-"
        ups = f"{r['updates_per_s']:.0f}" if "updates_per_s" in r else "-"
        lines.append(
            f"| {mode} | {f['successes']}/{f['episodes']} | {100 * lo:.0f}-{100 * hi:.0f}% | {interv} | {steps} | "
            f"{r.get('updates', '-')} | {ups} |"
        )
    return "\n".join(lines)
