"""TRANSIC (Jiang et al., CoRL 2024): a residual policy and a learned intervention gate on top of
a frozen base policy, trained from human corrections; docs/transic.md.

```python
from robot_policy.hil.transic import load_gated
policy = load_gated("runs/transic")          # base + head, base hash checked
chunk = policy.predict(obs_history)         # a Predictor like any policy or engine
```
"""

# The deployed half (model, checkpoint, gated predictor) sits with the policies (layer 2) so the
# checkpoint loader and the policy node can load a TRANSIC folder; training lives here.
from robot_policy.policies.transic import (
    MODES,
    BaseMismatchError,
    GatedPolicy,
    ResidualGate,
    TransicConfig,
    balanced_indices,
    base_hash,
    compose,
    is_transic_checkpoint,
    load_gated,
    load_head,
    save_transic,
)

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
