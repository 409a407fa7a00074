"""Generative policies: one interface (``Policy``), three families registered in ``POLICIES``.

``load(DIR)`` rebuilds any family from a checkpoint folder (safetensors + JSON, no pickle).
"""

from robot_policy.policies import consistency, diffusion, flow  # noqa: F401  (register the families)
from robot_policy.policies.base import POLICIES, Policy, Predictor
from robot_policy.policies.checkpoint import CheckpointError, load, read_config, read_meta, save_policy
from robot_policy.policies.config import ConsistencyConfig, DiffusionConfig, FlowConfig, PolicyConfig

__all__ = [
    "POLICIES",
    "CheckpointError",
    "ConsistencyConfig",
    "DiffusionConfig",
    "FlowConfig",
    "Policy",
    "PolicyConfig",
    "Predictor",
    "load",
    "read_config",
    "read_meta",
    "save_policy",
]
