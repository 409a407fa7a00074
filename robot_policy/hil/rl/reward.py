"""Binary success (reward) classifier of HIL-SERL, from camera frames and/or state.

HIL-SERL trains a classifier on labelled frames (~200 positive, 2-3x negative; a frozen
pretrained encoder and a small head, BCE) and rewards the policy 1 when its probability passes a
threshold. Its **false-positive rate** is what matters: a false success ends an episode with a
reward the robot did not earn and teaches the policy to reproduce the look of success.

* **Data**: labelled frames as safetensors (:func:`save_frames` / :func:`load_frames`):
  ``label`` (N,) 0/1, ``episode`` (N,) ids, ``state`` (N, D) and/or ``image/<camera>``
  (N, H, W, 3) uint8. :func:`collect_frames` makes them in simulation: expert episodes that
  keep lifting after success (positives, and the approach as negatives) and perturbed
  episodes (the expert never closes, or lets go: hard negatives around the cube).
* **Split by episode**: train / validation (threshold) / test (report), so frames of one
  episode never land on both sides.
* **Threshold**: the lowest probability whose validation false-positive rate is at most
  ``max_fpr`` (most recall at that FPR); never below ``min_threshold``.
* **Report**: precision, recall and FPR on the held-out test episodes (:class:`ClassifierReport`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass
class RewardConfig:
    """``robot-policy hil reward train`` settings (flags of the same names)."""

    inputs: str = "image"
    """``image`` (camera frames only), ``state`` (low-dim state only) or ``both``."""
    encoder_width: int = 8
    """First-stage channels of the project's ResNet-18 trunk (64 = the original)."""
    features: int = 32
    """Image feature size per camera."""
    stages: int = 2
    """ResNet stages kept (2: stride 8, a ResNet-10-like trunk; see :mod:`.vision`)."""
    hidden: int = 64
    """Head MLP width."""
    steps: int = 600
    """Optimizer steps."""
    batch_size: int = 64
    """Minibatch size (balanced: half positive, half negative frames)."""
    lr: float = 1e-3
    """Adam learning rate."""
    max_fpr: float = 0.01
    """Highest validation false-positive rate the chosen threshold may have."""
    min_threshold: float = 0.5
    """The threshold is never below this probability."""
    val_fraction: float = 0.2
    """Share of episodes used to choose the threshold."""
    test_fraction: float = 0.3
    """Share of episodes held out for the report."""
    seed: int = 0
    """Split and initialisation seed."""


@dataclass
class ClassifierReport:
    """Held-out quality of a thresholded classifier."""

    threshold: float
    precision: float
    recall: float
    false_positive_rate: float
    positives: int
    negatives: int
    episodes: int
    extra: dict = field(default_factory=dict)


