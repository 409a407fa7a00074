"""What the policy server tells its clients before any request: the metadata frame of a
predictor (``describe``) and the message size limits that follow from its inputs."""

from __future__ import annotations

import math

import numpy as np

from robot_policy.serving.protocol import OPTION_NAMES, PROTOCOL_NAME, PROTOCOL_VERSION


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


def describe(predictor, name: str = "") -> dict:
    """The metadata frame of ``predictor`` (a ``Policy`` or an ``InferenceEngine``)."""
    import robot_policy

    cfg = predictor.config
    n_obs = int(cfg.n_obs_steps)
    keys = [*cfg.obs_keys, *cfg.image_keys]
    obs = {}
    for k in keys:
        image = k in cfg.image_keys
        obs[k] = {
            "shape": [n_obs, *map(int, cfg.obs_shapes[k])],
            "dtype": "uint8" if image else "float32",
            "image": image,
        }
    policy = getattr(predictor, "policy", predictor)
    stats = getattr(policy, "stats", {}) or {}
    normalization = {
        k: {
            s: np.asarray(v, np.float32).reshape(-1)
            for s, v in d.items()
            if s in ("min", "max", "mean", "std")
        }
        for k, d in stats.items()
    }
    report = _json_safe(getattr(predictor, "report", {}) or {})
    engine_cfg = getattr(predictor, "cfg", None)
    warm = getattr(engine_cfg, "warm_start", None)
    family_cfg = getattr(cfg, cfg.family, None)
    default_sampler = getattr(family_cfg, "sampler", None) or getattr(family_cfg, "integrator", None)
    num_params = sum(int(p.numel()) for p in policy.parameters()) if hasattr(policy, "parameters") else None
    return {
        "protocol": {
            "name": PROTOCOL_NAME,
            "version": PROTOCOL_VERSION,
            "codec": "msgpack-numpy",
            "server": f"robot_policy {robot_policy.__version__}",
            "options": list(OPTION_NAMES),
        },
        "observation": obs,
        "action": {
            "dim": int(cfg.action_dim),
            "horizon": int(cfg.horizon) - n_obs + 1,
            "fps": float(cfg.fps),
            "key": cfg.action_key,
            "dtype": "float32",
            "n_action_steps": int(cfg.n_action_steps),
        },
        "model": {
            "name": name,
            "family": cfg.family,
            "n_obs_steps": n_obs,
            "horizon": int(cfg.horizon),
            "backbone": getattr(cfg, "backbone", ""),
            "parameters": num_params,
        },
        "sampler": {
            "name": getattr(predictor, "sampler", None) or default_sampler or cfg.family,
            "num_steps": int(
                getattr(predictor, "num_steps", 0) or getattr(family_cfg, "num_inference_steps", 0)
            ),
            "warm_start": {"run_steps": int(warm.run_steps), "schedule_steps": int(warm.schedule_steps)}
            if warm is not None
            else None,
            "device": report.get("device", "cpu"),
            "precision": report.get("precision", "fp32"),
        },
        "normalization": normalization,
        "engine": report,
    }


FALLBACK_LIMIT = 64 * 2**20
"""Transport limit while the model (so the request size) is unknown: a loader without
``max_message_bytes``; the exact limit is then checked on every message."""


def message_limit(cfg) -> int:
    """Default ``max_message_bytes`` for a policy config: twice the largest valid request
    (every observation array plus a full prior and its weights), at least 1 MiB."""
    n_obs = int(cfg.n_obs_steps)
    n = 4096
    for k in [*cfg.obs_keys, *cfg.image_keys]:
        item = 1 if k in cfg.image_keys else 8  # float64 state is accepted (cast to float32)
        n += n_obs * math.prod(int(d) for d in cfg.obs_shapes[k]) * item + 128
    chunk = int(cfg.horizon) - n_obs + 1
    n += chunk * int(cfg.action_dim) * 8 + chunk * 8 + 512
    return max(2**20, 2 * n)
