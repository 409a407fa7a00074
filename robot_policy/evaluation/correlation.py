"""Sim-vs-real correlation of policy success rates, reported as SIMPLER does (Pearson r, MMRV).

The same policies are evaluated in two worlds: "sim" (the simulation one would use to choose
policies) and "real" (the robot; here also a simulated stand-in such as the transfer
benchmark's target world). Each world gives per-policy success counts, from labelled session
files (``rates_from_session``) or from in-process runs. ``correlate`` pairs them by policy name;
``write_correlation_report`` writes HTML (a scatter chart with Wilson intervals and the y = x
line), markdown and JSON.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from robot_policy.evaluation.ab import mmrv, pearson
from robot_policy.evaluation.labels import SessionError
from robot_policy.evaluation.stats import wilson_interval


def rates_from_session(state: dict) -> dict[str, tuple[int, int]]:
    """``{policy: (successes, episodes)}`` of the labelled episodes of a session."""
    out = {n: (0, 0) for n in state["config"]["names"]}
    for e in state["episodes"]:
        k, n = out[e["policy"]]
        out[e["policy"]] = (k + bool(e["success"]), n + 1)
    return out


def correlate(
    sim: dict[str, tuple[int, int]],
    real: dict[str, tuple[int, int]],
    sim_world: str = "sim",
    real_world: str = "real",
) -> dict:
    """Pearson r and MMRV of the success rates of the policies both worlds evaluated."""
    names = [n for n in sim if n in real and sim[n][1] and real[n][1]]
    missing = sorted(set(sim) ^ set(real))
    if len(names) < 2:
        raise SessionError(
            f"correlation needs at least 2 policies evaluated in both worlds; in both: {names}, "
            f"only in one: {missing} (policies are matched by name: use the same --name in both sessions)"
        )
    s = [sim[n][0] / sim[n][1] for n in names]
    r = [real[n][0] / real[n][1] for n in names]
    return {
        "sim_world": sim_world,
        "real_world": real_world,
        "policies": [
            {
                "name": n,
                "sim": s[i],
                "sim_ci95": list(wilson_interval(*sim[n])),
                "sim_episodes": sim[n][1],
                "real": r[i],
                "real_ci95": list(wilson_interval(*real[n])),
                "real_episodes": real[n][1],
            }
            for i, n in enumerate(names)
        ],
        "unmatched": missing,
        "pearson_r": pearson(s, r),
        "mmrv": mmrv(s, r),
    }


def _chart(result: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robot_policy.evaluation.report import _png

    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    for p in result["policies"]:
        xerr = [[max(0.0, p["sim"] - p["sim_ci95"][0])], [max(0.0, p["sim_ci95"][1] - p["sim"])]]
        yerr = [[max(0.0, p["real"] - p["real_ci95"][0])], [max(0.0, p["real_ci95"][1] - p["real"])]]
        ax.errorbar([p["sim"]], [p["real"]], xerr=xerr, yerr=yerr, fmt="o", capsize=4, label=p["name"])
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"success in {result['sim_world']} (Wilson 95%)")
    ax.set_ylabel(f"success in {result['real_world']} (Wilson 95%)")
    ax.set_title(f"Pearson r = {result['pearson_r']:.3f}, MMRV = {result['mmrv']:.3f}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def render_markdown(result: dict) -> str:
    lines = [
        f"# Sim-vs-real correlation: {result['sim_world']} vs {result['real_world']}",
        "",
        f"Pearson r = {result['pearson_r']:.3f}, MMRV = {result['mmrv']:.3f} (SIMPLER; MMRV 0 = same ranking)",
        "",
        f"| policy | {result['sim_world']} | Wilson 95% | {result['real_world']} | Wilson 95% |",
        "|---|---|---|---|---|",
    ]
    for p in result["policies"]:
        lines.append(
            f"| {p['name']} | {p['sim']:.2f} ({p['sim_episodes']} ep) | [{p['sim_ci95'][0]:.2f}, "
            f"{p['sim_ci95'][1]:.2f}] | {p['real']:.2f} ({p['real_episodes']} ep) | "
            f"[{p['real_ci95'][0]:.2f}, {p['real_ci95'][1]:.2f}] |"
        )
    return "\n".join(lines) + "\n"


def render_html(result: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(p['name'])}</td><td>{p['sim']:.3f}</td><td>[{p['sim_ci95'][0]:.3f}, {p['sim_ci95'][1]:.3f}]</td>"
        f"<td>{p['real']:.3f}</td><td>[{p['real_ci95'][0]:.3f}, {p['real_ci95'][1]:.3f}]</td></tr>"
        for p in result["policies"]
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Sim-vs-real correlation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Sim-vs-real correlation: {e(result["sim_world"])} vs {e(result["real_world"])}</h1>
<p>Pearson r = <span id="pearson">{result["pearson_r"]:.3f}</span>, MMRV = <span id="mmrv">{result["mmrv"]:.3f}</span>
(SIMPLER's metrics: MMRV is 0 when the sim orders every pair of policies as the real robot does).</p>
<table><tr><th>policy</th><th>{e(result["sim_world"])}</th><th>Wilson 95%</th><th>{e(result["real_world"])}</th>
<th>Wilson 95%</th></tr>{rows}</table>
<img alt="correlation" src="{_chart(result)}">
</body></html>
"""


def write_correlation_report(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """``correlation.html``, ``correlation.md`` and ``correlation.json`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"correlation.{k}" for k in ("html", "md", "json")}
    paths["html"].write_text(render_html(result))
    paths["md"].write_text(render_markdown(result))
    paths["json"].write_text(json.dumps(result, indent=1))
    return paths
