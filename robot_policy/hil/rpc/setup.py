"""Building the two processes from CLI arguments: the simulated actor's transition source, the
learner's agent and buffers (seeded with scripted demonstrations).

The env, the demonstrations and the per-step semantics are those of the in-process experiment
(:mod:`robot_policy.hil.rl.experiment`, ``robot-policy hil run``), so a split run and an
in-process run learn from the same transitions:

* ``--reward env``: 1 when the simulator reports success (HIL-SERL's reward with a perfect
  classifier); ``classifier``: the trained success classifier (``--classifier DIR``; a false
  positive ends the episode like a real success); ``rlif``: -1 on the transition into a state
  where the human took over (the policy's step that made it intervene), 0 otherwise.
* the simulated human (:mod:`robot_policy.hil.rl.human`) drives when its rule says so; its
  executed action replaces the policy's (the arbiter's rule).

Both sides derive the transition layout from the same env (:func:`transition_spec`); an actor
started with other task options than its learner is refused at start with both named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

TransitionSpec = dict[str, tuple[tuple[int, ...], str]]
REWARDS = ("env", "classifier", "rlif")


def transition_spec(obs_spec: dict[str, tuple[int, ...]], action_dim: int) -> TransitionSpec:
    """The layout of one transition for an env with ``obs_spec`` and ``action_dim``."""
    spec: TransitionSpec = {}
    for prefix in ("obs/", "next_obs/"):
        for k, shape in obs_spec.items():
            spec[prefix + k] = (tuple(shape), "uint8" if len(shape) == 3 else "float32")
    spec["action"] = ((action_dim,), "float32")
    spec["reward"] = ((), "float32")
    spec["done"] = ((), "float32")
    spec["intervened"] = ((), "bool")
    spec["intervention_start"] = ((), "bool")
    return spec


def _transition(obs, action, reward, next_obs, done, intervened, start) -> dict[str, np.ndarray]:
    t = {f"obs/{k}": np.asarray(v) for k, v in obs.items()}
    t.update({f"next_obs/{k}": np.asarray(v) for k, v in next_obs.items()})
    t.update(
        action=np.asarray(action, np.float32),
        reward=np.float32(reward),
        done=np.float32(done),
        intervened=np.bool_(intervened),
        intervention_start=np.bool_(start),
    )
    return t


def reward_function(mode: str, classifier=None) -> Callable[[dict, bool], tuple[float, bool]]:
    """``(next_obs, success) -> (reward, done)`` of a reward mode (see the module docstring)."""
    if mode not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {mode!r}")
    if mode == "classifier" and classifier is None:
        raise ValueError(
            "--reward classifier needs --classifier DIR (train one with `robot-policy hil reward train`)"
        )

    def reward_fn(next_obs, success):
        if mode == "rlif":
            return 0.0, bool(success)
        if mode == "classifier":
            # Only the classifier ends the episode, as on a robot (hil/rl/experiment.py).
            r = classifier.reward(next_obs)
            return r, r > 0
        return float(success), bool(success)

    return reward_fn


class SimSource:
    """Steps the env with a policy and the simulated human; yields finished transitions.

    A transition is held back one step, as in the in-process loop: under RLIF its reward
    becomes -1 when the human takes over in the state it led to.
    """

    def __init__(self, env, human, reward: str, reward_fn, seed: int = 0):
        self.env, self.human, self.rlif, self.reward_fn = env, human, reward == "rlif", reward_fn
        self.seed = seed
        self.obs: dict[str, np.ndarray] | None = None

    def _start(self) -> None:
        self.obs = self.env.reset(self.seed)
        self.human.reset()
        self.pending: dict[str, np.ndarray] | None = None
        self.ep = {"seed": self.seed, "return": 0.0, "steps": 0, "intervention_steps": 0}
        self.reached = False  # the task was done at some step (a classifier may confirm it later)
        self.seed += 1

    def _emit(self, out: list) -> None:
        self.ep["return"] += float(self.pending["reward"])
        out.append(self.pending)
        self.pending = None

    def step(self, policy) -> tuple[list[dict[str, np.ndarray]], dict[str, Any] | None]:
        if self.obs is None:
            self._start()
        out: list[dict[str, np.ndarray]] = []
        intervening, started = self.human.update(self.env)
        if self.pending is not None:
            if started and self.rlif:
                self.pending["reward"] = np.float32(-1.0)
            self._emit(out)
        obs = self.obs
        action = self.env.expert_action(obs) if intervening else policy.act(obs)
        next_obs, success, info = self.env.step(action)
        # An env that observes what the arm executed (the graph's /joint_commands and its
        # arbiter tag, robot_policy.hil_graph) says so: the transition records that.
        action = info.get("executed_action", action)
        intervening = bool(info.get("intervened", intervening))
        r, done = self.reward_fn(next_obs, success)
        self.reached |= bool(success)
        self.pending = _transition(obs, action, r, next_obs, done, intervening, started)
        self.ep["steps"] += 1
        self.ep["intervention_steps"] += int(intervening)
        self.obs = next_obs
        if done or info.get("timeout"):
            self._emit(out)
            self.obs = None
            return out, {**self.ep, "success": self.reached, "interventions": self.human.interventions}
        return out, None


def _experiment_config(args):
    from robot_policy.hil.rl.experiment import ExperimentConfig

    return ExperimentConfig(
        env=args.task,
        obs_mode=args.obs_mode,
        max_steps=args.max_steps,
        demos=getattr(args, "demos", 0),
        demo_seed=getattr(args, "demo_seed", 0),
        seed=args.seed,
    )


def _reward_fn(args):
    classifier = None
    if args.reward == "classifier":
        if not args.classifier:
            raise ValueError(
                "--reward classifier needs --classifier DIR (see `robot-policy hil reward train`)"
            )
        from robot_policy.hil.rl.reward import SuccessClassifier

        classifier = SuccessClassifier.load(args.classifier)
    return reward_function(args.reward, classifier)


def rl_config(args):
    from robot_policy.hil.rl.agent import RLConfig

    return RLConfig(
        batch_size=args.batch_size,
        utd=args.utd,
        discount=args.discount,
        hidden=[int(w) for w in str(args.hidden).split(",")],
        obs_mode=args.obs_mode,
        gripper_critic=not args.no_gripper_critic,
        device=args.device,
    )


def build_learner(args, log: Callable[[str], None] = print):
    """``(SACLearner, info)`` for ``robot-policy hil learner`` (demos skipped when resuming).

    ``info`` goes into the learner's status: task, observation mode, reward and the agent's
    description (config, observation spec, action size), from which actors build their copy.
    """
    import torch

    from robot_policy.hil.rl.agent import SACAgent
    from robot_policy.hil.rl.buffer import ReplayBuffer
    from robot_policy.hil.rpc.sac import SACLearner

    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    from robot_policy.hil.rl.experiment import collect_demos, make_env

    cfg = _experiment_config(args)
    env = make_env(cfg)
    agent = SACAgent(rl_config(args), env.obs_spec, env.action_dim)
    spec = transition_spec(env.obs_spec, env.action_dim)
    offline = ReplayBuffer(args.capacity)
    if args.demos and not args.resume:
        demos, ok = collect_demos(env, cfg, _reward_fn(args))
        log(
            f"{args.demos} scripted demonstrations ({ok} successful, {len(demos['reward'])} transitions) offline"
        )
        agent.fit_normalizer(demos)
        offline.add(demos)
    env.close()
    learner = SACLearner(agent, spec, args.capacity, offline, args.min_online, args.seed)
    meta = agent.meta()
    info = {
        "task": args.task,
        "obs_mode": args.obs_mode,
        "reward": args.reward,
        "max_steps": args.max_steps,
        "agent": {"config": meta["config"], "obs_spec": meta["obs_spec"], "action_dim": meta["action_dim"]},
    }
    return learner, info


def check_task(args, info: dict) -> None:
    """Raise ``ValueError`` when the actor's task options differ from the learner's."""
    ours = {"task": args.task, "obs_mode": args.obs_mode, "reward": args.reward, "max_steps": args.max_steps}
    theirs = {k: info.get(k) for k in ours}
    if ours != theirs:
        raise ValueError(
            f"this actor runs {ours} but the learner was started with {theirs}: "
            "start both with the same --task, --obs-mode, --reward and --max-steps"
        )


def build_actor(args, info: dict, env=None):
    """``(SimSource, SACActorPolicy, transition spec)`` for ``robot-policy hil actor``.

    ``env``: an env of the same contract built by the caller (the CLI's ``--env graph``: the
    ROS graph, :mod:`robot_policy.hil_graph`, a layer this one cannot import); default the
    in-process simulated task.

    ``info`` is the learner's (its status ``spec``): the actor's agent is built from the
    learner's agent description, so the weights it receives always fit.
    """
    import torch

    from robot_policy.hil.rl.agent import RLConfig, SACAgent
    from robot_policy.hil.rl.human import HumanConfig, SimulatedHuman
    from robot_policy.hil.rpc.sac import SACActorPolicy

    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    from robot_policy.hil.rl.experiment import make_env

    env = env if env is not None else make_env(_experiment_config(args))
    desc = info["agent"]
    cfg = RLConfig(**{**desc["config"], "device": "cpu"})
    agent = SACAgent(cfg, {k: tuple(v) for k, v in desc["obs_spec"].items()}, desc["action_dim"])
    agent.rng = np.random.default_rng(args.seed)
    human = SimulatedHuman(HumanConfig(enabled=args.human != "none"))
    source = SimSource(env, human, args.reward, _reward_fn(args), seed=args.episode_seed)
    return source, SACActorPolicy(agent), transition_spec(env.obs_spec, env.action_dim)
