"""Episode store (zarr, Diffusion Policy layout), sequence sampler and train/val split.

    from robot_policy.data import EpisodeStore, KeySpec, SequenceDataset, train_val_split

See docs/store.md for the layout, the crash-safety guarantee and the codec measurements.
The sampler (which imports torch) loads on first use, so recorders and CLI tools that only
write or inspect stores start fast.
"""

from robot_policy.data.schema import EpisodeValidationError, KeySpec
from robot_policy.data.store import EpisodeStore, EpisodeWriter, StoreError

__all__ = [
    "EpisodeStore",
    "EpisodeWriter",
    "EpisodeValidationError",
    "KeySpec",
    "SequenceDataset",
    "StoreError",
    "train_val_split",
]


def __getattr__(name: str):
    if name in ("SequenceDataset", "train_val_split"):
        from robot_policy.data import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'robot_policy.data' has no attribute {name!r}")
