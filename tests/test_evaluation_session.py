"""Operator-labelled evaluation sessions: statistics against known values, a blind A/B session in
simulation with the scripted operator, resume after an interruption, and the HTML report in a
real headless Chromium."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from robot_policy.evaluation.ab import (
    Comparison,
    bootstrap_mean,
    bradley_terry,
    fisher_exact,
    mmrv,
    pearson,
    sign_test,
    win_rates,
)
from robot_policy.evaluation.report import render_html, render_markdown, summarize, write_reports
from robot_policy.evaluation.session import (
    EpisodeLabel,
    InProcessRunner,
    ScriptedOperator,
    SessionConfig,
    SessionError,
    load_state,
    make_plan,
    parse_expert,
    run_session,
)

# -- statistics -----------------------------------------------------------------------------------


def test_fisher_exact_matches_known_values():
    # scipy.stats.fisher_exact([[8, 2], [1, 5]]) -> p = 0.034965...
    assert fisher_exact(8, 10, 1, 6) == pytest.approx(0.034965034965, rel=1e-9)
    assert fisher_exact(3, 10, 3, 10) == pytest.approx(1.0)
    assert fisher_exact(0, 0, 0, 0) == 1.0
    with pytest.raises(ValueError, match="k1=11"):
        fisher_exact(11, 10, 0, 5)


def test_fisher_exact_agrees_with_scipy_on_a_grid():
    stats = pytest.importorskip("scipy.stats")
    for k1, n1, k2, n2 in [(5, 10, 9, 10), (0, 12, 6, 12), (20, 30, 11, 25), (1, 3, 2, 4)]:
        ref = stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])[1]
        assert fisher_exact(k1, n1, k2, n2) == pytest.approx(ref, rel=1e-9)


def test_sign_test_known_values():
    assert sign_test(9, 3) == pytest.approx(0.14599609375)  # 2 * P(Bin(12, .5) <= 3)
    assert sign_test(2, 8) == pytest.approx(0.109375)
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(0, 0) == 1.0


def test_bootstrap_mean_interval_brackets_the_mean_and_is_degenerate_for_constants():
    m, lo, hi = bootstrap_mean([100.0] * 8)
    assert m == lo == hi == 100.0
    x = np.r_[np.zeros(10), np.full(10, 100.0)]
    m, lo, hi = bootstrap_mean(x, n_boot=4000)
    assert m == 50.0 and 25.0 < lo < 50.0 < hi < 75.0
    # Normal approximation of the bootstrap: SE = 50 / sqrt(20) = 11.2 -> half-width ~ 21.9
    assert hi - lo == pytest.approx(2 * 1.96 * 50 / math.sqrt(20), rel=0.15)
    assert all(math.isnan(v) for v in bootstrap_mean([]))


def test_win_rates_count_ties_as_half():
    comps = [Comparison("a", "b", "a")] * 3 + [Comparison("b", "a", "b")] + [Comparison("a", "b", None)] * 2
    r = win_rates(comps)
    assert r["a"]["b"] == {"wins": 3, "losses": 1, "ties": 2, "trials": 6, "win_rate": pytest.approx(4 / 6)}
    assert r["b"]["a"]["win_rate"] == pytest.approx(2 / 6)


def test_bradley_terry_two_players_is_the_log_odds():
    comps = [Comparison("a", "b", "a")] * 7 + [Comparison("a", "b", "b")] * 3
    ranking = bradley_terry(comps, prior=0.0, n_boot=200)
    assert [r["name"] for r in ranking] == ["a", "b"]
    # MLE: P(a beats b) = 0.7 -> s_a - s_b = log(7/3), scores centred.
    assert ranking[0]["score"] == pytest.approx(0.5 * math.log(7 / 3), abs=1e-6)
    assert ranking[1]["score"] == pytest.approx(-0.5 * math.log(7 / 3), abs=1e-6)
    lo, hi = ranking[0]["ci95"]
    assert lo < ranking[0]["score"] < hi


def test_bradley_terry_recovers_a_known_ordering_with_uncertainty():
    rng = np.random.default_rng(0)
    true = {"p0": 1.0, "p1": 0.0, "p2": -1.0}
    comps = []
    for _ in range(600):
        a, b = rng.choice(list(true), 2, replace=False)
        pa = 1 / (1 + math.exp(true[b] - true[a]))
        comps.append(Comparison(a, b, a if rng.random() < pa else b))
    ranking = bradley_terry(comps, n_boot=100)
    assert [r["name"] for r in ranking] == ["p0", "p1", "p2"]
    for r in ranking:
        assert r["score"] == pytest.approx(true[r["name"]], abs=0.25)
        assert r["ci95"][0] < true[r["name"]] < r["ci95"][1]
    assert ranking[0]["rank_range"] == [1, 1]
    # An undefeated policy stays finite thanks to the prior.
    top = bradley_terry([Comparison("x", "y", "x")] * 5, n_boot=20)
    assert all(math.isfinite(r["score"]) for r in top) and top[0]["name"] == "x"


def test_pearson_and_mmrv_follow_simpler():
    sim, real = [0.1, 0.5, 0.3], [0.2, 0.4, 0.6]
    # pairs (1, 2) are swapped by sim; their real gap is 0.2; policies 1 and 2 each see it.
    assert mmrv(sim, real) == pytest.approx(0.4 / 3)
    assert mmrv([0.1, 0.2, 0.3], [0.3, 0.5, 0.9]) == 0.0  # same order: no violation
    assert pearson(sim, real) == pytest.approx(np.corrcoef(sim, real)[0, 1])
    assert pearson([0.1, 0.2], [0.1, 0.2]) == 1.0
    # a tie in sim with a strict order in real is a violation (SIMPLER's strict comparison)
    assert mmrv([0.5, 0.5], [0.2, 0.6]) == pytest.approx(0.4 / 2)
    with pytest.raises(ValueError, match="same"):
        mmrv([0.1], [0.1, 0.2])


# -- sessions -------------------------------------------------------------------------------------


def test_plan_hides_identities_behind_random_sides_and_matched_seeds():
    cfg = SessionConfig(policies=("expert", "expert:noise=3", "expert:action_noise=0.1"), trials=12, seed=7)
    plan = make_plan(cfg)
    assert [t["seed"] for t in plan] == list(range(7, 19))
    pairs = {tuple(sorted(t["labels"].values())) for t in plan}
    assert len(pairs) == 3  # round robin over every pair
    assert {t["labels"]["A"] for t in plan} == set(cfg.names)  # each policy sometimes A
    assert plan == make_plan(cfg)  # fixed by order_seed


def test_config_errors_name_the_field():
    with pytest.raises(SessionError, match="needs at least 2"):
        SessionConfig(policies=("expert",), mode="ab")
    with pytest.raises(SessionError, match="mode='x'"):
        SessionConfig(policies=("expert", "expert:noise=2"), mode="x")
    with pytest.raises(SessionError, match="unknown expert option 'speed'"):
        parse_expert("expert:speed=2")
    with pytest.raises(SessionError, match=r"partial=120"):
        EpisodeLabel(partial=120)


class CrashAfter:
    """A runner that dies (like a killed process) on its n-th call."""

    def __init__(self, runner, n):
        self.runner, self.n, self.calls = runner, n, 0

    def __getattr__(self, name):  # finish / recover of the wrapped runner
        return getattr(self.runner, name)

    def run(self, policy, seed):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt("operator pulled the plug")
        return self.runner.run(policy, seed)


class SpyOperator(ScriptedOperator):
    """Records everything the operator is shown, to check that no policy name leaks to it."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def label(self, trial, label, seed, result):
        self.seen.append(json.dumps({"label": label, "result": {k: result[k] for k in ("success", "steps")}}))
        return super().label(trial, label, seed, result)


