"""Episode store (zarr, Diffusion Policy layout), sequence sampler and train/val split.

    from robot_policy.data import EpisodeStore, KeySpec, SequenceDataset, train_val_split

See docs/store.md for the layout, the crash-safety guarantee and the codec measurements.
"""

from robot_policy.data.sampler import SequenceDataset, train_val_split
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
