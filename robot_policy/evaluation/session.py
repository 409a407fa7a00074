"""Operator-labelled evaluation sessions: blind A/B trials, resumable, one JSON file per session.

A session evaluates a list of policies. In ``ab`` mode (RoboArena's protocol) every trial picks
a pair of policies (round robin over all pairs), runs both from the **same reset seed** in a
random order, and shows the operator only the labels ``A`` and ``B`` (A runs first); the
label -> policy mapping lives in the session file and is revealed by the report when the
session is complete. In ``single`` mode every trial runs one policy (round robin, shuffled in
each round) under the hidden label ``X``.

After each episode the operator (a ``Labeller``) gives success / failure, a partial score 0-100
and a note, or aborts the episode (it is re-run, not counted); after both episodes of a trial,
a preference ``A`` / ``B`` / ``tie``. The state is written atomically (temp file + rename) after
every episode and every preference, so an interrupted session resumes where it stopped without
losing or repeating a labelled episode.

What runs an episode is a ``Runner`` (``run(policy, seed) -> dict`` with at least ``success``,
``steps`` and ``latency_ms``): ``InProcessRunner`` runs the simulation in this process through
``evaluation.rollout.run_episode``. Labellers: ``ScriptedOperator`` (labels from the simulator's
oracle, for tests and simulated sessions) and ``TerminalOperator`` (a person at a keyboard).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SESSION_VERSION = 1
MODES = ("ab", "single")
PREFERENCES = ("A", "B", "tie")


class SessionError(ValueError):
    """A session file or config that cannot be used (names the field and the value)."""


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


@dataclass
class EpisodeLabel:
    """The operator's verdict on one episode. ``aborted``: re-run it, do not count it."""

    success: bool = False
    partial: float = 0.0
    note: str = ""
    aborted: bool = False

    def __post_init__(self):
        if not 0.0 <= float(self.partial) <= 100.0:
            raise SessionError(f"partial={self.partial}: a partial score lies in [0, 100]")


@dataclass
class Preference:
    """The operator's A/B verdict on one trial: ``choice`` in ``A``, ``B``, ``tie``."""

    choice: str
    note: str = ""

    def __post_init__(self):
        if self.choice not in PREFERENCES:
            raise SessionError(f"preference={self.choice!r}: expected one of {PREFERENCES}")


class Runner(Protocol):
    """Runs one episode of a policy (by name) from a reset seed; returns at least
    ``{success (oracle or None), steps, latency_ms: [per inference call]}``."""

    def run(self, policy: str, seed: int) -> dict: ...


class Labeller(Protocol):
    """The operator: sees the hidden label only, never the policy name."""

    def label(self, trial: int, label: str, seed: int, result: Mapping) -> EpisodeLabel: ...

    def prefer(
        self, trial: int, labels: Mapping[str, EpisodeLabel], results: Mapping[str, Mapping]
    ) -> Preference: ...


# -- labellers ------------------------------------------------------------------------------------


class ScriptedOperator:
    """Labels from the simulator's oracle: success -> 100, failure -> 0 (or ``result['progress']``
    x 100 when the runner reports progress). Prefers the higher score; between two successes, the
    faster episode; otherwise a tie. ``abort`` lists ``(trial, label)`` whose first attempt it
    aborts (to exercise re-runs)."""

    def __init__(self, abort: set[tuple[int, str]] | None = None):
        self.abort = set(abort or ())

    def label(self, trial, label, seed, result) -> EpisodeLabel:
        if (trial, label) in self.abort:
            self.abort.discard((trial, label))
            return EpisodeLabel(aborted=True, note="scripted abort")
        ok = bool(result.get("success"))
        partial = 100.0 if ok else float(np.clip(result.get("progress", 0.0), 0.0, 1.0)) * 100.0
        return EpisodeLabel(success=ok, partial=partial, note="" if ok else "oracle: not done")

    def prefer(self, trial, labels, results) -> Preference:
        a, b = labels["A"], labels["B"]
        if a.partial != b.partial:
            return Preference("A" if a.partial > b.partial else "B")
        if a.success and b.success and results["A"]["steps"] != results["B"]["steps"]:
            return Preference("A" if results["A"]["steps"] < results["B"]["steps"] else "B", note="faster")
        return Preference("tie")


