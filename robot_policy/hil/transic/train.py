"""Two-stage TRANSIC training from a corrections store.

The store holds corrected rollouts (``robot-policy transic collect`` or ``dagger``): per step the
observation, the executed ``action`` (post), the base's proposal ``policy_action`` (pre) and the
``intervention`` flag. Per step we compute the frozen base's observation features (the same
history the policy saw: the last ``n_obs_steps`` frames, the first repeated at the start).

* stage 1 (intervention steps only): trunk + residual + gripper flip. Residual target:
  ``post - pre`` on the joints, normalized by the per-joint bound (the head's tanh range);
  flip target: the executed gripper has the other sign than the proposal.
* stage 2 (all steps, majority class subsampled every epoch): the gate head alone on the
  frozen trunk features.

The report (held-out episodes): gate precision/recall/accuracy at the deployment threshold,
residual mean absolute error against the zero residual (the base alone), flip accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robot_policy.policies.transic.model import ResidualGate, TransicConfig, balanced_indices

NORMALIZED_TARGET_LIMIT = 0.97
"""Residual targets are clipped to this fraction of the bound (tanh never reaches 1)."""


def read_corrections(store_path: str | Path, base) -> dict[str, np.ndarray]:
    """Per-step arrays of a corrections store, with the frozen base's features.

    Returns ``features`` (N, C), ``base_naction`` (N, A), ``pre`` and ``post`` (N, A) raw,
    ``intervention`` (N,) bool, ``episode`` (N,) int.
    """
    from robot_policy.data import EpisodeStore

    cfg = base.config
    keys = [*cfg.obs_keys, *cfg.image_keys]
    out: dict[str, list] = {
        k: [] for k in ("features", "base_naction", "pre", "post", "intervention", "episode")
    }
    with EpisodeStore.open(store_path) as store:
        missing = [k for k in (*keys, "action", "policy_action", "intervention") if k not in store.schema]
        if missing:
            raise KeyError(
                f"{store_path} lacks {missing}: TRANSIC needs corrected rollouts with the policy's proposal and "
                "the intervention flag (record them with 'robot-policy transic collect' or 'robot-policy dagger')"
            )
        for i in range(store.num_episodes):
            ep = store.get_episode(i, [*keys, "action", "policy_action", "intervention"])
            t_len = len(ep["action"])
            idx = np.arange(t_len)[:, None] + np.arange(-cfg.n_obs_steps + 1, 1)[None]
            idx = np.clip(idx, 0, None)  # history before the first frame repeats it, like the rollout
            hist = {k: ep[k][idx] for k in keys}
            with torch.no_grad():
                feats = base.encode(base.normalize_obs(hist))
                nact = base.normalize_action(ep["policy_action"])
            out["features"].append(feats.cpu().numpy())
            out["base_naction"].append(nact.cpu().numpy())
            out["pre"].append(np.asarray(ep["policy_action"], np.float32))
            out["post"].append(np.asarray(ep["action"], np.float32))
            out["intervention"].append(np.asarray(ep["intervention"]).reshape(-1).astype(bool))
            out["episode"].append(np.full(t_len, i))
    if not out["features"]:
        raise ValueError(f"{store_path} holds no episodes")
    return {k: np.concatenate(v) for k, v in out.items()}


def targets(data: dict, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalized residual targets (N, J) and gripper-flip labels (N,)."""
    n = len(bounds)
    delta = data["post"][:, :n] - data["pre"][:, :n]
    nres = np.clip(delta / bounds, -NORMALIZED_TARGET_LIMIT, NORMALIZED_TARGET_LIMIT)
    flip = np.sign(data["post"][:, n]) * np.sign(data["pre"][:, n]) < 0
    return nres.astype(np.float32), flip


def _batches(idx: np.ndarray, batch: int, steps: int, rng: np.random.Generator):
    for _ in range(steps):
        yield idx[rng.integers(0, len(idx), min(batch, len(idx)))]


