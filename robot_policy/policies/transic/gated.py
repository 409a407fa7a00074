"""The deployed TRANSIC policy: a ``Predictor`` like the project's policies and engines.

``predict(obs_history)`` asks the base predictor (the frozen policy, or an ``InferenceEngine``
serving it) for its chunk, computes the base's observation features once, and runs the
residual/gate head on every action of the chunk (features from this observation, each action
as the base action). Mode 'gated' adds the bounded residual (and flips the gripper when the
flip head says so) where the gate fires and leaves the base action elsewhere; 'always' adds it
everywhere (the no-gate baseline); 'off' serves the base alone. Whatever comes out still
passes the robot's safety layer (joint and velocity limits, watchdog) downstream, like every
command; here only the residual's own bound and the gripper range apply.

The last decision and running counts are on :meth:`diagnostics` (the policy node puts them
on ``/diagnostics``) and in :attr:`last`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_policy.policies.transic.model import MODES, ResidualGate, TransicConfig, compose
from robot_policy.types import ActionChunk


class GatedPolicy:
    """Base policy + TRANSIC head. ``config`` is the base's (keys, horizon, fps)."""

    def __init__(
        self,
        base,
        head: ResidualGate,
        cfg: TransicConfig,
        predictor=None,
        mode: str | None = None,
        source: str = "",
    ):
        self.base = base
        """The frozen base ``Policy`` (its encoder gives the head's features)."""
        self.predictor = predictor or base
        """What samples the base's chunk: the policy itself or an engine wrapping it."""
        self.head = head.eval()
        self.transic = cfg
        self.mode = mode or cfg.mode
        if self.mode not in MODES:
            raise ValueError(f"TRANSIC mode must be one of {MODES}, got {self.mode!r}")
        self.source = source
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.last: dict[str, float] = {}
        # Per-action decisions of the last few chunks, by start time: the policy node publishes
        # them beside each plan (``annotations``), the recorder files them per executed action.
        self._chunks: deque = deque(maxlen=8)
        self.totals = {"actions": 0, "gated": 0, "flips": 0, "residual_sum": 0.0}

    # ---- Predictor protocol ---------------------------------------------------------------
    @property
    def config(self):
        return self.base.config

    @property
    def stats(self):
        return self.base.stats

    def default_steps(self) -> int:
        return self.base.default_steps()

    def served_by(self, predictor) -> GatedPolicy:
        """The same gated policy with the base chunk sampled by ``predictor`` (e.g. an engine)."""
        return GatedPolicy(self.base, self.head, self.transic, predictor, self.mode, self.source)

    def with_mode(self, mode: str) -> GatedPolicy:
        return GatedPolicy(
            self.base, self.head, replace(self.transic, mode=mode), self.predictor, mode, self.source
        )

    def reset(self) -> None:
        self.predictor.reset()

    def reseed(self, seed: int) -> None:
        """The base's sampler noise from ``seed`` (see ``InferenceEngine.reseed``)."""
        reseed = getattr(self.predictor, "reseed", None)
        if reseed is not None:
            reseed(seed)

    def to(self, device):
        self.base.to(device)
        self.head.to(device)
        return self

    def eval(self):
        return self

    @torch.no_grad()
    def decide(self, obs: Mapping, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Head outputs for ``actions`` (T, A) proposed from the observation history ``obs``."""
        base = self.base
        nobs = base.normalize_obs(base.batch_of_one(obs))
        # A serving engine may have cast the base's networks to bf16 (validated against fp32):
        # encode in the weights' precision, hand the head fp32 features.
        dtype = next(base.parameters()).dtype
        device = next(base.parameters()).device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            feats = base.encode(nobs).float()  # (1, C)
        acts = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=feats.device)
        nact = base.normalize_action(acts)
        out = self.head(feats.expand(len(acts), -1), nact)
        thr = self.transic.gate_threshold
        return {
            "residual": out["residual"].cpu().numpy(),
            "flip": (torch.sigmoid(out["flip_logit"]) > 0.5).cpu().numpy(),
            "gate_prob": torch.sigmoid(out["gate_logit"]).cpu().numpy(),
            "gate": (torch.sigmoid(out["gate_logit"]) > thr).cpu().numpy(),
        }

    def predict(
        self,
        obs: Mapping,
        prior: Any = None,
        start_time: float = 0.0,
        num_steps: int | None = None,
        **kwargs,
    ) -> ActionChunk:
        chunk = self.predictor.predict(obs, prior=prior, start_time=start_time, num_steps=num_steps, **kwargs)
        actions = np.asarray(chunk.actions, dtype=np.float32)
        if self.mode == "off":
            self._note(np.zeros(len(actions), bool), np.zeros((len(actions), 1)), np.zeros(len(actions)), [])
            return chunk
        d = self.decide(obs, actions)
        cmd = compose(actions, d["residual"], d["flip"], d["gate"], self.mode)
        applied = d["gate"] if self.mode == "gated" else np.ones(len(actions), bool)
        self._note(applied, d["residual"], d["gate_prob"], d["flip"] & applied)
        values = np.stack(
            [applied.astype(np.float32), d["gate_prob"], np.linalg.norm(d["residual"], axis=-1) * applied], -1
        )
        self._chunks.append((float(chunk.start_time), float(chunk.dt), values.astype(np.float32)))
        return ActionChunk(actions=cmd, start_time=chunk.start_time, dt=chunk.dt)

    def annotations(self, start_time: float, times: np.ndarray) -> dict[str, np.ndarray]:
        """Per-action decisions (``conventions.TRANSIC_KEYS``) of the chunk that started at
        ``start_time``, at execution ``times`` (a plan cut from it). Times outside that chunk,
        or a chunk no longer kept, read as "no decision" (gate 0, probability -1, residual 0)."""
        from robot_policy.conventions import TRANSIC_KEYS, TRANSIC_NO_DECISION

        times = np.asarray(times, dtype=np.float64)
        out = np.tile(np.array(TRANSIC_NO_DECISION, np.float32), (len(times), 1))
        for start, dt, values in reversed(self._chunks):
            if abs(start - start_time) <= 0.25 * dt:
                idx = np.round((times - start) / dt).astype(int)
                ok = (idx >= 0) & (idx < len(values))
                out[ok] = values[idx[ok]]
                break
        return {k: out[:, i] for i, k in enumerate(TRANSIC_KEYS)}

    def _note(self, applied, residual, gate_prob, flips) -> None:
        # The first action is the one executed now: that is the decision reported.
        n = self.config.n_action_steps
        mag = np.linalg.norm(np.asarray(residual)[:n] * np.asarray(applied)[:n, None], axis=-1)
        self.last = {
            "gate": float(bool(applied[0])) if len(applied) else 0.0,
            "gate_prob": float(gate_prob[0]) if len(gate_prob) else 0.0,
            "residual_norm": float(mag[0]) if len(mag) else 0.0,
        }
        k = min(n, len(applied))
        self.totals["actions"] += k
        self.totals["gated"] += int(np.sum(applied[:k]))
        self.totals["flips"] += int(np.sum(np.asarray(flips, bool)[:k])) if len(flips) else 0
        self.totals["residual_sum"] += float(np.sum(mag[:k]))

    def summary(self) -> dict:
        """Over every executed-horizon action so far: how often the residual was applied, its mean size."""
        t = self.totals
        n = max(1, t["actions"])
        return {
            "mode": self.mode,
            "gate_fire_rate": t["gated"] / n,
            "gripper_flips": t["flips"],
            "mean_residual_norm_rad": t["residual_sum"] / max(1, t["gated"]),
        }

    def diagnostics(self) -> dict[str, str]:
        """Key/values for /diagnostics (the policy runner merges them into its own)."""
        s = self.summary()
        return {
            "transic_mode": self.mode,
            "transic_gate": "1" if self.last.get("gate") else "0",
            "transic_gate_prob": f"{self.last.get('gate_prob', 0.0):.3f}",
            "transic_residual_norm_rad": f"{self.last.get('residual_norm', 0.0):.4f}",
            "transic_gate_fire_rate": f"{s['gate_fire_rate']:.3f}",
        }


def load_gated(
    path: str | Path, device: str = "cpu", base: str | Path | None = None, mode: str | None = None
) -> GatedPolicy:
    """A TRANSIC folder -> a ready :class:`GatedPolicy` (base loaded and hash-checked)."""
    from robot_policy.policies.checkpoint import load
    from robot_policy.policies.transic.checkpoint import load_head

    head, cfg, base_dir = load_head(path, base=base, device=device)
    policy = load(base_dir, device=device)
    return GatedPolicy(policy, head, cfg, mode=mode, source=str(path))
