"""Operator-labelled evaluation sessions: blind A/B trials, resumable, one JSON file per session.

A session evaluates a list of policies. In ``ab`` mode (RoboArena's protocol) every trial picks
a pair of policies (round robin over all pairs), runs both from the **same reset seed** in a
random order, and shows the operator only the labels ``A`` and ``B`` (A runs first); the
label -> policy mapping lives in the session file and is revealed by the report when the
session is complete. In ``single`` mode every trial runs one policy (round robin, shuffled in
each round) under the hidden label ``X``.

After each episode the operator (a ``Labeller``, :mod:`robot_policy.evaluation.labels`) gives
success / failure, a partial score 0-100 and a note, or aborts the episode (it is re-run, not
counted); after both episodes of a trial, a preference ``A`` / ``B`` / ``tie``. The state is
written atomically (temp file + rename) after every episode and every preference, so an
interrupted session resumes where it stopped without losing or repeating a labelled episode.

What runs an episode is a ``Runner``: ``run(policy, seed) -> dict`` with at least ``success``
(the oracle's verdict, or None on a real robot), ``steps`` and ``latency_ms``; optionally
``finish(record, aborted) -> dict`` once the episode is labelled (commit its recording, write
its media; the dict is merged into the record) and ``recover(state) -> [records]`` at the start
(labelled episodes a killed session had already committed elsewhere, e.g. to the episode store,
but not yet to the session file). ``InProcessRunner`` (:mod:`~robot_policy.evaluation.inprocess`)
runs the simulation in this process; ``robot_policy.ros.evaluate_graph.GraphRunner`` runs
episodes through the ROS 2 graph on a simulated or real robot and records them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from robot_policy.evaluation.inprocess import ExpertPredictor, InProcessRunner, parse_expert
from robot_policy.evaluation.labels import (
    PREFERENCES,
    DeviceOperator,
    EpisodeLabel,
    Labeller,
    Preference,
    ScriptedOperator,
    SessionError,
    TerminalOperator,
)

__all__ = [
    "PREFERENCES",
    "DeviceOperator",
    "EpisodeLabel",
    "ExpertPredictor",
    "InProcessRunner",
    "Labeller",
    "Preference",
    "Runner",
    "ScriptedOperator",
    "SessionConfig",
    "SessionError",
    "TerminalOperator",
    "config_of",
    "load_state",
    "make_plan",
    "parse_expert",
    "run_session",
]

SESSION_VERSION = 1
MODES = ("ab", "single")


class Runner(Protocol):
    """Runs one episode of a policy (by name) from a reset seed; returns at least
    ``{success (oracle or None), steps, latency_ms: [per call or chunk]}``."""

    def run(self, policy: str, seed: int) -> dict: ...


@dataclass(frozen=True)
class SessionConfig:
    """What a session evaluates and how.

    Attributes:
        policies: policy sources in order: a checkpoint folder, or ``expert`` /
            ``expert:noise=N,action_noise=S`` (the task's scripted expert as a policy).
        names: display names, one per policy (default: the folder name / the source string).
        task: simulation task (ignored by a runner on a real robot, recorded for the report).
        trials: number of trials (``ab``: pairs of episodes; ``single``: episodes).
        mode: ``ab`` (blind pairwise trials) or ``single`` (one policy per trial).
        seed: reset seed of trial 0; trial t resets with ``seed + t`` (both policies of an A/B trial).
        randomization: domain-randomization YAML or bare name, or None.
        order_seed: seed of the random pair order and A/B assignment (fixed in the plan).
        operator: who labelled the session (free text, recorded).
        hardware: robot setup the session runs on through the ROS 2 graph (hardware/NAME.yaml or
            a path); empty: the in-process simulation.
        episode_s: time limit of one episode through the graph (s; in process: the task's limit).
    """

    policies: tuple[str, ...]
    names: tuple[str, ...] = ()
    task: str = "tabletop"
    trials: int = 10
    mode: str = "ab"
    seed: int = 100_000
    randomization: str | None = None
    order_seed: int = 0
    operator: str = ""
    hardware: str = ""
    episode_s: float = 10.0

    def __post_init__(self):
        object.__setattr__(self, "policies", tuple(self.policies))
        names = tuple(self.names) or tuple(_default_name(p) for p in self.policies)
        object.__setattr__(self, "names", names)
        if self.mode not in MODES:
            raise SessionError(f"mode={self.mode!r}: expected one of {MODES}")
        need = 2 if self.mode == "ab" else 1
        if len(self.policies) < need:
            raise SessionError(f"policies={list(self.policies)!r}: mode {self.mode!r} needs at least {need}")
        if len(names) != len(self.policies):
            raise SessionError(f"names={list(names)!r}: need one name per policy ({len(self.policies)})")
        if len(set(names)) != len(names):
            raise SessionError(f"names={list(names)!r}: names must be unique")
        if self.trials < 1:
            raise SessionError(f"trials={self.trials}: must be >= 1")


def _default_name(source: str) -> str:
    p = Path(source)
    return p.name if p.exists() else source


# -- the session ----------------------------------------------------------------------------------


def make_plan(cfg: SessionConfig) -> list[dict]:
    """Trials ``[{trial, seed, labels: {label: policy name}}]``: random pair order and A/B sides."""
    rng = random.Random(cfg.order_seed)
    plan = []
    if cfg.mode == "ab":
        pairs = list(itertools.combinations(cfg.names, 2))
        queue: list = []
        for t in range(cfg.trials):
            if not queue:
                queue = pairs[:]
                rng.shuffle(queue)
            a, b = queue.pop()
            if rng.random() < 0.5:
                a, b = b, a
            plan.append({"trial": t, "seed": cfg.seed + t, "labels": {"A": a, "B": b}})
    else:
        queue = []
        for t in range(cfg.trials):
            if not queue:
                queue = list(cfg.names)
                rng.shuffle(queue)
            plan.append({"trial": t, "seed": cfg.seed + t, "labels": {"X": queue.pop()}})
    return plan


def atomic_write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_state(cfg: SessionConfig) -> dict:
    return {
        "version": SESSION_VERSION,
        "id": uuid.uuid4().hex,
        "config": dataclasses.asdict(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "status": "running",
        "plan": make_plan(cfg),
        "episodes": [],
        "aborted": [],
        "preferences": [],
    }


def load_state(path: Path) -> dict:
    """Read a session file, checking its version and the fields the runner relies on."""
    try:
        state = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise SessionError(f"{path}: not a session JSON file ({e})") from e
    if state.get("version") != SESSION_VERSION:
        raise SessionError(f"{path}: version={state.get('version')!r}, expected {SESSION_VERSION}")
    for key in ("config", "plan", "episodes", "aborted", "preferences"):
        if key not in state:
            raise SessionError(f"{path}: missing field {key!r}")
    state.setdefault("id", uuid.uuid5(uuid.NAMESPACE_URL, str(Path(path).resolve())).hex)  # older files
    return state


def config_of(state: dict) -> SessionConfig:
    c = dict(state["config"])
    return SessionConfig(**{**c, "policies": tuple(c["policies"]), "names": tuple(c["names"])})


def _latency_summary(lat: list[float]) -> dict:
    if not lat:
        return {"p50": None, "p95": None, "max": None, "calls": 0}
    a = np.asarray(lat, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
        "calls": int(a.size),
    }


def _record(state, t, label, policy, seed, started, result, verdict: EpisodeLabel) -> dict:
    """One episode's entry in the session file (and, through a recorder, in the episode store)."""
    lat = [float(x) for x in result.get("latency_ms", [])]
    out = {
        "session": state["id"],
        "trial": t,
        "label": label,
        "policy": policy,
        "seed": seed,
        "started": started,
        "duration_s": time.time() - started,
        "steps": int(result.get("steps", 0)),
        "oracle_success": result.get("success"),
        "latency_ms": _latency_summary(lat),
        "latencies_ms": lat,
        "latency_kind": result.get("latency_kind", "inference call (ms)"),
        **{k: v for k, v in dataclasses.asdict(verdict).items() if k != "aborted"},
    }
    for key in ("episode_s", "inference_ms", "ended_by"):
        if key in result:
            out[key] = result[key]
    return out


def run_session(
    path: str | Path,
    runner: Runner,
    labeller: Labeller,
    cfg: SessionConfig | None = None,
    max_episodes: int | None = None,
    progress: bool = True,
    on_episode: Callable[[dict], None] | None = None,
) -> dict:
    """Run (or resume) the session stored at ``path``; returns the state.

    ``cfg`` starts a new session (an existing file with a different config is an error; with the
    same config it resumes). Without ``cfg`` the file must exist. ``max_episodes`` stops after that
    many labelled episodes in this call (an interruption, for tests and short sittings).
    """
    path = Path(path)
    if path.exists():
        state = load_state(path)
        if cfg is not None and json.loads(json.dumps(dataclasses.asdict(cfg))) != state["config"]:
            raise SessionError(
                f"{path} holds a session with another config; resume it without a config or pick a new file"
            )
    elif cfg is None:
        raise SessionError(f"{path}: no such session file (give a config to start one)")
    else:
        state = new_state(cfg)
        atomic_write_json(path, state)
    recover = getattr(runner, "recover", None)
    if recover is not None:  # labelled and recorded by a session killed before it saved them
        have = {(e["trial"], e["label"]) for e in state["episodes"]}
        found = [r for r in recover(state) if (r["trial"], r["label"]) not in have]
        if found:
            state["episodes"].extend(sorted(found, key=lambda r: (r["trial"], r["label"])))
            atomic_write_json(path, state)
    done = {(e["trial"], e["label"]) for e in state["episodes"]}
    preferred = {p["trial"] for p in state["preferences"]}
    total = sum(len(t["labels"]) for t in state["plan"])
    ready = getattr(labeller, "ready", None)
    finish = getattr(runner, "finish", None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=len(done), desc="session", unit="ep", dynamic_ncols=True)
    ran = 0
    try:
        for trial in state["plan"]:
            t, seed, labels = trial["trial"], trial["seed"], trial["labels"]
            for label, policy in labels.items():
                if (t, label) in done:
                    continue
                if max_episodes is not None and ran >= max_episodes:
                    return state
                while True:  # an aborted episode is re-run from the same seed
                    if ready is not None:
                        ready(t, label, seed)  # the operator reset the scene and starts the episode
                    started = time.time()
                    result = runner.run(policy, seed)
                    verdict = labeller.label(t, label, seed, result)
                    record = _record(state, t, label, policy, seed, started, result, verdict)
                    if finish is not None:
                        record.update(finish(record, verdict.aborted))
                    if not verdict.aborted:
                        break
                    state["aborted"].append(record)
                    atomic_write_json(path, state)
                state["episodes"].append(record)
                done.add((t, label))
                atomic_write_json(path, state)
                ran += 1
                if bar is not None:
                    bar.update(1)
                if on_episode is not None:
                    on_episode(record)
            if len(labels) == 2 and t not in preferred:
                eps = {e["label"]: e for e in state["episodes"] if e["trial"] == t}
                pref = labeller.prefer(
                    t,
                    {k: EpisodeLabel(e["success"], e["partial"], e["note"]) for k, e in eps.items()},
                    {k: {"steps": e["steps"], "success": e["oracle_success"]} for k, e in eps.items()},
                )
                winner = None if pref.choice == "tie" else labels[pref.choice]
                state["preferences"].append(
                    {"trial": t, "choice": pref.choice, "winner": winner, "note": pref.note, "labels": labels}
                )
                preferred.add(t)
                atomic_write_json(path, state)
        state["status"] = "complete"
        state["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(path, state)
        return state
    finally:
        if bar is not None:
            bar.close()