GOOD, BAD = "expert", "expert:action_noise=0.08"


@pytest.fixture(scope="module")
def ab_session(tmp_path_factory):
    """A full blind A/B session (expert vs a noisy expert) interrupted twice and resumed."""
    tmp = tmp_path_factory.mktemp("session")
    path = tmp / "session.json"
    cfg = SessionConfig(policies=(GOOD, BAD), names=("expert", "noisy"), task="tabletop", trials=6, seed=500)
    runner = InProcessRunner(cfg, media_dir=tmp / "session_media")
    op = SpyOperator(abort={(1, "B")})
    # 1) a crash in the middle of the 4th episode: the three labelled ones are on disk
    with pytest.raises(KeyboardInterrupt):
        run_session(path, CrashAfter(runner, 4), op, cfg=cfg, progress=False)
    after_crash = load_state(path)
    # 2) a clean stop after two more episodes
    run_session(path, runner, op, cfg=cfg, max_episodes=2, progress=False)
    after_stop = load_state(path)
    # 3) resume to the end without a config
    state = run_session(path, runner, op, progress=False)
    runner.close()
    return {
        "path": path,
        "cfg": cfg,
        "crash": after_crash,
        "stop": after_stop,
        "state": state,
        "op": op,
        "tmp": tmp,
    }


