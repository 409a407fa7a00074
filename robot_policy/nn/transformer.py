"""Transformer denoiser: an alternative to the 1-D UNet with the same call signature.

Action tokens (one per horizon step) attend to each other (self-attention) and to a short
memory of condition tokens (time embedding + encoded observation), like the time-series
diffusion transformer of Diffusion Policy, without causal masking for simplicity.
"""

from __future__ import annotations

import torch
from torch import nn

from robot_policy.nn.unet1d import time_embedding


class TransformerDenoiser(nn.Module):
    """sample (B, T, A), timestep (B,), global_cond (B, C) -> (B, T, A)."""

    def __init__(
        self,
        action_dim: int,
        global_cond_dim: int,
        horizon: int,
        d_model: int = 256,
        n_heads: int = 4,
        n_layers: int = 4,
        dropout: float = 0.0,
        step_embed_dim: int = 128,
    ):
        super().__init__()
        self.input = nn.Linear(action_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, horizon, d_model))
        self.step_encoder = time_embedding(step_embed_dim)
        self.time_proj = nn.Linear(step_embed_dim, d_model)
        self.cond_proj = nn.Linear(global_cond_dim, d_model)
        layer = nn.TransformerDecoderLayer(
            d_model, n_heads, 4 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, action_dim)
        self.horizon_divisor = 1
        nn.init.normal_(self.pos, std=0.02)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor
    ) -> torch.Tensor:
        if timestep.dim() == 0:
            timestep = timestep.expand(sample.shape[0])
        x = self.input(sample) + self.pos[:, : sample.shape[1]]
        memory = torch.stack(
            [self.time_proj(self.step_encoder(timestep).to(global_cond.dtype)), self.cond_proj(global_cond)],
            dim=1,
        )
        x = self.decoder(x, memory)
        return self.out(self.norm(x))
