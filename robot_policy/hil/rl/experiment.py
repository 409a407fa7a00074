"""One whole simulated HIL experiment, in one process: HIL-SERL, RLIF and the BC baseline.

Per RL mode (same demos, same simulated human, same seeds):

1. ``demos`` scripted demonstrations (the expert drives) fill the **offline** buffer.
2. The actor loop: the SAC policy acts (stochastic); the simulated human
   (:mod:`.human`) takes over when the policy strays; every transition goes to the **online**
   buffer, intervention transitions to the offline buffer too. After ``learning_starts``
   online transitions, ``updates_per_step`` RLPD updates run per env step (each update = ``utd``
   critic updates on half-online/half-offline minibatches + one actor update).
3. Every ``eval_every`` env steps the deterministic policy runs **alone** (no human) on
   ``curve_episodes`` held-out seeds; at the end on ``final_episodes`` (Wilson interval).

Rewards:

* ``hil_serl``: sparse success from the reward classifier (:mod:`.reward`; ``reward: env`` uses
  the simulator's flag instead), episode ends on success.
* ``rlif``: no success reward at all: -1 on the transition into a state where the human took
  over (the policy's step that made it intervene), 0 otherwise; episodes still end on success
  (a terminal state is worth 0, the best value under these rewards).
* ``bc``: :mod:`.baseline` trains the project's flow policy on the demos plus the intervention
  segments of the HIL-SERL run and evaluates it on the same held-out seeds.

Outputs in ``out``: ``curves.json`` (every point), ``curves.png`` (success rate, intervention
rate and return over env steps), ``summary.md`` (the final table), ``<mode>/agent`` (safetensors + JSON).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robot_policy.evaluation.stats import wilson_interval
from robot_policy.hil.rl.agent import RLConfig, SACAgent, rlpd_sizes
from robot_policy.hil.rl.buffer import ReplayBuffer, add_transitions
from robot_policy.hil.rl.envs import make_rl_env
from robot_policy.hil.rl.human import HumanConfig, SimulatedHuman
from robot_policy.hil.rl.relabel import VerifiedClassifier
from robot_policy.hil.rl.report import markdown_table, plot_curves

MODES = ("hil_serl", "rlif", "bc")


@dataclass
class ExperimentConfig:
    """``robot-policy hil run`` settings (flags of the same names)."""

    out: str = "outputs/hil"
    """Output folder (curves, summary, agents)."""
    env: str = "tabletop"
    """RL env: ``tabletop`` (this project's scene) or ``gym_hil`` (gym-hil PandaPickCube)."""
    obs_mode: str = "state"
    """``state`` or ``image`` observations."""
    image_size: int = 48
    """Camera frame size in image mode (square)."""
    modes: list[str] = field(default_factory=lambda: ["hil_serl", "rlif", "bc"])
    """Which of hil_serl, rlif, bc to run (bc reuses hil_serl's interventions if it ran)."""
    demos: int = 20
    """Scripted demonstrations in the offline buffer (and the BC data)."""
    env_steps: int = 15000
    """Environment steps per RL run."""
    learning_starts: int = 300
    """Online transitions before the first update."""
    updates_per_step: float = 1.0
    """RLPD updates per env step (fractional: one every 1/x steps)."""
    max_steps: int = 120
    """Episode step limit (tabletop expert needs ~75 at 20 Hz)."""
    reward: str = "classifier"
    """hil_serl reward: ``classifier`` (trained first on separate labelled episodes) or ``env``."""
    classifier: str = ""
    """Folder of a trained classifier (``hil reward train``); empty: train one on the run's env."""
    classifier_episodes: int = 30
    """Labelled episodes for the classifier trained in the run."""
    verify_success: bool = True
    """The (simulated) human checks each success the classifier declares: a false one gives no
    reward, does not end the episode and becomes a negative example (hil/rl/relabel.py)."""
    relabel_every: int = 10
    """Rejected successes between two retrainings of the classifier (with verify_success)."""
    eval_every: int = 1500
    """Env steps between curve evaluations (policy alone)."""
    curve_episodes: int = 10
    """Held-out episodes per curve point."""
    final_episodes: int = 50
    """Held-out episodes of the final evaluation (Wilson interval)."""
    buffer_capacity: int = 200_000
    """Capacity of each replay buffer (transitions)."""
    seed: int = 0
    """Torch / sampling seed."""
    demo_seed: int = 0
    """Seed of the first demonstration."""
    train_seed: int = 10_000
    """Seed of the first training episode."""
    eval_seed: int = 100_000
    """Seed of the first held-out evaluation episode (the same for every mode)."""
    threads: int = 1
    """Torch CPU threads."""
    bc_steps: int = 3000
    """Flow-policy training steps of the BC baseline."""
    progress: bool = True
    """Progress bars."""
    rl: RLConfig = field(default_factory=lambda: RLConfig(hidden=[256, 256], batch_size=256))
    """Agent settings."""
    human: HumanConfig = field(default_factory=HumanConfig)
    """Simulated human settings."""


def _transition(obs, action, reward, next_obs, done, intervened, start) -> dict[str, np.ndarray]:
    t = {f"obs/{k}": np.asarray(v)[None] for k, v in obs.items()}
    t.update({f"next_obs/{k}": np.asarray(v)[None] for k, v in next_obs.items()})
    t.update(
        action=np.asarray(action, np.float32)[None],
        reward=np.array([reward], np.float32),
        done=np.array([done], np.float32),
        intervened=np.array([intervened]),
        intervention_start=np.array([start]),
    )
    return t


def _stack(ts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([t[k] for t in ts]) for k in ts[0]}


def make_env(cfg: ExperimentConfig):
    kw = {"obs_mode": cfg.obs_mode, "max_steps": cfg.max_steps}
    if cfg.env == "tabletop":
        kw["image_size"] = cfg.image_size
        if cfg.obs_mode == "image":
            kw["cameras"] = ("wrist",)
    return make_rl_env(cfg.env, **kw)


def collect_demos(env, cfg: ExperimentConfig, reward_fn, recorder=None) -> tuple[dict[str, np.ndarray], int]:
    """``cfg.demos`` expert episodes as transitions (failed ones too: a human's demos can fail)."""
    ts, ok = [], 0
    for i in range(cfg.demos):
        obs = env.reset(cfg.demo_seed + i)
        env.expert_takeover()
        if recorder is not None:
            recorder.begin(env)
        reached = False
        for _ in range(env.max_steps):
            a = env.expert_action(obs)
            nxt, success, info = env.step(a)
            reached |= bool(success)
            if recorder is not None:
                recorder.add(env, intervened=True)
            r, done = reward_fn(nxt, success)
            ts.append(_transition(obs, a, r, nxt, done, False, False))
            obs = nxt
            if done:  # the reward's verdict ends it (a classifier may see the success a step later)
                break
        ok += reached
        if recorder is not None:
            recorder.end(demo=True)
    return _stack(ts), ok


def evaluate_policy(agent: SACAgent, env, seeds: list[int]) -> tuple[int, float]:
    """The deterministic policy alone; returns (successes, mean episode length)."""
    ok, lens = 0, []
    for s in seeds:
        obs = env.reset(s)
        for t in range(env.max_steps):  # noqa: B007 - t is the episode length after the loop
            obs, success, _ = env.step(agent.act(obs, deterministic=True))
            if success:
                break
        ok += success
        lens.append(t + 1)
    return ok, float(np.mean(lens))


def run_rl(cfg: ExperimentConfig, mode: str, classifier=None, recorder=None, log=print) -> dict:
    """One RL run (``hil_serl`` or ``rlif``); returns its curves and final numbers."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    env, eval_env = make_env(cfg), make_env(cfg)
    rng = np.random.default_rng(cfg.seed)

    verified = isinstance(classifier, VerifiedClassifier)

    def reward_fn(next_obs, success):
        if mode == "rlif":
            return 0.0, bool(success)
        if verified:
            return classifier(next_obs, success)
        if classifier is not None:
            # Only the classifier ends the episode, as on a robot: a false positive ends it like a
            # real success, and a success it misses is not a terminal worth nothing (it goes on).
            r = classifier.reward(next_obs)
            return r, r > 0
        return float(success), bool(success)

    agent = SACAgent(dataclasses.replace(cfg.rl, obs_mode=cfg.obs_mode), env.obs_spec, env.action_dim)
    agent.rng = np.random.default_rng(cfg.seed + 1)
    online, offline = ReplayBuffer(cfg.buffer_capacity), ReplayBuffer(cfg.buffer_capacity)
    demos, demo_ok = collect_demos(env, cfg, reward_fn, recorder)
    offline.add(demos)
    agent.fit_normalizer(demos)
    log(
        f"[{mode}] {cfg.demos} demos ({demo_ok} successful, {len(offline)} transitions) in the offline buffer"
    )
    human = SimulatedHuman(cfg.human)
    n_on, n_off = rlpd_sizes(cfg.rl)
    curves = {"episodes": [], "eval": [], "learner": []}
    m: dict[str, float] = {}
    update_s, n_updates, credit = 0.0, 0, 0.0
    step, ep = 0, 0
    bar = tqdm(total=cfg.env_steps, desc=mode, disable=not cfg.progress, mininterval=2.0)
    next_eval = 0
    while step < cfg.env_steps:
        obs = env.reset(cfg.train_seed + ep)
        human.reset()
        if recorder is not None:
            recorder.begin(env)
        pending, ret, n_int, ep_len, success, reached = None, 0.0, 0, 0, False, False
        rejected_before = len(classifier.rejected) if verified else 0
        for _ in range(env.max_steps):
            intervening, started = human.update(env)
            if pending is not None:
                if started and mode == "rlif":
                    pending["reward"][:] = -1.0
                ret += float(pending["reward"][0])
                add_transitions(online, offline, pending)
            a = env.expert_action(obs) if intervening else agent.act(obs, deterministic=False)
            nxt, success, _ = env.step(a)
            reached |= bool(success)
            if recorder is not None:
                recorder.add(env, intervened=intervening)
            r, done = reward_fn(nxt, success)
            pending = _transition(obs, a, r, nxt, done, intervening, started)
            obs, step, ep_len, n_int = nxt, step + 1, ep_len + 1, n_int + intervening
            if len(online) >= cfg.learning_starts:
                credit += cfg.updates_per_step
                t0 = time.perf_counter()
                while credit >= 1.0:
                    m = agent.update(online.sample(n_on, rng), offline.sample(n_off, rng))
                    credit -= 1.0
                    n_updates += 1
                update_s += time.perf_counter() - t0
            if done or step >= cfg.env_steps:
                break
        ret += float(pending["reward"][0])
        add_transitions(online, offline, pending)
        if recorder is not None:
            recorder.end(demo=False)
        curves["episodes"].append(
            {
                "env_steps": step,
                "success": reached,
                "intervention_rate": n_int / ep_len,
                "interventions": human.interventions,
                "return": ret,
                "length": ep_len,
                # The reward said success but the simulator did not: a classifier false positive.
                "reward_false_positive": bool(done and not success),
                # Successes the classifier declared and the human rejected (verify_success).
                "rejected_successes": (len(classifier.rejected) - rejected_before) if verified else 0,
            }
        )
        ep += 1
        bar.update(ep_len)
        if step >= next_eval or step >= cfg.env_steps:
            k, mean_len = evaluate_policy(
                agent, eval_env, [cfg.eval_seed + i for i in range(cfg.curve_episodes)]
            )
            curves["eval"].append(
                {"env_steps": step, "success_rate": k / cfg.curve_episodes, "mean_length": mean_len}
            )
            curves["learner"].append({"env_steps": step, "updates": n_updates, **m})
            next_eval = step + cfg.eval_every
            recent = curves["episodes"][-20:]
            bar.set_postfix(
                eval=f"{k}/{cfg.curve_episodes}",
                interv=f"{np.mean([e['intervention_rate'] for e in recent]):.2f}",
                ups=f"{n_updates / max(update_s, 1e-9):.0f}",
            )
    bar.close()
    log(f"[{mode}] final evaluation on {cfg.final_episodes} held-out episodes")
    k, mean_len = evaluate_policy(agent, eval_env, [cfg.eval_seed + i for i in range(cfg.final_episodes)])
    lo, hi = wilson_interval(k, cfg.final_episodes)
    agent.save(Path(cfg.out) / mode / "agent")
    env.close()
    eval_env.close()
    last = curves["episodes"][-max(1, len(curves["episodes"]) // 10) :]
    return {
        "mode": mode,
        "curves": curves,
        "final": {
            "successes": k,
            "episodes": cfg.final_episodes,
            "success_rate": k / cfg.final_episodes,
            "ci95": [lo, hi],
            "mean_length": mean_len,
        },
        "demo_successes": demo_ok,
        "online_transitions": len(online),
        "offline_transitions": len(offline),
        "intervention_rate_last_10pct": float(np.mean([e["intervention_rate"] for e in last])),
        "intervention_rate_first_10pct": float(
            np.mean(
                [e["intervention_rate"] for e in curves["episodes"][: max(1, len(curves["episodes"]) // 10)]]
            )
        ),
        "updates": n_updates,
        "updates_per_s": n_updates / max(update_s, 1e-9),
        "reward_false_positive_episodes": sum(e["reward_false_positive"] for e in curves["episodes"]),
        **(classifier.summary() if verified else {}),
    }


def _ensure_classifier(cfg: ExperimentConfig, log):
    from robot_policy.hil.rl.reward import (
        RewardConfig,
        SuccessClassifier,
        collect_frames,
        load_frames,
        save_frames,
        train_classifier,
    )

    if cfg.classifier:
        saved = Path(cfg.classifier) / "frames.safetensors"  # written by `hil reward train`
        return SuccessClassifier.load(cfg.classifier), None, (load_frames(saved) if saved.exists() else None)
    env = make_env(cfg)
    log(f"reward classifier: collecting {cfg.classifier_episodes} labelled episodes (seeds 50000+)")
    frames = collect_frames(env, cfg.classifier_episodes, progress=cfg.progress)
    env.close()
    inputs = "image" if cfg.obs_mode == "image" else "state"
    clf, report = train_classifier(frames, RewardConfig(inputs=inputs), progress=cfg.progress)
    clf.save(Path(cfg.out) / "classifier", report)
    save_frames(Path(cfg.out) / "classifier" / "frames.safetensors", frames)  # for relabelling later
    log(
        f"reward classifier ({inputs}): threshold {report.threshold:.3f}, held-out precision {report.precision:.3f}, "
        f"recall {report.recall:.3f}, false-positive rate {report.false_positive_rate:.4f}"
    )
    return clf, report, frames


def run_experiment(cfg: ExperimentConfig, log=print) -> dict:
    """Every mode of ``cfg.modes``; writes curves.json / curves.png / summary.json as it goes."""
    import torch

    from robot_policy.hil.rl.baseline import InterventionRecorder, run_bc

    bad = [m for m in cfg.modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown modes {bad}; choose from {MODES}")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": asdict(cfg), "runs": {}}
    t0 = time.perf_counter()
    recorder = InterventionRecorder() if "bc" in cfg.modes and cfg.env == "tabletop" else None
    for mode in [m for m in ("hil_serl", "rlif") if m in cfg.modes]:
        clf = None
        if mode == "hil_serl" and cfg.reward == "classifier":
            clf, report, frames = _ensure_classifier(cfg, log)
            if report is not None:
                results["classifier"] = asdict(report)
            if cfg.verify_success:
                clf = VerifiedClassifier(clf, frames, cfg.relabel_every, log=log)
        t = time.perf_counter()
        res = run_rl(cfg, mode, clf, recorder if mode == "hil_serl" else None, log)
        res["seconds"] = time.perf_counter() - t
        results["runs"][mode] = res
        _write(out, results, log)
    if "bc" in cfg.modes:
        if cfg.env != "tabletop":
            log("bc baseline: only wired for the tabletop task (the flow policy's joint-space data); skipped")
        else:
            if recorder is None or not recorder.episodes:
                recorder = InterventionRecorder()
                env = make_env(cfg)
                collect_demos(env, cfg, lambda o, s: (float(s), bool(s)), recorder)
                env.close()
            t = time.perf_counter()
            res = run_bc(cfg, recorder, log)
            res["seconds"] = time.perf_counter() - t
            results["runs"]["bc"] = res
    results["seconds"] = time.perf_counter() - t0
    _write(out, results, log)
    (out / "summary.md").write_text(markdown_table(results) + "\n")
    for mode, r in results["runs"].items():
        f = r["final"]
        lo, hi = f["ci95"]
        log(
            f"{mode}: {f['successes']}/{f['episodes']} = {100 * f['success_rate']:.0f}% (95% Wilson {100 * lo:.0f}-{100 * hi:.0f}%)"
            + (
                f", intervention rate {r['intervention_rate_first_10pct']:.2f} -> {r['intervention_rate_last_10pct']:.2f}"
                if "intervention_rate_last_10pct" in r
                else ""
            )
        )
    return results


def _write(out: Path, results: dict, log) -> None:
    (out / "curves.json").write_text(json.dumps(results, indent=1))
    plot_curves(results, out / "curves.png")


def learner_throughput(
    rl: RLConfig, obs_spec: dict, action_dim: int, updates: int = 50, warmup: int = 5
) -> dict:
    """RLPD updates per second of ``rl`` on random transitions of ``obs_spec`` (no env)."""
    import torch

    rng = np.random.default_rng(0)

    def batch(n):
        t = {}
        for k, s in obs_spec.items():
            for p in ("obs/", "next_obs/"):
                t[p + k] = (
                    rng.integers(0, 255, (n, *s), dtype=np.uint8)
                    if len(s) == 3
                    else rng.normal(size=(n, *s)).astype(np.float32)
                )
        t.update(
            action=rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
            reward=np.zeros(n, np.float32),
            done=np.zeros(n, np.float32),
            intervened=np.zeros(n, bool),
            intervention_start=np.zeros(n, bool),
        )
        return t

    agent = SACAgent(rl, obs_spec, action_dim)
    n_on, n_off = rlpd_sizes(rl)
    on, off = batch(n_on), batch(n_off)
    for _ in range(warmup):
        agent.update(on, off)
    t0 = time.perf_counter()
    for _ in range(updates):
        agent.update(on, off)
    dt = time.perf_counter() - t0
    return {
        "updates_per_s": updates / dt,
        "critic_updates_per_s": updates * rl.utd / dt,
        "transitions_per_s": updates * (n_on + n_off) / dt,
        "torch_threads": torch.get_num_threads(),
    }
