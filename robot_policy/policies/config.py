"""Typed configuration of every policy family (one dataclass, one section per family)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DiffusionConfig:
    """DDPM training / DDPM-DDIM-DPM-Solver++ inference (Diffusion Policy)."""

    num_train_timesteps: int = 100
    """Number of DDPM noise levels used in training."""
    beta_schedule: str = "squaredcos_cap_v2"
    """diffusers beta schedule; squared cosine as in Diffusion Policy."""
    prediction_type: str = "epsilon"
    """What the network predicts: 'epsilon' (noise) or 'sample' (clean actions)."""
    clip_sample: bool = True
    """Clip predicted clean actions to [-1, 1] (actions are min-max normalized to that range)."""
    sampler: str = "ddpm"
    """Default inference sampler: 'ddpm', 'ddim' or 'dpmsolver++'."""
    num_inference_steps: int = 100
    """Default number of denoising steps at inference."""


@dataclass
class FlowConfig:
    """Rectified flow / conditional flow matching: x_t = (1 - t) x0 + t noise, v = noise - x0."""

    integrator: str = "euler"
    """Default ODE integrator: 'euler', 'midpoint' or 'heun' (the last two use 2 network calls per step)."""
    num_inference_steps: int = 4
    """Default number of integration steps."""
    time_scale: float = 1000.0
    """t in [0, 1] is multiplied by this before the sinusoidal embedding (like sigma*1000 in diffusers)."""


@dataclass
class ConsistencyConfig:
    """Consistency distillation from a diffusion or flow teacher (Consistency Policy style)."""

    num_inference_steps: int = 1
    """Default number of consistency steps (1-3)."""
    distill_grid: int = 20
    """Number of discretization intervals of the teacher ODE used for distillation."""
    dsm_weight: float = 0.1
    """Weight of the auxiliary denoising loss ||f(x_t, t) - x0||^2 (stabilizes early training)."""
    time_scale: float = 1000.0
    """t in [0, 1] is multiplied by this before the time embedding."""
    teacher_family: str = ""
    """Family of the teacher the student was distilled from (filled in by training; informational)."""


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a policy (saved as config.json in the checkpoint)."""

    family: str = "diffusion"
    """Registered family: 'diffusion', 'flow' or 'consistency'."""
    obs_keys: list[str] = field(default_factory=list)
    """Low-dim observation keys (empty: every non-image key of the dataset except the action)."""
    image_keys: list[str] = field(default_factory=list)
    """Image observation keys (uint8 HxWx3), e.g. ['agentview_rgb']."""
    obs_shapes: dict[str, list[int]] = field(default_factory=dict)
    """Shape of one frame per observation key (filled in from the dataset)."""
    action_key: str = "action"
    """Dataset key of the action."""
    action_dim: int = 0
    """Action dimension (filled in from the dataset)."""
    fps: float = 20.0
    """Control rate of the data; sets ActionChunk.dt."""
    n_obs_steps: int = 2
    """Observation history length (To)."""
    horizon: int = 16
    """Predicted action sequence length (Tp)."""
    n_action_steps: int = 8
    """Actions executed per prediction (Ta) in receding-horizon control."""
    backbone: str = "unet"
    """Denoiser network: 'unet' (1-D temporal conditional UNet) or 'transformer'."""
    down_dims: list[int] = field(default_factory=lambda: [64, 128, 256])
    """UNet widths per level (64/128/256 ≈ 4M params; Diffusion Policy uses 256/512/1024)."""
    kernel_size: int = 5
    """UNet temporal convolution kernel size."""
    n_groups: int = 8
    """GroupNorm groups in the UNet."""
    step_embed_dim: int = 128
    """Size of the denoising-time embedding."""
    d_model: int = 256
    """Transformer width."""
    n_heads: int = 4
    """Transformer attention heads."""
    n_layers: int = 4
    """Transformer decoder layers."""
    obs_mlp_dims: list[int] = field(default_factory=lambda: [256, 256])
    """MLP applied to the concatenated observation features (empty: pass them through)."""
    image_feature_dim: int = 64
    """Output features per camera of the ResNet encoder."""
    image_width: int = 64
    """ResNet-18 first-stage width (64 = standard ResNet-18; smaller for CPU experiments)."""
    crop_shape: list[int] = field(default_factory=list)
    """[H, W] random crop in training, centre crop at inference (empty: no crop)."""
    pretrained: bool = False
    """Load torchvision ImageNet weights into the ResNet (needs torchvision)."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Diffusion family settings."""
    flow: FlowConfig = field(default_factory=FlowConfig)
    """Flow-matching family settings."""
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    """Consistency family settings."""
