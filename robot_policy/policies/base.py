"""The one Policy interface shared by every family, and the family registry.

A prediction is a fixed pipeline so the inference engine can capture and warm-start it::

    nobs  = policy.normalize_obs(obs)            # raw arrays/tensors -> normalized tensors
    cond  = policy.encode(nobs)                  # (B, C) conditioning vector
    nact  = policy.sample(cond, num_steps, init=None, start_step=0, noise=None)  # (B, Tp, A) in [-1, 1]
    act   = policy.unnormalize_action(nact)      # raw units

``sample`` runs a fixed sequence of tensor ops for a given (num_steps, start_step, sampler), so a
CUDA graph can record it. Warm start (RTI-DP style): pass the previous plan, shifted, as
``init`` and ``start_step > 0``: ``init`` is noised to the level of step ``start_step`` of the
``num_steps`` schedule and only the remaining steps run. ``noise`` (B, Tp, A) replaces the
initial Gaussian draw (determinism, static buffers).

Families differ only in ``loss(cond, naction)`` and ``sample``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from robot_policy.nn.encoders import ObsEncoder
from robot_policy.nn.transformer import TransformerDenoiser
from robot_policy.nn.unet1d import ConditionalUnet1D
from robot_policy.policies.config import PolicyConfig
from robot_policy.policies.normalize import Normalizer, image_to_float
from robot_policy.registry import Registry
from robot_policy.types import ActionChunk

POLICIES: Registry[type[Policy]] = Registry("policy family")


class Predictor(Protocol):
    """What serves actions: a ``Policy``, or an ``inference.InferenceEngine`` wrapping one.

    The episode loop (``evaluation``) and the policy node's runner (``runtime``) call only this,
    so either can be served without asking which it is.
    """

    @property
    def config(self) -> PolicyConfig:
        """The policy's config (keys, shapes, horizon, fps)."""
        ...

    def reset(self) -> None:
        """Forget per-episode state."""
        ...

    def predict(
        self,
        obs: Mapping,
        prior: Any = None,
        start_time: float = 0.0,
        num_steps: int | None = None,
    ) -> ActionChunk:
        """Observation history ``{key: (To, ...)}`` in raw units -> ActionChunk from the current step.

        ``prior`` is the plan already scheduled from ``start_time`` on (a scheduler ``Prior`` or
        raw actions (T, A)); the engine warm-starts and inpaints from it, a plain policy ignores it.
        ``num_steps``: sampler steps (None: the predictor's default).
        """
        ...


def build_denoiser(cfg: PolicyConfig, cond_dim: int) -> nn.Module:
    """The network shared by all families: sample (B,T,A), time (B,), cond (B,C) -> (B,T,A)."""
    if cfg.backbone == "unet":
        return ConditionalUnet1D(
            cfg.action_dim, cond_dim, tuple(cfg.down_dims), cfg.kernel_size, cfg.n_groups, cfg.step_embed_dim
        )
    if cfg.backbone == "transformer":
        return TransformerDenoiser(
            cfg.action_dim,
            cond_dim,
            cfg.horizon,
            cfg.d_model,
            cfg.n_heads,
            cfg.n_layers,
            0.0,
            cfg.step_embed_dim,
        )
    raise ValueError(f"PolicyConfig.backbone: unknown backbone '{cfg.backbone}'; use 'unet' or 'transformer'")


