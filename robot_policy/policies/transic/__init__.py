"""What a deployed TRANSIC policy needs (Jiang et al., CoRL 2024; docs/transic.md): the residual
head + intervention gate, its checkpoint (base referenced by path and sha256) and the gated
predictor. Here, beside the other policies, so that the checkpoint loader, evaluation and the
policy node can load one; training from corrections lives in ``robot_policy.hil.transic``.
"""

from robot_policy.policies.transic.checkpoint import (
    BaseMismatchError,
    base_hash,
    is_transic_checkpoint,
    load_head,
    save_transic,
)
from robot_policy.policies.transic.gated import GatedPolicy, load_gated
from robot_policy.policies.transic.model import MODES, ResidualGate, TransicConfig, balanced_indices, compose

__all__ = [
    "MODES",
    "BaseMismatchError",
    "GatedPolicy",
    "ResidualGate",
    "TransicConfig",
    "balanced_indices",
    "base_hash",
    "compose",
    "is_transic_checkpoint",
    "load_gated",
    "load_head",
    "save_transic",
]
