"""RLPD / SAC agent of HIL-SERL (Luo et al. 2024; RLPD, Ball et al. 2023).

* **Critic**: an ensemble of ``ensemble_size`` MLPs with LayerNorm; the TD target takes the
  minimum over a random subset of ``subset_size`` target critics (RLPD) and backs up the
  entropy term; ``utd`` critic updates per actor update (HIL-SERL: 2), discount 0.97.
* **Actor**: tanh-squashed Gaussian over the continuous action dimensions, temperature tuned
  to ``target_entropy``.
* **Gripper**: with ``gripper_critic`` the last action dimension is not the actor's but a
  discrete close / stay / open choice of :class:`~robot_policy.hil.rl.gripper.GripperCritic`
  (toggle penalty ``gripper_penalty``); without it the actor drives that dimension too.
* **Observations**: ``state`` concatenates the normalized 1-D keys of ``obs_spec``; ``image``
  adds one :class:`~robot_policy.hil.rl.vision.TruncatedResNet` (the project's ResNet-18) per camera key (trained by the critic
  loss, or ``freeze_encoder``); the actor reads detached features (DrQ / SERL practice).

Actions are in ``[-1, 1]`` on every dimension (the env wrappers of :mod:`.envs` expose that).
Transitions are ``dict[str, np.ndarray]`` with a leading N: ``obs/<key>``, ``next_obs/<key>``,
``action``, ``reward``, ``done`` (terminal, not time-limit truncation), ``intervened``,
``intervention_start``.

RLPD batches: :meth:`SACAgent.update` takes ``utd * batch_size/2`` online and as many offline
transitions and builds ``utd`` minibatches, each exactly half online, half offline
(:func:`rlpd_sizes` says how many to sample).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_policy.hil.rl.critic import EnsembleCritic
from robot_policy.hil.rl.gripper import GRIP_VALUES, GRIPPER_STATE_KEY, GripperCritic, mlp_ln

ObsSpec = dict[str, tuple[int, ...]]
"""``{observation key: per-step shape}``; 3-D shapes (H, W, 3) are uint8 camera images."""


@dataclass
class RLConfig:
    """RLPD / SAC hyper-parameters (``robot-policy hil`` flags of the same names)."""

    discount: float = 0.97
    """Discount factor (HIL-SERL: 0.97)."""
    utd: int = 2
    """Critic updates per actor update, each on a fresh half-online / half-offline minibatch."""
    ensemble_size: int = 2
    """Critics in the ensemble (>= 2)."""
    subset_size: int = 2
    """RLPD: the TD target is the minimum over this many randomly chosen target critics."""
    batch_size: int = 256
    """Minibatch size of one critic update (half online, half offline)."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics, gripper critic and temperature."""
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Widths of the LayerNorm MLPs (actor, critics, gripper critic)."""
    target_entropy: float | None = None
    """Temperature target (None: -continuous_action_dim / 2, SERL's default)."""
    init_temperature: float = 0.01
    """Initial entropy temperature alpha (SERL: 0.01; with 0/1 rewards a larger one buys
    randomness worth more than the task for thousands of updates)."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    obs_mode: Literal["state", "image"] = "state"
    """``state``: 1-D keys only; ``image``: also the camera keys through the project's encoder."""
    image_features: int = 64
    """Image encoder output size (per camera)."""
    encoder_width: int = 16
    """First-stage channels of the ResNet-18 encoder (64 = the original; small for CPUs)."""
    encoder_stages: int = 2
    """ResNet stages kept (2: stride 8; the full 4 leave a 2x2 map of a 64 px frame)."""
    freeze_encoder: bool = False
    """Keep the image encoder fixed (e.g. pretrained); only the heads learn."""
    pretrained_encoder: bool = False
    """Start the encoder from ImageNet weights (needs torchvision weights; width 64)."""
    image_pad: int = 4
    """Random-shift augmentation of camera frames in updates (pixels; 0: off)."""
    action_mode: Literal["joint", "ee_delta"] = "ee_delta"
    """What the action dimensions mean (recorded for the actor; the env defines it)."""
    gripper_critic: bool = True
    """Use the discrete close / stay / open critic for the last action dimension."""
    gripper_penalty: float = 0.02
    """Reward subtracted for every gripper command that changes its state (toggle)."""
    gripper_epsilon: float = 0.02
    """Exploration: chance of a random gripper class per stochastic step (kept small: a random
    "open" while lifting drops the cube)."""
    device: str = "cpu"
    """Torch device of the learner."""

    def __post_init__(self) -> None:
        if self.ensemble_size < 2:
            raise ValueError(f"ensemble_size must be >= 2 (RLPD), got {self.ensemble_size}")
        if not 1 <= self.subset_size <= self.ensemble_size:
            raise ValueError(f"subset_size must be in [1, ensemble_size], got {self.subset_size}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even (half online, half offline), got {self.batch_size}")
        if self.utd < 1:
            raise ValueError(f"utd must be >= 1, got {self.utd}")


def rlpd_sizes(cfg: RLConfig) -> tuple[int, int]:
    """Transitions to sample from (online, offline) for one :meth:`SACAgent.update`."""
    half = cfg.batch_size // 2
    return cfg.utd * half, cfg.utd * half


def rlpd_minibatches(
    online_batch: dict[str, np.ndarray], offline_batch: dict[str, np.ndarray], batch_size: int, utd: int
) -> list[dict[str, np.ndarray]]:
    """``utd`` minibatches of ``batch_size``: rows ``[i*h, (i+1)*h)`` of the online batch followed
    by the same rows of the offline batch (``h = batch_size / 2``): exactly half from each."""
    h = batch_size // 2
    n_on, n_off = len(online_batch["reward"]), len(offline_batch["reward"])
    if n_on != utd * h or n_off != utd * h:
        raise ValueError(
            f"an RLPD update needs {utd * h} online and {utd * h} offline transitions "
            f"(utd {utd} x batch_size/2 {h}), got {n_on} and {n_off}"
        )
    if set(online_batch) != set(offline_batch):
        raise ValueError(
            f"online and offline batches differ in keys: {sorted(set(online_batch) ^ set(offline_batch))}"
        )
    return [
        {
            k: np.concatenate([online_batch[k][i * h : (i + 1) * h], offline_batch[k][i * h : (i + 1) * h]])
            for k in online_batch
        }
        for i in range(utd)
    ]


class Encoder(nn.Module):
    """Observation dict -> feature vector: normalized state keys, plus image features."""

    def __init__(self, cfg: RLConfig, obs_spec: ObsSpec):
        super().__init__()
        self.state_keys = sorted(k for k, s in obs_spec.items() if len(s) == 1)
        self.image_keys = (
            sorted(k for k, s in obs_spec.items() if len(s) == 3) if cfg.obs_mode == "image" else []
        )
        if cfg.obs_mode == "image" and not self.image_keys:
            raise ValueError(f"obs_mode 'image' needs (H, W, 3) keys in the observation spec, got {obs_spec}")
        dim = sum(int(obs_spec[k][0]) for k in self.state_keys)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.pad = cfg.image_pad
        self.cams = nn.ModuleDict()
        if self.image_keys:
            from robot_policy.hil.rl.vision import TruncatedResNet

            for k in self.image_keys:
                self.cams[k.replace("/", "_")] = TruncatedResNet(
                    cfg.image_features,
                    width=cfg.encoder_width,
                    stages=cfg.encoder_stages,
                    pretrained=cfg.pretrained_encoder,
                )
            if cfg.freeze_encoder:
                self.cams.requires_grad_(False)
        self.out_dim = dim + cfg.image_features * len(self.image_keys)

    def forward(self, obs: dict[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        parts = [(torch.cat([obs[k].float() for k in self.state_keys], -1) - self.mean) / self.std]
        for k in self.image_keys:
            x = obs[k].permute(0, 3, 1, 2).float() / 255.0 - 0.5
            if augment and self.pad > 0:
                x = _random_shift(x, self.pad)
            parts.append(self.cams[k.replace("/", "_")](x))
        return torch.cat(parts, -1)


def _random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ's augmentation: replicate-pad by ``pad`` and crop back at a random offset per image."""
    n, _, h, w = x.shape
    x = F.pad(x, (pad,) * 4, mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (n,))
    oy = torch.randint(0, 2 * pad + 1, (n,))
    return torch.stack([x[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w] for i in range(n)])


class Actor(nn.Module):
    """Tanh-squashed diagonal Gaussian."""

    def __init__(self, feat_dim: int, hidden: list[int], act_dim: int):
        super().__init__()
        self.net = mlp_ln([feat_dim, *hidden], 2 * act_dim)

    def forward(self, feat: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.net(feat).chunk(2, -1)
        log_std = torch.clamp(log_std, -5.0, 2.0)
        if deterministic:
            return torch.tanh(mu), torch.zeros(mu.shape[0], device=mu.device)
        std = log_std.exp()
        u = mu + std * torch.randn_like(mu)
        a = torch.tanh(u)
        logp = (-0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # tanh Jacobian
        return a, logp


class SACAgent:
    """RLPD learner and actor in one object (the actor process only uses :meth:`act`)."""

    def __init__(self, cfg: RLConfig, obs_spec: ObsSpec, action_dim: int):
        self.cfg = cfg
        self.obs_spec = {k: tuple(int(d) for d in s) for k, s in obs_spec.items()}
        self.action_dim = int(action_dim)
        self.cont_dim = self.action_dim - 1 if cfg.gripper_critic else self.action_dim
        if self.cont_dim < 1:
            raise ValueError(f"action_dim {action_dim} leaves no continuous dimension for the actor")
        if cfg.gripper_critic and GRIPPER_STATE_KEY not in self.obs_spec:
            raise ValueError(
                f"gripper_critic needs the observation key {GRIPPER_STATE_KEY!r} (commanded gripper state) "
                "for its toggle penalty; use the env wrappers of robot_policy.hil.rl.envs or set gripper_critic=False"
            )
        self.device = torch.device(cfg.device)
        dev = self.device
        self.encoder = Encoder(cfg, self.obs_spec).to(dev)
        f = self.encoder.out_dim
        self.actor = Actor(f, cfg.hidden, self.cont_dim).to(dev)
        self.critics = EnsembleCritic(cfg.ensemble_size, [f + self.cont_dim, *cfg.hidden]).to(dev)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.gripper = (
            GripperCritic(f, cfg.hidden, cfg.gripper_penalty, cfg.tau).to(dev) if cfg.gripper_critic else None
        )
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=dev, requires_grad=True)
        self.target_entropy = cfg.target_entropy if cfg.target_entropy is not None else -self.cont_dim / 2.0
        critic_params = list(self.critics.parameters()) + [
            p for p in self.encoder.parameters() if p.requires_grad
        ]
        if self.gripper is not None:
            critic_params += list(self.gripper.q.parameters())
        self.critic_opt = torch.optim.Adam(critic_params, lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.updates = 0
        self.rng = np.random.default_rng(0)

    # ------------------------------------------------------------------ helpers
    def _obs(self, batch: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
        keys = self.encoder.state_keys + self.encoder.image_keys
        missing = [k for k in keys if f"{prefix}{k}" not in batch]
        if missing:
            raise KeyError(f"batch lacks {[prefix + k for k in missing]} (has {sorted(batch)})")
        return {k: torch.as_tensor(np.asarray(batch[f"{prefix}{k}"]), device=self.device) for k in keys}

    def fit_normalizer(self, batch: dict[str, np.ndarray]) -> None:
        """Set the state normalization from transitions (e.g. the demonstrations)."""
        x = torch.cat(
            [
                torch.as_tensor(np.asarray(batch[f"obs/{k}"]), dtype=torch.float32)
                for k in self.encoder.state_keys
            ],
            -1,
        )
        self.encoder.mean.copy_(x.mean(0))
        self.encoder.std.copy_(x.std(0).clamp_min(1e-3))

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def _q_all(self, critics: EnsembleCritic, feat: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return critics(torch.cat([feat, act], -1))  # (E, N)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """One observation (no batch dim) -> one action in [-1, 1]^action_dim (float32)."""
        batch = {f"obs/{k}": np.asarray(v)[None] for k, v in obs.items()}
        feat = self.encoder(self._obs(batch, "obs/"))
        a, _ = self.actor(feat, deterministic)
        a = a[0].cpu().numpy()
        if self.gripper is not None:
            if not deterministic and self.rng.random() < self.cfg.gripper_epsilon:
                g = float(self.rng.choice(GRIP_VALUES))
            else:
                g = float(self.gripper.act(feat)[0])
            a = np.concatenate([a, [g]])
        return a.astype(np.float32)

    # ------------------------------------------------------------------ learning
    def td_error(self, batch: dict[str, np.ndarray]) -> float:
        """Mean |Q - target| over the ensemble on ``batch`` (a diagnostic; no update)."""
        with torch.no_grad():
            t = self._tensors(batch)
            return float(self._critic_loss(t)[1])

    def _tensors(self, batch: dict[str, np.ndarray]) -> dict:
        dev = self.device
        return {
            "obs": self._obs(batch, "obs/"),
            "next_obs": self._obs(batch, "next_obs/"),
            "action": torch.as_tensor(np.asarray(batch["action"]), dtype=torch.float32, device=dev),
            "reward": torch.as_tensor(np.asarray(batch["reward"]), dtype=torch.float32, device=dev).reshape(
                -1
            ),
            "done": torch.as_tensor(np.asarray(batch["done"]), dtype=torch.float32, device=dev).reshape(-1),
        }

    def _critic_loss(self, t: dict, augment: bool = False):
        cfg = self.cfg
        feat = self.encoder(t["obs"], augment)
        with torch.no_grad():
            next_feat = self.encoder(t["next_obs"], augment)
            next_a, next_logp = self.actor(next_feat)
            tq = self._q_all(self.target_critics, next_feat, next_a)
            subset = torch.randperm(cfg.ensemble_size)[: cfg.subset_size]
            next_v = tq[subset].min(0).values - self.alpha * next_logp
            y = t["reward"] + cfg.discount * (1.0 - t["done"]) * next_v
        q = self._q_all(self.critics, feat, t["action"][:, : self.cont_dim])
        loss = ((q - y[None]) ** 2).mean(1).sum()
        return loss, (q - y[None]).abs().mean().detach(), feat, q.detach(), next_feat

    def update(
        self, online_batch: dict[str, np.ndarray], offline_batch: dict[str, np.ndarray]
    ) -> dict[str, float]:
        """``utd`` critic updates and one actor/temperature update (RLPD minibatches).

        Each batch holds ``utd * batch_size / 2`` transitions (:func:`rlpd_sizes`); minibatch
        ``i`` is online rows ``[i*h, (i+1)*h)`` next to offline rows of the same range.
        """
        cfg = self.cfg
        metrics: dict[str, float] = {}
        for mb in rlpd_minibatches(online_batch, offline_batch, cfg.batch_size, cfg.utd):
            t = self._tensors(mb)
            loss, td, feat, q, next_feat = self._critic_loss(t, augment=bool(self.encoder.image_keys))
            metrics.update(
                critic_loss=float(loss.detach()) / cfg.ensemble_size,
                td_error=float(td),
                q_mean=float(q.mean()),
            )
            if self.gripper is not None:
                # Same step, own parameters: the gripper head reads detached features.
                state = t["obs"].get(GRIPPER_STATE_KEY)
                state = state.reshape(-1) if state is not None else torch.zeros_like(t["reward"])
                gl = self.gripper.loss(
                    feat.detach(), next_feat, t["action"][:, -1], state, t["reward"], t["done"], cfg.discount
                )
                loss = loss + gl
                metrics["gripper_loss"] = float(gl.detach())
            self.critic_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.critic_opt.step()
            self._soft_update()
        # Actor and temperature on the last minibatch's (detached) features.
        feat = feat.detach()
        a, logp = self.actor(feat)
        q_pi = self._q_all(self.critics, feat, a).mean(0)
        actor_loss = (self.alpha.detach() * logp - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        self.updates += 1
        metrics.update(
            actor_loss=float(actor_loss.detach()),
            alpha=float(self.alpha.detach()),
            entropy=float(-logp.detach().mean()),
        )
        return metrics

    @torch.no_grad()
    def _soft_update(self) -> None:
        torch._foreach_lerp_(
            list(self.target_critics.parameters()), list(self.critics.parameters()), self.cfg.tau
        )
        if self.gripper is not None:
            self.gripper.soft_update()

    # ------------------------------------------------------------------ weights and checkpoints
    def _actor_modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"encoder": self.encoder, "actor": self.actor}
        if self.gripper is not None:
            mods["gripper"] = self.gripper.q
        return mods

    def actor_state(self) -> dict[str, torch.Tensor]:
        """What an actor process needs to act: encoder (+ normalizer), actor, gripper critic."""
        return {
            f"{name}.{k}": v.detach().cpu().clone()
            for name, m in self._actor_modules().items()
            for k, v in m.state_dict().items()
        }

    def load_actor_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, m in self._actor_modules().items():
            sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            m.load_state_dict(sub)

    def _all_modules(self) -> dict[str, nn.Module]:
        mods = {
            "encoder": self.encoder,
            "actor": self.actor,
            "critics": self.critics,
            "target_critics": self.target_critics,
        }
        if self.gripper is not None:
            mods["gripper"] = self.gripper
        return mods

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"critic_opt": self.critic_opt, "actor_opt": self.actor_opt, "alpha_opt": self.alpha_opt}
        return opts

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the learner: networks, targets, temperature, optimizer moments."""
        out = {
            f"{n}.{k}": v.detach().cpu().clone()
            for n, m in self._all_modules().items()
            for k, v in m.state_dict().items()
        }
        out["log_alpha"] = self.log_alpha.detach().cpu().clone()
        for n, opt in self._optimizers().items():
            for pid, st in opt.state_dict()["state"].items():
                for k, v in st.items():
                    out[f"{n}.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().clone()
        return out

    def meta(self) -> dict:
        """JSON-able description: config, observation spec, action size, update count."""
        return {
            "config": asdict(self.cfg),
            "obs_spec": {k: list(s) for k, s in self.obs_spec.items()},
            "action_dim": self.action_dim,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor], meta: dict | None = None) -> None:
        for n, m in self._all_modules().items():
            # Optimizer keys ("critic_opt.0.exp_avg") never share a module's "<name>." prefix.
            m.load_state_dict({k[len(n) + 1 :]: v for k, v in state.items() if k.startswith(n + ".")})
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for n, opt in self._optimizers().items():
            sd = opt.state_dict()
            for pid in range(sum(len(g["params"]) for g in sd["param_groups"])):
                keys = [k for k in state if k.startswith(f"{n}.{pid}.")]
                if keys:
                    sd["state"][pid] = {k.rsplit(".", 1)[1]: state[k].clone() for k in keys}
            opt.load_state_dict(sd)
        if meta is not None:
            self.updates = int(meta.get("updates", 0))

    def save(self, folder: str | Path) -> None:
        """``agent.safetensors`` + ``agent.json`` in ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "agent.safetensors")
        )
        (folder / "agent.json").write_text(json.dumps(self.meta(), indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> SACAgent:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / "agent.json").read_text())
        agent = cls(
            RLConfig(**meta["config"]), {k: tuple(v) for k, v in meta["obs_spec"].items()}, meta["action_dim"]
        )
        agent.load_state_dict(load_file(str(folder / "agent.safetensors")), meta)
        return agent