class SuccessClassifier(nn.Module):
    """Frames and/or state -> success logit."""

    def __init__(self, cfg: RewardConfig, state_dim: int, cameras: list[str]):
        super().__init__()
        from robot_policy.hil.rl.vision import TruncatedResNet

        self.cfg = cfg
        self.cameras = list(cameras) if cfg.inputs in ("image", "both") else []
        self.use_state = cfg.inputs in ("state", "both")
        self.encoders = nn.ModuleDict(
            {
                c: TruncatedResNet(cfg.features, width=cfg.encoder_width, stages=cfg.stages)
                for c in self.cameras
            }
        )
        self.register_buffer("mean", torch.zeros(max(state_dim, 1)))
        self.register_buffer("std", torch.ones(max(state_dim, 1)))
        dim = cfg.features * len(self.cameras) + (state_dim if self.use_state else 0)
        if dim == 0:
            raise ValueError(f"reward classifier inputs {cfg.inputs!r} found no cameras / state in the data")
        self.head = nn.Sequential(
            nn.Linear(dim, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1)
        )
        self.threshold = 0.5

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.use_state:
            parts.append((batch["state"].float() - self.mean) / self.std)
        for c in self.cameras:
            x = batch[f"image/{c}"].permute(0, 3, 1, 2).float() / 255.0 - 0.5
            parts.append(self.encoders[c](x))
        return self.head(torch.cat(parts, -1)).squeeze(-1)

    @torch.no_grad()
    def prob(self, frames: dict[str, np.ndarray], chunk: int = 256) -> np.ndarray:
        """Success probability of N frames (arrays with a leading N)."""
        self.eval()
        n = len(next(iter(frames.values())))
        out = []
        for i in range(0, n, chunk):
            out.append(
                torch.sigmoid(self({k: torch.as_tensor(v[i : i + chunk]) for k, v in frames.items()})).numpy()
            )
        return np.concatenate(out) if out else np.zeros(0)

    def reward(self, obs: dict[str, np.ndarray], state: np.ndarray | None = None) -> float:
        """1.0 if one observation looks like success (``<camera>_rgb`` keys and/or ``state``)."""
        frames = {f"image/{c}": obs[f"{c}_rgb"][None] for c in self.cameras}
        if self.use_state:
            frames["state"] = np.asarray(obs["state"] if state is None else state)[None]
        return float(self.prob(frames)[0] >= self.threshold)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, report: ClassifierReport | None = None) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "classifier.safetensors")
        )
        meta = {
            "config": asdict(self.cfg),
            "state_dim": int(self.mean.numel()),
            "cameras": self.cameras,
            "threshold": self.threshold,
            "report": asdict(report) if report else None,
        }
        (folder / "classifier.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> SuccessClassifier:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / "classifier.json").read_text())
        clf = cls(RewardConfig(**meta["config"]), meta["state_dim"], meta["cameras"])
        clf.load_state_dict(load_file(str(folder / "classifier.safetensors")))
        clf.threshold = float(meta["threshold"])
        return clf.eval()


# ---------------------------------------------------------------------- data
def save_frames(path: str | Path, frames: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in frames.items()}, str(path))


