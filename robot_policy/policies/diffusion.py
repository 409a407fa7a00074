"""Diffusion Policy: DDPM training (diffusers DDPMScheduler), DDPM / DDIM / DPM-Solver++ inference.

diffusers schedulers are stateful (``set_timesteps`` stores the schedule, multistep solvers keep
past outputs), so each policy instance owns its own scheduler objects and calls
``set_timesteps`` at the start of every ``sample``; one policy instance must therefore not be
sampled from two threads at once. Timesteps are int64 for all three samplers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robot_policy.policies.base import POLICIES, Policy
from robot_policy.policies.config import PolicyConfig
from robot_policy.registry import Registry

SAMPLERS: Registry = Registry("diffusion sampler")


@SAMPLERS.register("ddpm")
def _ddpm(train_config):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(train_config, timestep_spacing="trailing")


@SAMPLERS.register("ddim")
def _ddim(train_config):
    from diffusers import DDIMScheduler

    # "trailing" spacing starts at the last training timestep, so even 1-2 steps start from pure noise.
    return DDIMScheduler.from_config(train_config, timestep_spacing="trailing", set_alpha_to_one=True)


@SAMPLERS.register("dpmsolver++")
def _dpm(train_config):
    from diffusers import DPMSolverMultistepScheduler

    # DPM-Solver has no clip_sample; with ε-prediction its x0 estimate at the first (almost pure
    # noise) step is (x - s·ε)/a with a ≈ 0 and explodes. Thresholding at sample_max_value=1 clips
    # x0 to [-1, 1] like DDPM/DDIM's clip_sample (measured on Lift, 2 steps: 4/50 -> see docs/results.md).
    clip = bool(train_config.get("clip_sample", False))
    return DPMSolverMultistepScheduler.from_config(
        train_config,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        thresholding=clip,
        sample_max_value=float(train_config.get("clip_sample_range", 1.0)),
    )


@POLICIES.register("diffusion")
class DiffusionPolicy(Policy):
    def __init__(self, config: PolicyConfig, stats):
        super().__init__(config, stats)
        from diffusers import DDPMScheduler

        d = config.diffusion
        if d.prediction_type not in ("epsilon", "sample"):
            raise ValueError(
                f"diffusion.prediction_type must be 'epsilon' or 'sample', got '{d.prediction_type}'"
            )
        SAMPLERS.get(d.sampler)  # fail at construction on a typo, not at the first rollout
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=d.num_train_timesteps,
            beta_schedule=d.beta_schedule,
            prediction_type=d.prediction_type,
            clip_sample=d.clip_sample,
            clip_sample_range=1.0,
        )
        self._samplers: dict = {}
        ac = self.noise_scheduler.alphas_cumprod.double()
        # Flow time of every DDPM timestep: x_vp / (a + s) = (1 - t) x0 + t eps with t = s / (a + s).
        self._vp_a, self._vp_s = ac.sqrt(), (1 - ac).sqrt()
        self._flow_t = (self._vp_s / (self._vp_a + self._vp_s)).float()

    def default_steps(self) -> int:
        return self.config.diffusion.num_inference_steps

    def scheduler(self, name: str | None = None):
        """This instance's scheduler for sampler ``name`` (created once, reused)."""
        name = name or self.config.diffusion.sampler
        if name not in self._samplers:
            self._samplers[name] = SAMPLERS.get(name)(self.noise_scheduler.config)
        return self._samplers[name]

    def loss(self, cond: torch.Tensor, naction: torch.Tensor) -> torch.Tensor:
        b = naction.shape[0]
        noise = torch.randn_like(naction)
        t = torch.randint(
            0, self.config.diffusion.num_train_timesteps, (b,), device=naction.device, dtype=torch.long
        )
        noisy = self.noise_scheduler.add_noise(naction, noise, t)
        pred = self.model(noisy, t, cond)
        target = noise if self.config.diffusion.prediction_type == "epsilon" else naction
        return F.mse_loss(pred.float(), target)

    def sample(self, cond, num_steps=None, init=None, start_step=0, noise=None, sampler=None):
        num_steps = int(num_steps or self.default_steps())
        if not 1 <= num_steps <= self.config.diffusion.num_train_timesteps:
            raise ValueError(
                f"num_steps={num_steps} must be in [1, {self.config.diffusion.num_train_timesteps}] for diffusion"
            )
        sched = self.scheduler(sampler)
        # Timesteps stay on the CPU: diffusers then computes every step
        # coefficient as a host scalar, so the loop has no device->host syncs and the whole
        # sampler can be recorded as one CUDA graph; the network gets its timestep via torch.full.
        sched.set_timesteps(num_steps)
        timesteps = sched.timesteps
        if not 0 <= start_step < len(timesteps):
            raise ValueError(f"start_step={start_step} must be in [0, {len(timesteps) - 1}]")
        x = self.initial_noise(cond.shape[0], noise, cond)
        if init is not None:
            # [inference engine] = sched.add_noise for these VP samplers, with host-scalar coefficients.
            ac = sched.alphas_cumprod[timesteps[start_step]].item()
            x = ac**0.5 * init.to(x.dtype) + (1.0 - ac) ** 0.5 * x
        x = x * sched.init_noise_sigma
        for t in timesteps[start_step:]:
            model_in = sched.scale_model_input(x, t)
            t_in = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)  # [inference engine]
            out = self.model(model_in, t_in, cond)
            x = sched.step(out.to(x.dtype), t, x).prev_sample
        return x

    # ----------------------------------------------------------------- teacher interface
    def ode_grid(self, n: int) -> torch.Tensor:
        """n+1 increasing flow times (t_0 = 0) on DDPM timesteps, for consistency distillation."""
        T = self.config.diffusion.num_train_timesteps
        ks = torch.linspace(0, T - 1, n).round().long()
        return torch.cat([torch.zeros(1), self._flow_t[ks]])

    def predict_x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor):
        """Clean-action and noise estimates at flow time ``t`` (B,) for flow-coordinate ``x``."""
        flow_t = self._flow_t.to(x.device)
        k = (flow_t[None, :] - t[:, None]).abs().argmin(dim=1)
        a = self._vp_a.to(x.device)[k].float()[:, None, None]
        s = self._vp_s.to(x.device)[k].float()[:, None, None]
        x_vp = x * (a + s)
        out = self.model(x_vp, k, cond).float()
        if self.config.diffusion.prediction_type == "epsilon":
            x0 = (x_vp - s * out) / a
        else:
            x0 = out
        x0 = x0.clamp(-1, 1)  # as clip_sample does; also tames x0 = (x - s eps) / a at a -> 0
        eps = (x_vp - a * x0) / s
        return x0, eps