def test_ab_session_resumes_without_losing_or_repeating_an_episode(ab_session):
    crash, stop, state = ab_session["crash"], ab_session["stop"], ab_session["state"]
    assert crash["status"] == "running" and len(crash["episodes"]) == 3  # died in the 4th
    assert len(stop["episodes"]) == len(crash["episodes"]) + 2
    assert state["status"] == "complete"
    keys = [(e["trial"], e["label"]) for e in state["episodes"]]
    assert len(keys) == len(set(keys)) == 12  # every (trial, label) exactly once
    assert {t: {e["label"] for e in state["episodes"] if e["trial"] == t} for t in range(6)} == {
        t: {"A", "B"} for t in range(6)
    }
    # the aborted episode was recorded apart and re-run from the same seed
    assert [(a["trial"], a["label"]) for a in state["aborted"]] == [(1, "B")]
    assert [p["trial"] for p in state["preferences"]] == list(range(6))
    assert load_state(ab_session["path"]) == json.loads(json.dumps(state))


def test_ab_session_records_labels_identities_and_latencies(ab_session):
    state = ab_session["state"]
    for e in state["episodes"]:
        plan = state["plan"][e["trial"]]
        assert plan["labels"][e["label"]] == e["policy"] and plan["seed"] == e["seed"]
        assert e["success"] == e["oracle_success"]  # the scripted operator labels from the oracle
        assert e["partial"] == (100.0 if e["success"] else 0.0)
        assert e["latency_ms"]["calls"] == len(e["latencies_ms"]) > 0
    for p in state["preferences"]:
        eps = {e["label"]: e for e in state["episodes"] if e["trial"] == p["trial"]}
        if eps["A"]["partial"] != eps["B"]["partial"]:
            assert p["winner"] == max(eps.values(), key=lambda e: e["partial"])["policy"]
    # the operator never saw a policy name
    assert not any(n in s for s in ab_session["op"].seen for n in ("expert", "noisy"))
    s = summarize(state)
    assert s["policies"]["expert"]["episodes"] == s["policies"]["noisy"]["episodes"] == 6
    assert s["policies"]["expert"]["success_rate"] >= s["policies"]["noisy"]["success_rate"]


def test_report_of_an_unfinished_session_hides_identities(ab_session):
    text = render_html(ab_session["stop"]) + render_markdown(ab_session["stop"])
    assert "noisy" not in text and "expert" not in text and "identities hidden" in text
    done = render_markdown(ab_session["state"])
    assert "noisy" in done and "expert" in done


def test_resume_with_another_config_is_refused(ab_session):
    other = SessionConfig(policies=(GOOD, BAD), names=("expert", "noisy"), trials=7, seed=500)
    with pytest.raises(SessionError, match="another config"):
        run_session(ab_session["path"], None, None, cfg=other, progress=False)


def _chromium() -> str | None:
    for exe in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(exe):
            return path
    return None