def load_frames(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    frames = load_file(str(path))
    for k in ("label", "episode"):
        if k not in frames:
            raise ValueError(f"{path}: labelled frames need a {k!r} array; keys: {sorted(frames)}")
    return frames


def collect_frames(
    env, episodes: int, seed: int = 50_000, extra_steps: int = 15, progress: bool = False
) -> dict[str, np.ndarray]:
    """Labelled frames from ``env`` (an :mod:`.envs` env): per episode the expert drives; every
    third episode it never closes the gripper and every third it lets go after grasping
    (hard negatives); successful episodes keep going ``extra_steps`` (more positives).
    Labels are the simulator's success flag of each frame."""
    from tqdm import tqdm

    out: dict[str, list] = {"label": [], "episode": [], "state": []}
    out.update({f"image/{c}": [] for c in env.cameras})
    for ep in tqdm(range(episodes), desc="labelled frames", disable=not progress):
        obs = env.reset(seed + ep)
        env.expert_takeover()
        kind = ep % 3  # 0: normal, 1: never close, 2: let go once grasped
        after = None
        for t in range(env.max_steps + extra_steps):
            a = env.expert_action(obs)
            if kind == 1:
                a[-1] = -1.0
            if kind == 2 and env.grasped() and t % 2 == 0:
                a[-1] = -1.0
            obs, success, _ = env.step(a)
            out["label"].append(np.float32(success))
            out["episode"].append(np.int64(ep))
            out["state"].append(obs["state"])
            for c in env.cameras:
                out[f"image/{c}"].append(obs[f"{c}_rgb"])
            if success and after is None:
                after = t
            if after is not None and t - after >= extra_steps:
                break
    return {k: np.stack(v) for k, v in out.items()}


def _split(episodes: np.ndarray, cfg: RewardConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.unique(episodes)
    rng = np.random.default_rng(cfg.seed)
    rng.shuffle(ids)
    n_test = max(1, int(round(cfg.test_fraction * len(ids))))
    n_val = max(1, int(round(cfg.val_fraction * len(ids))))
    if len(ids) < n_test + n_val + 1:
        raise ValueError(
            f"need at least {n_test + n_val + 1} episodes to split train/val/test, got {len(ids)}"
        )
    test, val = ids[:n_test], ids[n_test : n_test + n_val]
    return ~np.isin(episodes, np.concatenate([test, val])), np.isin(episodes, val), np.isin(episodes, test)


def choose_threshold(
    prob: np.ndarray, label: np.ndarray, max_fpr: float, min_threshold: float = 0.5
) -> float:
    """Lowest threshold (most recall) whose false-positive rate on ``(prob, label)`` is <= ``max_fpr``."""
    neg = np.sort(prob[label < 0.5])[::-1]
    allowed = int(np.floor(max_fpr * len(neg)))  # negatives allowed at or above the threshold
    t = float(np.nextafter(neg[allowed], 1.0)) if allowed < len(neg) else 0.0
    return float(min(max(t, min_threshold), 1.0))


def metrics(prob: np.ndarray, label: np.ndarray, threshold: float) -> dict[str, float]:
    pred = prob >= threshold
    pos = label > 0.5
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    return {
        "precision": tp / max(1, int(pred.sum())),
        "recall": tp / max(1, int(pos.sum())),
        "false_positive_rate": fp / max(1, int((~pos).sum())),
    }


def train_classifier(
    frames: dict[str, np.ndarray], cfg: RewardConfig, progress: bool = False, hard_share: float = 0.0
) -> tuple[SuccessClassifier, ClassifierReport]:
    """Train on labelled frames, choose the threshold on validation episodes, report on test ones.

    ``frames["hard"]`` (optional bool per frame) marks hard negatives, e.g. successes a human
    rejected: ``hard_share`` of every batch's negative half is drawn from the training ones, so a
    few dozen of them weigh against thousands of ordinary frames. Validation and test count each
    frame once."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    label = frames["label"].astype(np.float32)
    tr, va, te = _split(frames["episode"], cfg)
    cams = sorted(k.split("/", 1)[1] for k in frames if k.startswith("image/"))
    keys = [k for k in frames if k.startswith("image/") or k == "state"]
    state_dim = int(frames["state"].shape[1]) if "state" in frames else 0
    clf = SuccessClassifier(cfg, state_dim, cams)
    if "state" in frames:
        clf.mean.copy_(torch.as_tensor(frames["state"][tr].mean(0)))
        clf.std.copy_(torch.as_tensor(frames["state"][tr].std(0)).clamp_min(1e-3))
    hard = frames["hard"].astype(bool) if "hard" in frames else np.zeros(len(label), bool)
    pos_idx, neg_idx = np.flatnonzero(tr & (label > 0.5)), np.flatnonzero(tr & (label < 0.5) & ~hard)
    hard_idx = np.flatnonzero(tr & (label < 0.5) & hard)
    n_hard = int(round(hard_share * (cfg.batch_size // 2))) if len(hard_idx) else 0
    if len(pos_idx) == 0 or len(neg_idx) == 0:
        raise ValueError(
            f"training episodes need both labels: {len(pos_idx)} positive, {len(neg_idx)} negative frames"
        )
    opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    clf.train()
    for _ in tqdm(range(cfg.steps), desc="reward classifier", disable=not progress):
        half = cfg.batch_size // 2
        idx = np.concatenate(
            [
                rng.choice(pos_idx, half),
                rng.choice(neg_idx, half - n_hard),
                rng.choice(hard_idx, n_hard) if n_hard else np.zeros(0, np.int64),
            ]
        )
        batch = {k: torch.as_tensor(frames[k][idx]) for k in keys}
        loss = nn.functional.binary_cross_entropy_with_logits(clf(batch), torch.as_tensor(label[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sub = {k: frames[k] for k in keys}
    p_val = clf.prob({k: v[va] for k, v in sub.items()})
    clf.threshold = choose_threshold(p_val, label[va], cfg.max_fpr, cfg.min_threshold)
    p_test = clf.prob({k: v[te] for k, v in sub.items()})
    m = metrics(p_test, label[te], clf.threshold)
    report = ClassifierReport(
        threshold=clf.threshold,
        positives=int((label[te] > 0.5).sum()),
        negatives=int((label[te] < 0.5).sum()),
        episodes=int(len(np.unique(frames["episode"][te]))),
        extra={
            "train_frames": int(tr.sum()),
            "val": metrics(p_val, label[va], clf.threshold),
            "train_s": round(time.perf_counter() - t0, 1),
            "final_loss": float(loss.detach()),
        },
        **m,
    )
    return clf.eval(), report