def train_stage_one(
    head: ResidualGate, data: dict, nres: np.ndarray, flip: np.ndarray, idx, cfg, rng
) -> list:
    """Trunk + residual + flip on the intervention steps ``idx``; returns the loss curve."""
    head.train()
    opt = torch.optim.AdamW(head.residual_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    feats = torch.as_tensor(data["features"])
    nact = torch.as_tensor(data["base_naction"])
    y, f = torch.as_tensor(nres), torch.as_tensor(flip.astype(np.float32))
    losses = []
    for b in _batches(idx, cfg.batch_size, cfg.residual_steps, rng):
        out = head(feats[b], nact[b])
        loss = F.mse_loss(out["normalized_residual"], y[b]) + F.binary_cross_entropy_with_logits(
            out["flip_logit"], f[b]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    head.eval()
    return losses


def train_stage_two(head: ResidualGate, data: dict, idx: np.ndarray, cfg, rng) -> list:
    """The gate head alone on frozen trunk features, balanced by subsampling; loss curve."""
    for p in head.residual_parameters():
        p.requires_grad_(False)
    labels = data["intervention"][idx]
    with torch.no_grad():  # the trunk is frozen: its features are computed once
        h = head.features(torch.as_tensor(data["features"][idx]), torch.as_tensor(data["base_naction"][idx]))
    y = torch.as_tensor(labels.astype(np.float32))
    opt = torch.optim.AdamW(head.gate_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    head.gate.train()
    losses, order, pos = [], np.zeros(0, np.int64), 0
    for _ in range(cfg.gate_steps):
        if pos >= len(order):  # a new balanced subsample every epoch
            order, pos = balanced_indices(labels, rng), 0
            if not len(order):
                raise ValueError(
                    "the gate needs both intervention and non-intervention steps; the corrections have "
                    f"{int(labels.sum())} intervention steps of {len(labels)}"
                )
        b = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        loss = F.binary_cross_entropy_with_logits(head.gate(h[b]).squeeze(-1), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    head.eval()
    for p in head.residual_parameters():
        p.requires_grad_(True)
    return losses


@torch.no_grad()
def evaluate_head(
    head: ResidualGate, data: dict, idx: np.ndarray, bounds: np.ndarray, threshold: float
) -> dict:
    """Gate precision/recall/accuracy and residual error on the steps ``idx``."""
    if not len(idx):
        return {"steps": 0}
    out = head(torch.as_tensor(data["features"][idx]), torch.as_tensor(data["base_naction"][idx]))
    gate = (torch.sigmoid(out["gate_logit"]) > threshold).numpy()
    y = data["intervention"][idx]
    tp, fp, fn = int(np.sum(gate & y)), int(np.sum(gate & ~y)), int(np.sum(~gate & y))
    rep = {
        "steps": int(len(idx)),
        "intervention_steps": int(y.sum()),
        "gate_precision": tp / max(1, tp + fp),
        "gate_recall": tp / max(1, tp + fn),
        "gate_accuracy": float(np.mean(gate == y)),
        "gate_fire_rate": float(np.mean(gate)),
    }
    iv = y.astype(bool)
    if iv.any():
        n = len(bounds)
        delta = data["post"][idx][iv, :n] - data["pre"][idx][iv, :n]
        pred = out["residual"].numpy()[iv]
        nres, flip = targets({k: data[k][idx][iv] for k in ("pre", "post")}, bounds)
        rep.update(
            residual_mae_rad=float(np.mean(np.abs(pred - delta))),
            zero_residual_mae_rad=float(np.mean(np.abs(delta))),
            flip_accuracy=float(np.mean((torch.sigmoid(out["flip_logit"]).numpy()[iv] > 0.5) == flip)),
        )
    return rep


def train_transic(
    base_dir: str | Path, data_path: str | Path, out: str | Path, cfg: TransicConfig, log=print
) -> dict:
    """Both stages, the held-out report, and the checkpoint folder ``out``; returns the report."""
    from robot_policy.policies import load
    from robot_policy.policies.transic.checkpoint import save_transic

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    base = load(base_dir)
    for p in base.parameters():
        p.requires_grad_(False)
    data = read_corrections(data_path, base)
    n_joints = base.config.action_dim - 1
    bounds = cfg.bounds(n_joints)
    nres, flip = targets(data, bounds)
    episodes = np.unique(data["episode"])
    n_val = min(cfg.val_episodes, max(0, len(episodes) - 1))
    val_eps = episodes[len(episodes) - n_val :] if n_val else np.zeros(0, int)
    is_val = np.isin(data["episode"], val_eps)
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    iv_idx = train_idx[data["intervention"][train_idx]]
    if not len(iv_idx):
        raise ValueError(
            f"{data_path}: no intervention steps in the training episodes: nothing for the residual to learn "
            "(collect corrections where the base policy fails, e.g. in the target world)"
        )
    log(
        f"corrections: {len(episodes)} episodes, {len(data['intervention'])} steps, "
        f"{int(data['intervention'].sum())} intervention steps; {n_val} episodes held out"
    )
    head = ResidualGate(data["features"].shape[1], base.config.action_dim, bounds, cfg)
    log(f"stage 1: residual + gripper flip on {len(iv_idx)} intervention steps, {cfg.residual_steps} steps")
    l1 = train_stage_one(head, data, nres, flip, iv_idx, cfg, rng)
    log(f"stage 2: gate on {len(train_idx)} steps (balanced by subsampling), {cfg.gate_steps} steps")
    l2 = train_stage_two(head, data, train_idx, cfg, rng)
    report = {
        "base": str(Path(base_dir).resolve()),
        "data": str(Path(data_path).resolve()),
        "episodes": int(len(episodes)),
        "held_out_episodes": [int(e) for e in val_eps],
        "train": evaluate_head(head, data, train_idx, bounds, cfg.gate_threshold),
        "held_out": evaluate_head(head, data, val_idx, bounds, cfg.gate_threshold),
        "stage1_final_loss": float(np.mean(l1[-50:])),
        "stage2_final_loss": float(np.mean(l2[-50:])),
        "seconds": time.perf_counter() - t0,
    }
    save_transic(head, cfg, base_dir, out, report)
    return report


def format_report(report: dict) -> list[str]:
    lines = []
    for split in ("train", "held_out"):
        r = report.get(split) or {}
        if not r.get("steps"):
            lines.append(f"{split}: no steps")
            continue
        line = (
            f"{split}: gate precision {r['gate_precision']:.2f} recall {r['gate_recall']:.2f} "
            f"accuracy {r['gate_accuracy']:.2f} ({r['intervention_steps']}/{r['steps']} intervention steps)"
        )
        if "residual_mae_rad" in r:
            line += (
                f"; residual MAE {r['residual_mae_rad']:.4f} rad (base alone {r['zero_residual_mae_rad']:.4f}), "
                f"flip accuracy {r['flip_accuracy']:.2f}"
            )
        lines.append(line)
    return lines