def test_html_report_renders_in_headless_chromium_and_matches_the_json(ab_session):
    exe = _chromium()
    assert exe is not None, "no chromium on PATH: run.sh installs it (apt-get install chromium)"
    paths = write_reports(ab_session["state"], ab_session["tmp"] / "report", root=ab_session["tmp"])
    html_text = paths["html"].read_text()
    assert "http://" not in html_text and "https://" not in html_text  # self-contained
    # three charts + one camera thumbnail strip per labelled episode, inline
    assert html_text.count("data:image/png;base64,") == 3 + 12
    # As root (this image runs as root) Chromium needs --no-sandbox.
    res = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", paths["html"].as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    summary = json.loads(paths["json"].read_text())

    def cell(id_):
        m = re.search(rf"id=\"{re.escape(id_)}\"[^>]*>([^<]*)<", dom)
        assert m, f"{id_} not in the rendered DOM"
        return m.group(1)

    assert int(cell("n-episodes")) == 12 and int(cell("n-aborted")) == 1
    for name, p in summary["policies"].items():
        assert int(cell(f"successes-{name}")) == p["successes"]
        assert float(cell(f"success-{name}")) == pytest.approx(p["success_rate"], abs=1e-3)
        assert float(cell(f"partial-{name}")) == pytest.approx(p["partial_mean"], abs=0.05)
        lo, hi = (float(x) for x in cell(f"ci-{name}").strip("[]").split(","))
        assert (lo, hi) == pytest.approx(tuple(p["ci95"]), abs=1e-3)
    for r in summary["ranking"]:
        assert float(cell(f"bt-{r['name']}")) == pytest.approx(r["score"], abs=1e-3)
    assert dom.count("<img") == 3 + 12 and dom.count('class="thumb"') == 12
    assert dom.count('class="video"') == 12  # links to the videos copied next to the report
    for e in ab_session["state"]["episodes"]:
        assert (paths["html"].parent / "media" / Path(e["media"]["render"]["video"]).name).is_file()
    assert "scripted abort" in dom  # the aborted attempt's note is in the operator's notes


