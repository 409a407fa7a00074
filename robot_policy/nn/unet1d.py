"""1-D temporal conditional UNet with FiLM conditioning (Diffusion Policy, Chi et al. 2023).

The network maps a noisy action sequence ``(B, T, A)``, a denoising time and a global
conditioning vector (the encoded observation history) to a sequence of the same shape.
Every residual block is modulated by FiLM (per-channel scale and bias) computed from the
concatenated time embedding and conditioning. Time is a float tensor: integer DDPM
timesteps, flow times in [0, 1] (scaled by the caller) or consistency times all work.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a scalar per batch element."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(
            torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1))
        )
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


def time_embedding(dim: int) -> nn.Module:
    """Sinusoidal embedding followed by an MLP (the diffusion-step encoder of Diffusion Policy)."""
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout), nn.Mish()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks; FiLM (scale, bias) from ``cond`` applied after the first."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int = 5, groups: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList(
            [Conv1dBlock(cin, cout, kernel, groups), Conv1dBlock(cout, cout, kernel, groups)]
        )
        self.cout = cout
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cout * 2))
        self.residual = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        scale, bias = self.cond_encoder(cond).unsqueeze(-1).chunk(2, dim=1)
        out = scale * out + bias
        out = self.blocks[1](out)
        return out + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Diffusion Policy's ConditionalUnet1D.

    ``down_dims`` sets the widths per level (e.g. 64/128/256 ≈ 4M parameters with kernel 5,
    256/512/1024 ≈ 65M). Sequence length must be divisible by ``2 ** (len(down_dims) - 1)``.
    """

    def __init__(
        self,
        action_dim: int,
        global_cond_dim: int,
        down_dims: tuple[int, ...] = (64, 128, 256),
        kernel_size: int = 5,
        n_groups: int = 8,
        step_embed_dim: int = 128,
    ):
        super().__init__()
        self.step_encoder = time_embedding(step_embed_dim)
        cond_dim = step_embed_dim + global_cond_dim
        dims = [action_dim, *down_dims]
        pairs = list(zip(dims[:-1], dims[1:]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList(
            [ConditionalResidualBlock1D(mid, mid, cond_dim, kernel_size, n_groups) for _ in range(2)]
        )
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1D(cin, cout, cond_dim, kernel_size, n_groups),
                        ConditionalResidualBlock1D(cout, cout, cond_dim, kernel_size, n_groups),
                        nn.Conv1d(cout, cout, 3, 2, 1) if not last else nn.Identity(),
                    ]
                )
            )
        self.up = nn.ModuleList()
        for cin, cout in reversed(pairs[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        ConditionalResidualBlock1D(cout * 2, cin, cond_dim, kernel_size, n_groups),
                        ConditionalResidualBlock1D(cin, cin, cond_dim, kernel_size, n_groups),
                        nn.ConvTranspose1d(cin, cin, 4, 2, 1),
                    ]
                )
            )
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], action_dim, 1),
        )
        self.horizon_divisor = 2 ** (len(down_dims) - 1)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor
    ) -> torch.Tensor:
        """sample (B, T, A), timestep (B,) or scalar, global_cond (B, C) -> (B, T, A)."""
        x = sample.transpose(1, 2)
        if timestep.dim() == 0:
            timestep = timestep.expand(sample.shape[0])
        cond = torch.cat([self.step_encoder(timestep).to(global_cond.dtype), global_cond], dim=-1)
        skips = []
        for res1, res2, downsample in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.mid:
            x = block(x, cond)
        for res1, res2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = res2(res1(x, cond), cond)
            x = upsample(x)
        return self.final(x).transpose(1, 2)
