"""Session summaries and reports: ``summarize(state)`` -> figures; HTML (self-contained) and markdown.

The HTML report embeds its charts as base64 PNG (matplotlib, Agg backend) and carries no
external asset, so it can be mailed or archived as one file. Every number in its tables sits in
an element with an ``id`` (``success-<policy>``, ``bt-<policy>`` ...) so tests read them back
from a browser's DOM. Policy identities are revealed only for a complete session; a running
session's report shows hidden labels only.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np

from robot_policy.evaluation.ab import (
    Comparison,
    bootstrap_mean,
    bradley_terry,
    fisher_exact,
    sign_test,
    success_summary,
    win_rates,
)


def summarize(state: dict, n_boot: int = 1000) -> dict:
    """All figures of a session: per-policy success/partial/latency, pairwise tests, BT ranking."""
    names = list(state["config"]["names"])
    eps = state["episodes"]
    per_policy = {}
    for name in names:
        mine = [e for e in eps if e["policy"] == name]
        k = sum(bool(e["success"]) for e in mine)
        mean, lo, hi = bootstrap_mean([e["partial"] for e in mine], n_boot=n_boot)
        lat = [x for e in mine for x in e.get("latencies_ms", [])]
        per_policy[name] = {
            **success_summary(k, len(mine)),
            "partial_mean": mean,
            "partial_ci95": [lo, hi],
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
            "aborted": sum(1 for a in state["aborted"] if a["policy"] == name),
        }
    comps = [Comparison(p["labels"]["A"], p["labels"]["B"], p["winner"]) for p in state["preferences"]]
    rates = win_rates(comps)
    pairwise = []
    for a, b in itertools.combinations(names, 2):
        r = rates.get(a, {}).get(b, {"wins": 0, "losses": 0, "ties": 0, "trials": 0, "win_rate": None})
        sa, sb = per_policy[a], per_policy[b]
        pairwise.append(
            {
                "a": a,
                "b": b,
                "a_wins": r["wins"],
                "b_wins": r["losses"],
                "ties": r["ties"],
                "a_win_rate": r["win_rate"] if r["trials"] else None,
                "sign_test_p": sign_test(r["wins"], r["losses"]),
                "fisher_success_p": fisher_exact(
                    sa["successes"], sa["episodes"], sb["successes"], sb["episodes"]
                ),
            }
        )
    ranking = bradley_terry(comps, names=names, n_boot=min(n_boot, 300)) if comps else []
    return {
        "complete": state.get("status") == "complete",
        "task": state["config"]["task"],
        "mode": state["config"]["mode"],
        "episodes": len(eps),
        "aborted": len(state["aborted"]),
        "trials": len(state["plan"]),
        "policies": per_policy,
        "pairwise": pairwise,
        "ranking": ranking,
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def charts(state: dict, summary: dict) -> dict[str, str]:
    """``{success, latency, ranking}`` -> PNG data URIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    names = list(summary["policies"])
    rates = [summary["policies"][n]["success_rate"] for n in names]
    lo = [max(0.0, r - summary["policies"][n]["ci95"][0]) for n, r in zip(names, rates)]
    hi = [max(0.0, summary["policies"][n]["ci95"][1] - r) for n, r in zip(names, rates)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(names), 3.2))
    ax.bar(names, rates, yerr=[lo, hi], capsize=6, color="#4c78a8")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95%)")
    out["success"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    for n in names:
        lat = [x for e in state["episodes"] if e["policy"] == n for x in e.get("latencies_ms", [])]
        if lat:
            ax.hist(lat, bins=30, alpha=0.6, label=n)
    kinds = {e.get("latency_kind", "inference call (ms)") for e in state["episodes"]}
    ax.set_xlabel(" / ".join(sorted(kinds)) or "latency (ms)")
    ax.set_ylabel("count")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    out["latency"] = _png(fig)

    if summary["ranking"]:
        r = summary["ranking"][::-1]
        fig, ax = plt.subplots(figsize=(5.0, 0.6 + 0.5 * len(r)))
        s = [x["score"] for x in r]
        ax.errorbar(
            s,
            range(len(r)),
            xerr=[
                [max(0.0, v - x["ci95"][0]) for v, x in zip(s, r)],
                [max(0.0, x["ci95"][1] - v) for v, x in zip(s, r)],
            ],
            fmt="o",
            capsize=5,
        )
        ax.set_yticks(range(len(r)), [x["name"] for x in r])
        ax.set_xlabel("Bradley-Terry log-strength (95% bootstrap)")
        out["ranking"] = _png(fig)
    return out


def _f(x, digits=3) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _hide(state: dict, summary: dict) -> tuple[dict, dict]:
    """Replace policy names by opaque ids in an incomplete session (identities stay hidden)."""
    alias = {n: f"policy {i + 1}" for i, n in enumerate(state["config"]["names"])}
    text = json.dumps([state, summary])
    for n, a in alias.items():
        text = text.replace(json.dumps(n), json.dumps(a))
    s, m = json.loads(text)
    return s, m


def _media_cells(x: dict, root: Path | None, out: Path | None) -> str:
    """Inline thumbnails (base64 PNG) and links to the videos (copied into ``out/media``)."""
    if root is None or not x.get("media"):
        return ""
    cells = []
    for cam, m in sorted(x["media"].items()):
        thumb = Path(root) / m.get("thumb", "")
        if thumb.is_file():
            b64 = base64.b64encode(thumb.read_bytes()).decode()
            cells.append(f"<img class='thumb' alt='{html.escape(cam)}' src='data:image/png;base64,{b64}'>")
        video = Path(root) / m.get("video", "")
        if out is not None and video.is_file():
            dest = Path(out) / "media" / video.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, dest)
            cells.append(
                f"<a class='video' href='media/{html.escape(video.name)}'>{html.escape(cam)} video</a>"
            )
    return " ".join(cells)