class TerminalOperator:
    """A person at the terminal: ``s``uccess / ``f``ailure / ``a``bort, a partial score, a note."""

    def __init__(self, ask: Callable[[str], str] = input, say: Callable[[str], None] = print):
        self.ask, self.say = ask, say

    def _choice(self, prompt: str, options: dict[str, Any]) -> Any:
        while True:
            ans = self.ask(prompt).strip().lower()
            if ans in options:
                return options[ans]
            self.say(f"  please answer one of: {', '.join(options)}")

    def label(self, trial, label, seed, result) -> EpisodeLabel:
        self.say(f"trial {trial}, policy {label} (seed {seed}) finished after {result.get('steps')} steps")
        verdict = self._choice("  outcome [s]uccess/[f]ailure/[a]bort: ", {"s": "s", "f": "f", "a": "a"})
        if verdict == "a":
            return EpisodeLabel(aborted=True, note=self.ask("  why aborted (note): ").strip())
        default = 100.0 if verdict == "s" else 0.0
        while True:
            raw = self.ask(f"  partial score 0-100 [{default:g}]: ").strip()
            try:
                partial = float(raw) if raw else default
                if 0.0 <= partial <= 100.0:
                    break
            except ValueError:
                pass
            self.say("  a number from 0 to 100, please")
        return EpisodeLabel(success=verdict == "s", partial=partial, note=self.ask("  note: ").strip())

    def prefer(self, trial, labels, results) -> Preference:
        choice = self._choice("  which was better? [a]/[b]/[t]ie: ", {"a": "A", "b": "B", "t": "tie"})
        return Preference(choice, note=self.ask("  note: ").strip())


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
    done = {(e["trial"], e["label"]) for e in state["episodes"]}
    preferred = {p["trial"] for p in state["preferences"]}
    total = sum(len(t["labels"]) for t in state["plan"])
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
                    started = time.time()
                    result = runner.run(policy, seed)
                    verdict = labeller.label(t, label, seed, result)
                    record = {
                        "trial": t,
                        "label": label,
                        "policy": policy,
                        "seed": seed,
                        "started": started,
                        "duration_s": time.time() - started,
                        "steps": int(result.get("steps", 0)),
                        "oracle_success": result.get("success"),
                        "latency_ms": _latency_summary(list(result.get("latency_ms", []))),
                        "latencies_ms": [float(x) for x in result.get("latency_ms", [])],
                        **{k: v for k, v in dataclasses.asdict(verdict).items() if k != "aborted"},
                    }
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


# -- in-process simulation runner -----------------------------------------------------------------


@dataclass
class ExpertPredictor:
    """The task's scripted expert behind the ``Predictor`` interface (a baseline "policy").

    ``noise`` scales the expert's own randomness (grasp offset, speed); ``action_noise`` adds
    Gaussian noise (rad) to every joint target: a worse policy for comparisons.
    """

    env: Any
    task: str
    noise: float = 1.0
    action_noise: float = 0.0
    seed: int = 0
    _expert: Any = field(default=None, init=False, repr=False)

    def __post_init__(self):
        from robot_policy.sim import make_expert

        self._expert = make_expert(self.task, self.env, noise=self.noise)
        self.obs_keys = list(self.env.observation_space.spaces)
        self._rng = np.random.default_rng(self.seed)

    def reset(self, seed: int | None = None) -> None:
        self._expert.reset(seed)
        self._rng = np.random.default_rng(None if seed is None else seed + 7919)

    def predict(self, obs, prior=None, start_time: float = 0.0, num_steps=None):
        from robot_policy.types import ActionChunk

        a = self._expert.act({k: np.asarray(v)[-1] for k, v in obs.items()})
        if self.action_noise:
            a = a.copy()
            a[:-1] += self._rng.normal(0.0, self.action_noise, a.size - 1).astype(a.dtype)
        return ActionChunk(actions=a[None], start_time=start_time, dt=1.0 / self.env.unwrapped.control_hz)


def parse_expert(source: str) -> dict | None:
    """``expert`` / ``expert:noise=2,action_noise=0.02`` -> kwargs; None for anything else."""
    if source != "expert" and not source.startswith("expert:"):
        return None
    kwargs: dict[str, float] = {}
    for part in filter(None, source.partition(":")[2].split(",")):
        key, _, value = part.partition("=")
        if key not in ("noise", "action_noise"):
            raise SessionError(f"policy {source!r}: unknown expert option {key!r} (noise, action_noise)")
        try:
            kwargs[key] = float(value)
        except ValueError as e:
            raise SessionError(f"policy {source!r}: {key}={value!r} is not a number") from e
    return kwargs


class InProcessRunner:
    """Runs episodes in this process with ``evaluation.rollout.run_episode`` (one env per policy)."""

    def __init__(self, cfg: SessionConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = device
        self._loaded: dict[str, tuple] = {}

    def _load(self, name: str):
        if name in self._loaded:
            return self._loaded[name]
        from robot_policy.sim import make_env

        source = self.cfg.policies[self.cfg.names.index(name)]
        expert = parse_expert(source)
        if expert is not None:
            env = make_env(self.cfg.task, randomization=self.cfg.randomization)
            pred = ExpertPredictor(env, self.cfg.task, **expert)
            entry = (env, pred, pred.obs_keys, 1, 1, True)
        else:
            from robot_policy.evaluation.rollout import policy_cameras
            from robot_policy.policies import load

            if not Path(source).is_dir():
                raise SessionError(f"policy {source!r}: not a checkpoint folder nor 'expert[:...]'")
            policy = load(source, device=self.device)
            policy.eval()
            pc = policy.config
            env = make_env(
                self.cfg.task, cameras=policy_cameras(policy) or None, randomization=self.cfg.randomization
            )
            entry = (env, policy, [*pc.obs_keys, *pc.image_keys], pc.n_obs_steps, pc.n_action_steps, False)
        self._loaded[name] = entry
        return entry

    def run(self, policy: str, seed: int) -> dict:
        import contextlib

        from robot_policy.evaluation.rollout import run_episode

        env, pred, keys, n_obs, n_act, is_expert = self._load(policy)
        if is_expert:
            pred.reset(seed)
        else:
            pred.reset()
        ctx = contextlib.nullcontext()
        if not is_expert:
            import torch

            ctx = torch.no_grad()
        with ctx:
            return run_episode(pred.predict, env, seed, keys, n_obs, n_act)

    def close(self) -> None:
        for env, *_ in self._loaded.values():
            env.close()
        self._loaded.clear()