def test_cli_session_scripted_then_report(tmp_path, capsys):
    from robot_policy.cli.main import main

    session = tmp_path / "s.json"
    argv = ["evaluate", "session", "--session", str(session), "--policy", GOOD, "--policy", BAD]
    argv += ["--name", "expert", "--name", "noisy", "--trials", "2", "--operator", "scripted"]
    assert main([*argv, "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "expert" in out and (tmp_path / "rep" / "report.html").exists()
    assert load_state(session)["status"] == "complete"
    assert main(["evaluate", "report", str(session), "--out", str(tmp_path / "rep2")]) == 0
    assert main(["evaluate", "session", "--session", str(tmp_path / "none.json")]) == 2


def test_terminal_operator_reprompts_on_bad_input_and_aborts():
    from robot_policy.evaluation.session import TerminalOperator

    answers = iter(["x", "s", "150", "80", "slow grasp", "a", "scene bumped", "q", "t", "same"])
    said = []
    op = TerminalOperator(ask=lambda prompt: next(answers), say=said.append)
    lab = op.label(0, "A", 1, {"steps": 10})
    assert (lab.success, lab.partial, lab.note, lab.aborted) == (True, 80.0, "slow grasp", False)
    lab = op.label(0, "B", 1, {"steps": 10})
    assert lab.aborted and lab.note == "scene bumped"
    pref = op.prefer(0, {}, {})
    assert (pref.choice, pref.note) == ("tie", "same")
    assert any("one of" in s for s in said) and any("0 to 100" in s for s in said)


def test_cli_correlate_reports_pearson_and_mmrv(tmp_path, capsys):
    from robot_policy.cli.main import main

    out = tmp_path / "corr.json"
    argv = ["evaluate", "correlate", "--policy", GOOD, "--policy", "expert:action_noise=0.2"]
    assert main([*argv, "--episodes", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["sim"]) == len(res["real"]) == 2
    assert res["mmrv"] == pytest.approx(mmrv(res["sim"], res["real"]))
    assert "MMRV" in capsys.readouterr().out


def test_session_runs_a_checkpoint_policy_against_the_expert(tmp_path):
    """A checkpoint folder (an untrained tiny flow policy) goes through the same session path."""
    from robot_policy.policies import POLICIES, PolicyConfig, save_policy

    keys = {"joint_pos": 7, "gripper": 1, "object": 7}
    stats = {
        k: {"min": -np.ones(d), "max": np.ones(d), "mean": np.zeros(d), "std": np.ones(d)}
        for k, d in keys.items()
    }
    stats["action"] = {"min": -np.ones(8) * 2, "max": np.ones(8) * 2, "mean": np.zeros(8), "std": np.ones(8)}
    pcfg = PolicyConfig(
        family="flow",
        obs_keys=list(keys),
        obs_shapes={k: [d] for k, d in keys.items()},
        action_dim=8,
        down_dims=[16, 32],
        step_embed_dim=16,
        obs_mlp_dims=[32],
    )
    save_policy(POLICIES.get("flow")(pcfg, stats), tmp_path / "tiny")
    cfg = SessionConfig(policies=(str(tmp_path / "tiny"), GOOD), trials=1, task="tabletop")
    assert cfg.names == ("tiny", GOOD)
    runner = InProcessRunner(cfg)
    state = run_session(tmp_path / "s.json", runner, ScriptedOperator(), cfg=cfg, progress=False)
    runner.close()
    eps = {e["policy"]: e for e in state["episodes"]}
    assert set(eps) == {"tiny", GOOD} and eps["tiny"]["latency_ms"]["calls"] > 0
    assert eps["tiny"]["seed"] == eps[GOOD]["seed"]  # matched reset
    assert state["preferences"][0]["winner"] in ("tiny", GOOD, None)
    with pytest.raises(SessionError, match="not a checkpoint folder"):
        InProcessRunner(SessionConfig(policies=("nope", GOOD), trials=1)).run("nope", 0)


def test_device_operator_labels_from_keyboard_keys():
    """The keyboard's episode keys: n starts, m/l label (and end a running episode), b aborts,
    k ends it; after a trial m = A better, l = B better, k = tie."""
    import os

    from robot_policy.evaluation.labels import DeviceOperator
    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.teleop.base import make_teleop

    r, w = os.pipe()
    said = []
    with os.fdopen(r, "rb", buffering=0) as stream:
        dev = make_teleop("keyboard", load_hardware_config("sim_tabletop"), stream=stream)
        dev.connect()
        op = DeviceOperator(dev, say=said.append, poll_s=0.001)
        os.write(w, b"qn")  # a jog key is not a start
        op.ready(0, "A", 1)
        assert not op.end_requested()
        os.write(w, b"m")  # success while it runs: ends it and labels it
        assert op.end_requested()
        lab = op.label(0, "A", 1, {})
        assert (lab.success, lab.partial, lab.aborted) == (True, 100.0, False)
        os.write(w, b"nk")  # start, then end: labelled afterwards
        op.ready(0, "B", 1)
        assert op.end_requested()
        os.write(w, b"b")
        assert op.label(0, "B", 1, {}).aborted
        os.write(w, b"l")
        lab = op.label(0, "B", 1, {})
        assert (lab.success, lab.partial) == (False, 0.0)
        os.write(w, b"k")
        assert op.prefer(0, {}, {}).choice == "tie"
        dev.disconnect()
    os.close(w)
    assert "key n" in said[0] and any("key m" in x for x in said)


def test_correlation_from_two_sessions_matches_simpler_metrics(tmp_path):
    from robot_policy.evaluation.correlation import correlate, rates_from_session, write_correlation_report

    def state(rates):
        eps = [{"policy": n, "success": i < k} for n, (k, m) in rates.items() for i in range(m)]
        return {"config": {"names": list(rates)}, "episodes": eps}

    sim = rates_from_session(state({"a": (9, 10), "b": (5, 10), "c": (3, 10)}))
    real = rates_from_session(state({"a": (8, 10), "b": (2, 10), "c": (4, 10), "d": (1, 10)}))
    assert sim["a"] == (9, 10) and real["d"] == (1, 10)
    out = correlate(sim, real)
    assert [p["name"] for p in out["policies"]] == ["a", "b", "c"] and out["unmatched"] == ["d"]
    assert out["pearson_r"] == pytest.approx(np.corrcoef([0.9, 0.5, 0.3], [0.8, 0.2, 0.4])[0, 1])
    assert out["mmrv"] == pytest.approx(mmrv([0.9, 0.5, 0.3], [0.8, 0.2, 0.4]))
    paths = write_correlation_report(out, tmp_path)
    assert "MMRV" in paths["md"].read_text() and "data:image/png" in paths["html"].read_text()
    with pytest.raises(SessionError, match="at least 2 policies"):
        correlate({"a": (1, 2)}, {"a": (1, 2), "b": (0, 2)})
