"""Training configuration (``robot-policy train --config FILE``: YAML with ``policy:`` and ``train:``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from robot_policy.policies.config import PolicyConfig


@dataclass
class TrainConfig:
    """Optimizer, schedule and bookkeeping of one training run."""

    steps: int = 3000
    """Optimizer steps in total (a resumed run continues up to this number)."""
    batch_size: int = 128
    """Batch size per process (the global batch is batch_size x number of DDP processes)."""
    lr: float = 3e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-6
    """AdamW weight decay (Diffusion Policy's value)."""
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    """AdamW betas."""
    warmup_steps: int = 200
    """Linear learning-rate warmup, then cosine decay to min_lr_ratio * lr."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    ema_power: float = 0.75
    """EMA warmup power: decay = 1 - (1 + step)^-power (Diffusion Policy's EMAModel)."""
    ema_max_decay: float = 0.9999
    """Upper bound of the EMA decay."""
    val_ratio: float = 0.0
    """Fraction of episodes held out (their loss is logged at every checkpoint)."""
    seed: int = 0
    """Seeds data order, noise and augmentation; each step reseeds from (seed, step, rank) for exact resume."""
    bf16: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    log_every: int = 50
    """Write a CSV row every this many steps."""
    checkpoint_every: int = 1000
    """Save the checkpoint folder and training state every this many steps (and at the end)."""
    eval_every: int = 0
    """Evaluate in simulation every this many steps (0: never)."""
    eval_task: str = "lift"
    """Simulation task for periodic evaluation."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation."""


@dataclass
class RunConfig:
    """A whole training run: the policy to build and how to train it."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy architecture and family settings (data-dependent fields are filled from the dataset)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimization settings."""
