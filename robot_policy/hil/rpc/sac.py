"""The RLPD/SAC agent of :mod:`robot_policy.hil.rl` behind the RPC: learner and actor adapters.

:class:`SACLearner` is the :class:`~robot_policy.hil.rpc.learner.Learner` of the learner
process: HIL-SERL's two buffers (every transition online; intervention steps offline too, next
to the demonstrations), RLPD updates (half online, half offline), actor weights as numpy arrays
and checkpoints in safetensors + JSON. :class:`SACActorPolicy` is the actor process's policy:
the same agent class, acting stochastically, loading the weights the learner publishes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robot_policy.hil.rl.agent import SACAgent, rlpd_sizes
from robot_policy.hil.rl.buffer import ReplayBuffer, add_transitions

TransitionSpec = dict[str, tuple[tuple[int, ...], str]]


class SACLearner:
    """RLPD learner state: agent, online and offline buffers, sampling RNG."""

    def __init__(
        self,
        agent: SACAgent,
        transition_spec: TransitionSpec,
        capacity: int = 200_000,
        offline: ReplayBuffer | None = None,
        min_online: int = 256,
        seed: int = 0,
    ):
        self.agent = agent
        self.transition_spec = transition_spec
        self.capacity = capacity
        self.online = ReplayBuffer(capacity)
        self.offline = offline if offline is not None else ReplayBuffer(capacity)
        self.min_online = min_online
        self.rng = np.random.default_rng(seed)

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        add_transitions(self.online, self.offline, transitions)

    def ready(self) -> bool:
        # RLPD needs both halves: some online experience and a non-empty offline buffer.
        return len(self.online) >= self.min_online and len(self.offline) > 0

    def update(self) -> dict[str, float]:
        n_on, n_off = rlpd_sizes(self.agent.cfg)
        return self.agent.update(self.online.sample(n_on, self.rng), self.offline.sample(n_off, self.rng))

    def actor_weights(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.agent.actor_state().items()}

    def buffer_sizes(self) -> dict[str, int]:
        return {"online": len(self.online), "offline": len(self.offline)}

    def save(self, folder: Path) -> None:
        self.agent.save(folder)
        self.online.save(folder / "online")
        self.offline.save(folder / "offline")
        (folder / "sampler.json").write_text(json.dumps({"rng": self.rng.bit_generator.state}))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        meta = json.loads((folder / "agent.json").read_text())
        if meta["obs_spec"] != {k: list(s) for k, s in self.agent.obs_spec.items()}:
            raise ValueError(
                f"checkpoint {folder} was written for observations {meta['obs_spec']}, this learner has "
                f"{dict(self.agent.obs_spec)}: resume with the same --task and observation options"
            )
        self.agent.load_state_dict(load_file(str(folder / "agent.safetensors")), meta)
        self.online = ReplayBuffer.load(folder / "online", self.capacity)
        self.offline = ReplayBuffer.load(folder / "offline", self.capacity)
        self.rng.bit_generator.state = json.loads((folder / "sampler.json").read_text())["rng"]


class SACActorPolicy:
    """The actor process's policy: :meth:`SACAgent.act` with the learner's newest weights."""

    def __init__(self, agent: SACAgent, deterministic: bool = False):
        self.agent = agent
        self.deterministic = deterministic

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.agent.act(obs, deterministic=self.deterministic)

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        import torch

        self.agent.load_actor_state({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
