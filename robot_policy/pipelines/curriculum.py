"""Drive the adaptive randomization schedule from evaluation rounds (``robot-policy sim adapt``).

Each round evaluates a policy checkpoint (through ``robot_policy.evaluation.evaluate``) or the
task's scripted expert under the schedule's current ranges, feeds the success rate to
``AdaptiveSchedule.update`` and moves on with fresh seeds. The final ranges can be saved as a
randomization YAML for ``sim collect`` / ``eval``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from robot_policy.config import to_dict
from robot_policy.sim.randomization import AdaptiveSchedule, RandomizationConfig


def save_randomization(cfg: RandomizationConfig, path: str | Path, comment: str = "") -> Path:
    """Write a config as a YAML file that ``load_randomization`` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    data = to_dict(cfg)
    for group in data.values():
        for name, rng in group.items():
            group[name] = [round(v, 6) if isinstance(v, float) else v for v in rng]
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def expert_evaluator(task: str, episodes: int, seed: int = 0) -> Callable[[RandomizationConfig], float]:
    """``evaluate(config) -> success rate`` of the scripted expert; each call uses new seeds."""
    from robot_policy.sim import make_env, make_expert
    from robot_policy.sim.randomization import Randomizer

    env = make_env(task)
    expert = make_expert(task, env)
    state = {"seed": seed}

    def evaluate(cfg: RandomizationConfig) -> float:
        u = env.unwrapped
        u.randomizer = Randomizer(cfg)
        wins = 0
        for _ in range(episodes):
            s = state["seed"]
            state["seed"] += 1
            obs, _ = env.reset(seed=s)
            expert.reset(s)
            for _ in range(u.max_episode_steps):
                obs, _, _, truncated, info = env.step(expert.act(obs))
                if info["success"] or truncated:
                    break
            wins += bool(info["success"])
        return wins / episodes

    return evaluate


def policy_evaluator(
    checkpoint: str, task: str, episodes: int, seed: int = 100_000
) -> Callable[[RandomizationConfig], float]:
    """``evaluate(config) -> success rate`` of a trained policy; each call uses new seeds."""
    from robot_policy.evaluation.rollout import evaluate as run_eval
    from robot_policy.policies import load

    policy = load(checkpoint, device="cpu")
    state = {"seed": seed}

    def evaluate(cfg: RandomizationConfig) -> float:
        res = run_eval(policy, task, episodes, randomization=cfg, seed=state["seed"], progress=False)
        state["seed"] += episodes
        return float(res["success_rate"])

    return evaluate


def run_schedule(
    schedule: AdaptiveSchedule, evaluate: Callable[[RandomizationConfig], float], rounds: int, log=print
) -> AdaptiveSchedule:
    for r in range(rounds):
        scale = schedule.scale
        rate = evaluate(schedule.current())
        schedule.update(rate)
        verdict = "widen" if rate >= schedule.threshold else "shrink"
        log(
            f"round {r + 1}/{rounds}: scale {scale:.3f} -> success {rate:.2f} -> {verdict} -> {schedule.scale:.3f}"
        )
    return schedule
