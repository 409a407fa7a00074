"""The critic ensemble of RLPD: ``n`` LayerNorm MLPs whose layers run as batched matmuls, so an
ensemble of 2 or 10 costs about one network's worth of Python and kernel-launch overhead."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleCritic(nn.Module):
    """``n`` LayerNorm MLP critics evaluated together (batched matmuls: one op per layer, not n)."""

    def __init__(self, n: int, dims: list[int]):
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norms = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            w = torch.empty(n, a, b)
            for i in range(n):  # nn.Linear's default initialisation, per member
                lin = nn.Linear(a, b)
                w[i] = lin.weight.detach().T
            self.weights.append(nn.Parameter(w))
            self.biases.append(
                nn.Parameter(torch.zeros(n, 1, b).uniform_(-1 / math.sqrt(a), 1 / math.sqrt(a)))
            )
            self.norms.append(nn.Parameter(torch.stack([torch.ones(n, 1, b), torch.zeros(n, 1, b)])))
        last = dims[-1]
        self.head_w = nn.Parameter(
            torch.empty(n, last, 1).uniform_(-1 / math.sqrt(last), 1 / math.sqrt(last))
        )
        self.head_b = nn.Parameter(torch.zeros(n, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) or (n, N, in) -> (n, N) Q-values."""
        h = x.expand(self.head_w.shape[0], *x.shape) if x.dim() == 2 else x
        for w, b, g in zip(self.weights, self.biases, self.norms):
            h = torch.baddbmm(b, h, w)
            h = F.relu(F.layer_norm(h, h.shape[-1:]) * g[0] + g[1])
        return torch.baddbmm(self.head_b, h, self.head_w).squeeze(-1)