def render_html(
    state: dict, summary: dict | None = None, root: str | Path | None = None, out: str | Path | None = None
) -> str:
    """The self-contained HTML report of a session. ``root``: the session file's folder (media
    paths are relative to it); ``out``: the report's folder (videos are copied to ``out/media``)."""
    summary = summary or summarize(state)
    if not summary["complete"]:
        state, summary = _hide(state, summary)
    imgs = charts(state, summary)
    e = html.escape
    rows = []
    for n, p in summary["policies"].items():
        s = _slug(n)
        rows.append(
            f"<tr><td>{e(n)}</td><td id='episodes-{s}'>{p['episodes']}</td>"
            f"<td id='successes-{s}'>{p['successes']}</td>"
            f"<td id='success-{s}'>{_f(p['success_rate'])}</td>"
            f"<td id='ci-{s}'>[{_f(p['ci95'][0])}, {_f(p['ci95'][1])}]</td>"
            f"<td id='partial-{s}'>{_f(p['partial_mean'], 1)}</td>"
            f"<td>[{_f(p['partial_ci95'][0], 1)}, {_f(p['partial_ci95'][1], 1)}]</td>"
            f"<td id='lat50-{s}'>{_f(p['latency_ms_p50'], 2)}</td><td>{_f(p['latency_ms_p95'], 2)}</td>"
            f"<td>{p['aborted']}</td></tr>"
        )
    pair_rows = [
        f"<tr><td>{e(r['a'])}</td><td>{e(r['b'])}</td><td>{r['a_wins']}</td><td>{r['b_wins']}</td>"
        f"<td>{r['ties']}</td><td>{_f(r['a_win_rate'])}</td><td>{_f(r['sign_test_p'], 4)}</td>"
        f"<td>{_f(r['fisher_success_p'], 4)}</td></tr>"
        for r in summary["pairwise"]
    ]
    rank_rows = [
        f"<tr><td>{r['rank']}</td><td>{e(r['name'])}</td><td id='bt-{_slug(r['name'])}'>{_f(r['score'])}</td>"
        f"<td>[{_f(r['ci95'][0])}, {_f(r['ci95'][1])}]</td><td>{r['rank_range'][0]}–{r['rank_range'][1]}</td></tr>"
        for r in summary["ranking"]
    ]
    notes = (
        [
            f"<li>trial {x['trial']} {e(x['label'])} ({e(x['policy'])}): {e(x['note'])}</li>"
            for x in state["episodes"]
            if x.get("note")
        ]
        + [
            f"<li>trial {x['trial']} preference {e(x['choice'])}: {e(x['note'])}</li>"
            for x in state["preferences"]
            if x.get("note")
        ]
        + [
            f"<li>trial {x['trial']} {e(x['label'])} aborted and re-run: {e(x.get('note') or 'no note')}</li>"
            for x in state["aborted"]
        ]
    )
    ep_rows = [
        f"<tr><td>{x['trial']}</td><td>{x['seed']}</td><td>{e(x['label'])}</td><td>{e(x['policy'])}</td>"
        f"<td>{'yes' if x['success'] else 'no'}</td><td>{x['partial']:g}</td><td>{x['steps']}</td>"
        f"<td>{_f(x['latency_ms']['p50'], 2)}</td><td>{e(x.get('note', ''))}</td>"
        f"<td>{x['dataset_episode'] if x.get('dataset_episode') is not None else '—'}</td>"
        f"<td>{_media_cells(x, root, out)}</td></tr>"
        for x in state["episodes"]
    ]
    img = lambda k: f"<img alt='{k}' src='{imgs[k]}'>" if k in imgs else ""  # noqa: E731
    status = "complete: identities revealed" if summary["complete"] else "in progress: identities hidden"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Evaluation session: {e(summary["task"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
img.thumb{{height:64px;vertical-align:middle;margin:1px}}</style></head>
<body>
<h1>Evaluation session: {e(summary["task"])} ({e(summary["mode"])})</h1>
<p id="status">{status}. <span id="n-episodes">{summary["episodes"]}</span> labelled episodes,
<span id="n-aborted">{summary["aborted"]}</span> aborted and re-run, {summary["trials"]} trials.</p>
<h2>Success</h2>
<table id="policies"><tr><th>policy</th><th>episodes</th><th>successes</th><th>success rate</th>
<th>Wilson 95%</th><th>partial (0-100)</th><th>bootstrap 95%</th><th>latency p50 ms</th><th>p95 ms</th><th>aborted</th></tr>
{"".join(rows)}</table>
{img("success")}
<h2>Ranking (Bradley-Terry over A/B preferences)</h2>
<table id="ranking"><tr><th>rank</th><th>policy</th><th>score</th><th>95% CI</th><th>rank range</th></tr>
{"".join(rank_rows)}</table>
{img("ranking")}
<h2>Pairwise</h2>
<table id="pairwise"><tr><th>A</th><th>B</th><th>A wins</th><th>B wins</th><th>ties</th><th>A win rate</th>
<th>sign test p</th><th>Fisher p (success)</th></tr>{"".join(pair_rows)}</table>
<h2>Latency</h2>{img("latency")}
<h2>Operator notes</h2><ul id="notes">{"".join(notes) or "<li>none</li>"}</ul>
<h2>Episodes</h2>
<table id="episodes"><tr><th>trial</th><th>seed</th><th>label</th><th>policy</th><th>success</th><th>partial</th>
<th>steps</th><th>latency p50 ms</th><th>note</th><th>recorded episode</th><th>cameras</th></tr>{"".join(ep_rows)}</table>
</body></html>
"""


def render_markdown(state: dict, summary: dict | None = None) -> str:
    """The markdown report (tables only)."""
    summary = summary or summarize(state)
    if not summary["complete"]:
        state, summary = _hide(state, summary)
    lines = [
        f"# Evaluation session: {summary['task']} ({summary['mode']})",
        "",
        f"{summary['episodes']} labelled episodes, {summary['aborted']} aborted and re-run, "
        f"{'complete' if summary['complete'] else 'in progress (identities hidden)'}.",
        "",
        "| policy | episodes | success | Wilson 95% | partial | bootstrap 95% | latency p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, p in summary["policies"].items():
        lines.append(
            f"| {n} | {p['episodes']} | {p['successes']}/{p['episodes']} ({_f(p['success_rate'], 2)}) | "
            f"[{_f(p['ci95'][0], 2)}, {_f(p['ci95'][1], 2)}] | {_f(p['partial_mean'], 1)} | "
            f"[{_f(p['partial_ci95'][0], 1)}, {_f(p['partial_ci95'][1], 1)}] | {_f(p['latency_ms_p50'], 2)} |"
        )
    if summary["ranking"]:
        lines += ["", "| rank | policy | BT score | 95% CI | rank range |", "|---|---|---|---|---|"]
        for r in summary["ranking"]:
            lines.append(
                f"| {r['rank']} | {r['name']} | {_f(r['score'], 2)} | [{_f(r['ci95'][0], 2)}, "
                f"{_f(r['ci95'][1], 2)}] | {r['rank_range'][0]}–{r['rank_range'][1]} |"
            )
    if summary["pairwise"]:
        lines += [
            "",
            "| A | B | A wins | B wins | ties | sign test p | Fisher p (success) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in summary["pairwise"]:
            lines.append(
                f"| {r['a']} | {r['b']} | {r['a_wins']} | {r['b_wins']} | {r['ties']} | "
                f"{_f(r['sign_test_p'], 4)} | {_f(r['fisher_success_p'], 4)} |"
            )
    notes = [f"- trial {x['trial']} {x['label']}: {x['note']}" for x in state["episodes"] if x.get("note")]
    notes += [
        f"- trial {x['trial']} preference {x['choice']}: {x['note']}"
        for x in state["preferences"]
        if x.get("note")
    ]
    notes += [
        f"- trial {x['trial']} {x['label']} aborted: {x.get('note') or 'no note'}" for x in state["aborted"]
    ]
    lines += ["", "## Operator notes", "", *(notes or ["none"]), ""]
    return "\n".join(lines)


def write_reports(
    state: dict, out_dir: str | Path, stem: str = "report", root: str | Path | None = None
) -> dict[str, Path]:
    """Write ``<stem>.html``, ``<stem>.md`` and ``<stem>.json`` (the summary) into ``out_dir``.
    ``root``: the session file's folder, where the episodes' media paths point."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(state)
    paths = {"html": out / f"{stem}.html", "md": out / f"{stem}.md", "json": out / f"{stem}.json"}
    paths["html"].write_text(render_html(state, summary, root=root, out=out))
    paths["md"].write_text(render_markdown(state, summary))
    shown = summary if summary["complete"] else _hide(state, summary)[1]
    paths["json"].write_text(json.dumps(shown, indent=1))
    return paths