class Policy(nn.Module):
    """Base class: normalization, observation encoder, denoiser, predict/loss plumbing."""

    def __init__(self, config: PolicyConfig, stats: Mapping):
        super().__init__()
        cfg = config
        if cfg.action_dim <= 0:
            raise ValueError("PolicyConfig.action_dim must be set (> 0); it is filled in from the dataset")
        missing = [k for k in [*cfg.obs_keys, *cfg.image_keys] if k not in cfg.obs_shapes]
        if missing:
            raise ValueError(f"PolicyConfig.obs_shapes has no shape for {missing}")
        if not cfg.obs_keys and not cfg.image_keys:
            raise ValueError("PolicyConfig: no observation keys (obs_keys and image_keys are both empty)")
        if not 1 <= cfg.n_action_steps <= cfg.horizon - cfg.n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps={cfg.n_action_steps} must be in [1, horizon - n_obs_steps + 1 = "
                f"{cfg.horizon - cfg.n_obs_steps + 1}]"
            )
        self.config = cfg
        self.stats = {k: {s: np.asarray(v) for s, v in d.items()} for k, d in stats.items()}
        self.normalizer = Normalizer(self.stats, [*cfg.obs_keys, cfg.action_key])
        lowdim = {k: int(np.prod(cfg.obs_shapes[k])) for k in cfg.obs_keys}
        self.obs_encoder = ObsEncoder(
            lowdim,
            cfg.image_keys,
            cfg.n_obs_steps,
            tuple(cfg.obs_mlp_dims),
            cfg.image_feature_dim,
            cfg.image_width,
            tuple(cfg.crop_shape) if cfg.crop_shape else None,
            cfg.pretrained,
        )
        self.model = build_denoiser(cfg, self.obs_encoder.out_dim)
        div = getattr(self.model, "horizon_divisor", 1)
        if cfg.horizon % div:
            raise ValueError(
                f"horizon={cfg.horizon} must be divisible by {div} for down_dims={cfg.down_dims}"
            )

    # ----------------------------------------------------------------- transform chain
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def normalize_obs(self, obs: Mapping) -> dict[str, torch.Tensor]:
        """Raw ``{key: (B, To, *shape)}`` (numpy or torch) -> normalized float tensors on the device."""
        out = {}
        dev = self.device
        for k in self.config.obs_keys:
            x = torch.as_tensor(obs[k], device=dev).float()
            x = x.reshape(*x.shape[:2], -1)
            out[k] = self.normalizer.normalize(k, x)
        for k in self.config.image_keys:
            out[k] = image_to_float(torch.as_tensor(obs[k], device=dev))
        return out

    def normalize_action(self, action) -> torch.Tensor:
        return self.normalizer.normalize(
            self.config.action_key, torch.as_tensor(action, device=self.device).float()
        )

    def unnormalize_action(self, naction: torch.Tensor) -> torch.Tensor:
        return self.normalizer.unnormalize(self.config.action_key, naction.float())

    def encode(self, nobs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.obs_encoder(nobs)

    # ----------------------------------------------------------------- family-specific
    def loss(self, cond: torch.Tensor, naction: torch.Tensor) -> torch.Tensor:
        """Training loss from the conditioning and normalized action sequence (B, Tp, A)."""
        raise NotImplementedError

    def sample(
        self,
        cond: torch.Tensor,
        num_steps: int | None = None,
        init: torch.Tensor | None = None,
        start_step: int = 0,
        noise: torch.Tensor | None = None,
        sampler: str | None = None,
    ) -> torch.Tensor:
        """Normalized action sequences (B, Tp, A) from conditioning (B, C)."""
        raise NotImplementedError

    def default_steps(self) -> int:
        raise NotImplementedError

    def on_train_step(self, step: int) -> None:
        """Hook called after each optimizer step (nothing by default)."""

    # ----------------------------------------------------------------- public API
    def initial_noise(self, batch: int, noise: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
        shape = (batch, self.config.horizon, self.config.action_dim)
        if noise is None:
            return torch.randn(shape, device=cond.device, dtype=cond.dtype)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
        return noise.to(cond.dtype)

    def compute_loss(self, batch: Mapping) -> torch.Tensor:
        """``batch = {"obs": {key: (B, To, ...)}, "action": (B, Tp, A)}`` in raw units -> scalar loss."""
        nobs = self.normalize_obs(batch["obs"])
        naction = self.normalize_action(batch["action"])
        return self.loss(self.encode(nobs), naction)

    def forward(self, batch: Mapping) -> torch.Tensor:
        # DistributedDataParallel only synchronizes gradients through forward().
        return self.compute_loss(batch)

    def reset(self) -> None:
        """Forget per-episode state (none in the base policies; engines may keep warm-start plans)."""

    @torch.no_grad()
    def predict_batch(
        self, obs: Mapping, num_steps: int | None = None, sampler: str | None = None
    ) -> np.ndarray:
        """Batched raw obs ``{key: (B, To, ...)}`` -> raw actions (B, Tp, A) float32."""
        was_training = self.training
        self.eval()
        try:
            cond = self.encode(self.normalize_obs(obs))
            naction = self.sample(cond, num_steps, sampler=sampler)
            return self.unnormalize_action(naction).cpu().numpy().astype(np.float32)
        finally:
            self.train(was_training)

    def predict(
        self,
        obs: Mapping,
        prior: Any = None,
        start_time: float = 0.0,
        num_steps: int | None = None,
        sampler: str | None = None,
    ) -> ActionChunk:
        """Observation history ``{key: (To, ...)}`` in raw units -> ActionChunk in raw units.

        The chunk starts at the current step (index To-1 of the predicted horizon) and has
        ``horizon - To + 1`` actions; receding-horizon callers execute ``n_action_steps``.
        ``prior`` is accepted for the ``Predictor`` protocol and ignored: a plain policy always
        samples from noise (warm start and RTC are the inference engine's).
        """
        del prior
        cfg = self.config
        actions = self.predict_batch(self.batch_of_one(obs), num_steps, sampler)[0]
        return ActionChunk(actions=actions[cfg.n_obs_steps - 1 :], start_time=start_time, dt=1.0 / cfg.fps)

    def batch_of_one(self, obs: Mapping) -> dict[str, np.ndarray]:
        """One observation history ``{key: (To, ...)}`` -> ``{key: (1, To, ...)}``, keys and steps checked."""
        cfg = self.config
        keys = [*cfg.obs_keys, *cfg.image_keys]
        batched = {}
        for k in keys:
            if k not in obs:
                raise KeyError(f"observation is missing key '{k}' (policy expects {keys})")
            x = np.asarray(obs[k])
            if x.shape[0] != cfg.n_obs_steps:
                raise ValueError(
                    f"obs['{k}'] has {x.shape[0]} steps, policy expects n_obs_steps={cfg.n_obs_steps}"
                )
            batched[k] = x[None]
        return batched

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
