"""Flow-matching policy (rectified flow / conditional flow matching).

Path: ``x_t = (1 - t) x0 + t * noise``, t in [0, 1] (t = 1 is pure noise); the network predicts
the constant velocity ``v = noise - x0``; sampling integrates dx/dt = v from t = 1 to 0 with
Euler, midpoint or Heun steps (Liu et al. 2023, Lipman et al. 2023; the base of pi0).
Straight paths make 1-4 steps usable where few-step DDIM collapses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robot_policy.policies.base import POLICIES, Policy
from robot_policy.registry import Registry

INTEGRATORS: Registry = Registry("flow integrator")


@INTEGRATORS.register("euler")
def _euler(v, x, t, dt, cond):
    return x + dt * v(x, t, cond)


@INTEGRATORS.register("midpoint")
def _midpoint(v, x, t, dt, cond):
    v1 = v(x, t, cond)
    return x + dt * v(x + 0.5 * dt * v1, t + 0.5 * dt, cond)


@INTEGRATORS.register("heun")
def _heun(v, x, t, dt, cond):
    v1 = v(x, t, cond)
    v2 = v(x + dt * v1, t + dt, cond)
    return x + dt * 0.5 * (v1 + v2)


@POLICIES.register("flow")
class FlowPolicy(Policy):
    def __init__(self, config, stats):
        super().__init__(config, stats)
        INTEGRATORS.get(config.flow.integrator)

    def default_steps(self) -> int:
        return self.config.flow.num_inference_steps

    def velocity(self, x: torch.Tensor, t: float | torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            tt = t.to(device=x.device, dtype=torch.float32).expand(x.shape[0])
        else:  # torch.full: no host->device copy, CUDA-graph safe
            tt = torch.full((x.shape[0],), float(t), device=x.device)
        return self.model(x, tt * self.config.flow.time_scale, cond).to(x.dtype)

    def loss(self, cond, naction):
        b = naction.shape[0]
        noise = torch.randn_like(naction)
        t = torch.rand(b, device=naction.device)
        tb = t[:, None, None]
        xt = (1 - tb) * naction + tb * noise
        pred = self.model(xt, t * self.config.flow.time_scale, cond)
        return F.mse_loss(pred.float(), noise - naction)

    @staticmethod
    def times(num_steps: int) -> list[float]:
        """Integration times 1 -> 0 (num_steps + 1 values), uniform."""
        return [1.0 - i / num_steps for i in range(num_steps + 1)]

    def sample(self, cond, num_steps=None, init=None, start_step=0, noise=None, sampler=None):
        num_steps = int(num_steps or self.default_steps())
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not 0 <= start_step < num_steps:
            raise ValueError(f"start_step={start_step} must be in [0, {num_steps - 1}]")
        step_fn = INTEGRATORS.get(sampler or self.config.flow.integrator)
        ts = self.times(num_steps)
        x = self.initial_noise(cond.shape[0], noise, cond)
        if init is not None:
            t0 = ts[start_step]
            x = (1 - t0) * init.to(x.dtype) + t0 * x
        for i in range(start_step, num_steps):
            x = step_fn(self.velocity, x, ts[i], ts[i + 1] - ts[i], cond)
        return x.clamp(-1, 1)

    # ----------------------------------------------------------------- teacher interface
    def ode_grid(self, n: int) -> torch.Tensor:
        return torch.linspace(0, 1, n + 1)

    def predict_x0_eps(self, x, t, cond):
        v = self.velocity(x, t, cond).float()
        tb = t.float()[:, None, None]
        return x - tb * v, x + (1 - tb) * v
