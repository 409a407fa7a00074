"""Consistency policy distilled from a trained diffusion or flow teacher (Consistency Policy style).

Everything happens in flow coordinates ``x_t = (1 - t) x0 + t noise``: a DDPM (VP) state
``a x0 + s eps`` is the same point scaled by ``a + s`` at ``t = s / (a + s)``, so one student
works with either teacher. The student ``f(x, t) = x - t * F(x, t)`` meets the boundary
condition ``f(x, 0) = x`` exactly, and started from a flow teacher's weights it already equals
the teacher's one-step Euler estimate.

Distillation (Song et al. 2023, consistency distillation): on a grid 0 = t_0 < ... < t_N of the
teacher's ODE, draw n, form x_{t_n}, take one teacher step (DDIM-style, i.e. Euler for a flow
teacher) to t_{n-1}, and regress ``f(x_{t_n}, t_n)`` onto ``stopgrad f(x_{t_{n-1}}, t_{n-1})``.
The target uses the student itself under stop-gradient (EMA decay 0, as improved consistency
training recommends), plus a small denoising term ``||f(x_{t_n}, t_n) - x0||^2``.

Sampling with k steps: start from noise at t = t_N, jump to x0 with f, re-noise to the next of
k evenly spaced grid times, repeat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robot_policy.policies.base import POLICIES, Policy


@POLICIES.register("consistency")
class ConsistencyPolicy(Policy):
    def __init__(self, config, stats):
        super().__init__(config, stats)
        self._teacher = None  # a plain attribute list so the teacher is never saved or trained
        self.register_buffer("grid", torch.linspace(0, 1, config.consistency.distill_grid + 1))

    def default_steps(self) -> int:
        return self.config.consistency.num_inference_steps

    def attach_teacher(self, teacher: Policy) -> None:
        """Use ``teacher`` (frozen) for distillation; also fixes the time grid to the teacher's ODE."""
        if not hasattr(teacher, "predict_x0_eps"):
            raise TypeError(f"a {teacher.config.family} policy cannot be a consistency teacher")
        teacher.eval().requires_grad_(False)
        self._teacher = [teacher]
        self.grid.copy_(teacher.ode_grid(self.config.consistency.distill_grid).to(self.grid))

    def consistency_fn(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        tt = t.float().expand(x.shape[0])
        out = self.model(x, tt * self.config.consistency.time_scale, cond).float()
        return x.float() - tt[:, None, None] * out

    def loss(self, cond, naction):
        if self._teacher is None:
            raise RuntimeError(
                "consistency training needs a teacher: train with --teacher DIR (a diffusion or flow run)"
            )
        teacher = self._teacher[0]
        b = naction.shape[0]
        n_grid = self.config.consistency.distill_grid
        n = torch.randint(1, n_grid + 1, (b,), device=naction.device)
        t_n, t_prev = self.grid[n], self.grid[n - 1]
        noise = torch.randn_like(naction)
        x_n = (1 - t_n[:, None, None]) * naction + t_n[:, None, None] * noise
        with torch.no_grad():
            # The teacher sees the same (normalized) observation; its encoder is its own.
            tcond = teacher.encode(self._nobs_for_teacher)
            x0_hat, eps_hat = teacher.predict_x0_eps(x_n, t_n, tcond)
            tp = t_prev[:, None, None]
            x_prev = (1 - tp) * x0_hat + tp * eps_hat
            target = self.consistency_fn(x_prev, t_prev, cond.detach())
        pred = self.consistency_fn(x_n, t_n, cond)
        loss = F.mse_loss(pred, target)
        w = self.config.consistency.dsm_weight
        if w > 0:
            loss = loss + w * F.mse_loss(pred, naction)
        return loss

    def compute_loss(self, batch):
        nobs = self.normalize_obs(batch["obs"])
        self._nobs_for_teacher = nobs
        try:
            return self.loss(self.encode(nobs), self.normalize_action(batch["action"]))
        finally:
            self._nobs_for_teacher = None

    def step_times(self, num_steps: int) -> list[int]:
        """Grid indices visited by a ``num_steps`` sample, from t_N downwards."""
        n_grid = self.config.consistency.distill_grid
        idx = torch.linspace(n_grid, 0, num_steps + 1).round().long().tolist()
        return idx[:-1]

    def sample(self, cond, num_steps=None, init=None, start_step=0, noise=None, sampler=None):
        num_steps = int(num_steps or self.default_steps())
        if not 1 <= num_steps <= self.config.consistency.distill_grid:
            raise ValueError(f"num_steps={num_steps} must be in [1, {self.config.consistency.distill_grid}]")
        if not 0 <= start_step < num_steps:
            raise ValueError(f"start_step={start_step} must be in [0, {num_steps - 1}]")
        idx = self.step_times(num_steps)
        x = self.initial_noise(cond.shape[0], noise, cond)
        x0 = init.to(x.dtype) if init is not None else None
        for j in range(start_step, num_steps):
            t = self.grid[idx[j]].to(x.dtype)
            if x0 is not None:
                # Re-noise the current estimate; the first step uses the caller's noise, later ones fresh noise.
                z = x if j == start_step else torch.randn_like(x)
                x_t = (1 - t) * x0 + t * z
            else:
                x_t = t * x  # pure noise at t_N (t_N < 1 for a VP teacher: x0 contributes (1 - t) * 0)
            x0 = self.consistency_fn(x_t, t, cond).to(x.dtype).clamp(-1, 1)
        return x0
