"""The gripper critic of HIL-SERL: a discrete Q-function over close / stay / open.

A continuous SAC actor is poor at a binary gripper (it averages "open" and "closed" into a
half-open grip and explores by jittering it); HIL-SERL gives the gripper its own discrete
critic, trained by double DQN on the same transitions, with a small penalty on every
command that changes the gripper's state, so it does not learn to chatter.

Gripper command encoding (the last action dimension of every transition): ``-1`` open,
``0`` stay, ``+1`` close (:func:`grip_index` maps a value to the class, thresholds at +-0.5).
The gripper *state* the penalty compares with is the commanded state before the step,
observation key :data:`GRIPPER_STATE_KEY` (``-1`` open, ``+1`` closed).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

GRIPPER_STATE_KEY = "gripper_cmd"
"""Observation key of the commanded gripper state before the step (-1 open, +1 closed)."""
GRIP_VALUES = (-1.0, 0.0, 1.0)
"""Command value of each discrete class: open, stay, close."""


def grip_index(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Gripper command value(s) -> class index (0 open, 1 stay, 2 close); thresholds at +-0.5."""
    v = torch.as_tensor(np.asarray(values, dtype=np.float32) if isinstance(values, np.ndarray) else values)
    return (v > -0.5).long() + (v > 0.5).long()


def toggles(values: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """1.0 where the command changes the gripper state: close while open, or open while closed."""
    idx = grip_index(values)
    return (((idx == 2) & (state < 0)) | ((idx == 0) & (state > 0))).float()


def mlp_ln(dims: list[int], out: int) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU stack (RLPD's critic block), then a linear head."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*layers)


class GripperCritic(nn.Module):
    """Q(s, ·) over the three gripper classes, plus its target copy."""

    def __init__(self, feat_dim: int, hidden: list[int], toggle_penalty: float, tau: float):
        super().__init__()
        self.q = mlp_ln([feat_dim, *hidden], len(GRIP_VALUES))
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.toggle_penalty = float(toggle_penalty)
        self.tau = float(tau)

    def values(self, feat: torch.Tensor) -> torch.Tensor:
        return self.q(feat)

    def act(self, feat: torch.Tensor) -> torch.Tensor:
        """Greedy class (N,) -> command values (N,)."""
        return torch.tensor(GRIP_VALUES, device=feat.device)[self.q(feat).argmax(-1)]

    def penalized_reward(self, reward: torch.Tensor, grip: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The task reward minus ``toggle_penalty`` for every state-changing command."""
        return reward - self.toggle_penalty * toggles(grip, state)

    def loss(
        self,
        feat: torch.Tensor,
        next_feat: torch.Tensor,
        grip: torch.Tensor,
        state: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        discount: float,
    ) -> torch.Tensor:
        """Double-DQN TD loss on penalized rewards (features already detached where wanted)."""
        idx = grip_index(grip)
        q = self.q(feat).gather(1, idx[:, None]).squeeze(1)
        with torch.no_grad():
            best = self.q(next_feat).argmax(-1, keepdim=True)
            nq = self.target(next_feat).gather(1, best).squeeze(1)
            r = self.penalized_reward(reward, grip, state)
            y = r + discount * (1.0 - done) * nq
        return nn.functional.mse_loss(q, y)

    @torch.no_grad()
    def soft_update(self) -> None:
        torch._foreach_lerp_(list(self.target.parameters()), list(self.q.parameters()), self.tau)
