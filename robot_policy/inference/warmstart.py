"""Warm start (RTI-DP): reuse the previous plan instead of sampling from pure noise.

Real-Time Iteration for diffusion policies: consecutive plans overlap, so the previous
chunk, shifted by the actions already executed, is a good guess of the next one. It is
noised to an intermediate level ``t_{N-k}`` of an ``N``-step schedule and only the last
``k`` steps run: ``k`` network calls instead of ``N``. The policies implement it through
``sample(cond, N, init=plan, start_step=N-k)`` for every family: diffusion re-noises with
its forward process (RTI-DP), flow matching interpolates ``(1-t) plan + t noise`` and
integrates from ``t`` (partial integration), consistency re-noises the plan and takes the
remaining consistency jumps.

A 1-step flow or consistency sampler gains nothing from ``N = 1`` (the only level is pure
noise); use e.g. ``schedule_steps: 4, run_steps: 1`` to start one network call from t = 0.25.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_policy.inference.scheduler import Prior

_EXAMPLE = "e.g. schedule_steps: 10, run_steps: 3 runs the last 3 of 10 steps"


@dataclass(frozen=True)
class WarmStartConfig:
    """RTI-DP warm start of the sampler from the previous plan (when the caller passes one)."""

    run_steps: int = 0
    """k: start from the previous plan and run only the last k steps of the N-step schedule
    (start_step = N - k, 1 <= k <= N); 0: warm start off, every call samples from noise."""
    schedule_steps: int = 0
    """N: step schedule the intermediate noise level is taken from (0: the engine's num_steps)."""

    def __post_init__(self):
        if self.run_steps < 0 or self.schedule_steps < 0:
            raise ValueError(
                f"WarmStartConfig.run_steps ({self.run_steps}) and schedule_steps ({self.schedule_steps}) "
                f"must be >= 0; {_EXAMPLE}"
            )
        if self.schedule_steps and self.run_steps > self.schedule_steps:
            raise ValueError(
                f"WarmStartConfig.run_steps={self.run_steps} exceeds schedule_steps={self.schedule_steps}; {_EXAMPLE}"
            )

    @property
    def enabled(self) -> bool:
        """Whether calls with a prior start from it (``run_steps > 0``)."""
        return self.run_steps > 0


def warm_steps(cfg: WarmStartConfig, default_steps: int) -> tuple[int, int]:
    """(num_steps, start_step) of a warm-started call."""
    n = int(cfg.schedule_steps or default_steps)
    k = int(cfg.run_steps)
    if not 1 <= k <= n:
        raise ValueError(f"WarmStartConfig.run_steps={k} must be in [1, schedule_steps={n}]; {_EXAMPLE}")
    return n, n - k


def build_init(
    prior: Prior | np.ndarray, n_obs_steps: int, horizon: int, scale: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prior plan (raw units, from the current step on) -> normalized (horizon, A) init + RTC mask.

    The policy's horizon starts ``n_obs_steps - 1`` steps before the current one; those
    already-past slots are filled with the plan's first action (they are never executed).
    Returns ``weights`` (horizon, 1) only when the prior carries nonzero RTC weights.
    """
    acts = np.asarray(prior.actions if isinstance(prior, Prior) else prior, dtype=np.float32)
    if acts.ndim != 2 or acts.shape[1] != scale.shape[0] or len(acts) == 0:
        raise ValueError(f"prior actions must be (T, {scale.shape[0]}) with T >= 1, got {acts.shape}")
    n_future = horizon - (n_obs_steps - 1)
    idx = np.clip(np.arange(n_future), 0, len(acts) - 1)  # repeat the last action past the plan
    full = np.concatenate([np.repeat(acts[:1], n_obs_steps - 1, axis=0), acts[idx]], axis=0)
    init = np.clip(full * scale + offset, -1.0, 1.0).astype(np.float32)
    weights = None
    if isinstance(prior, Prior) and np.any(prior.weights > 0):
        w = np.asarray(prior.weights, dtype=np.float32)
        w = np.concatenate(
            [np.full(n_obs_steps - 1, w[0], np.float32), w[np.clip(np.arange(n_future), 0, len(w) - 1)]]
        )
        if len(prior.weights) < n_future:
            w[n_obs_steps - 1 + len(prior.weights) :] = 0.0
        weights = w[:, None].astype(np.float32)
    return init, weights
