"""Episode store (zarr, Diffusion Policy layout), sequence sampler and train/val split.

    from robot_policy.data import EpisodeStore, KeySpec, SequenceDataset, train_val_split

See docs/store.md for the layout, the crash-safety guarantee and the codec measurements.
Every name loads its module on first use: the sampler imports torch and the store zarr, so
recorders and CLI tools that only write or inspect stores, or only need codec names, start fast.

Modules, each importing only modules listed before it (no cycles): ``layout`` (on-disk
names, StoreError), ``codecs`` (the public codec API: names, numcodecs objects, zarr
registration), ``schema``, ``stats``, ``_zarr_io`` (zarr plumbing, writer locks), ``writer``
(EpisodeWriter and the EpisodeSink it writes through), ``store`` (EpisodeStore), then
``sampler``, ``convert`` and ``validate``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_policy.data.layout import StoreError
    from robot_policy.data.sampler import SequenceDataset, train_val_split
    from robot_policy.data.schema import EpisodeValidationError, KeySpec
    from robot_policy.data.store import EpisodeStore
    from robot_policy.data.writer import EpisodeWriter

# Public name -> module defining it. Loaded on first use: importing a light submodule (codec
# names for a CLI's --help, the layout names) must not pull in zarr or torch.
_EXPORTS = {
    "EpisodeStore": "store",
    "EpisodeWriter": "writer",
    "EpisodeValidationError": "schema",
    "KeySpec": "schema",
    "SequenceDataset": "sampler",
    "StoreError": "layout",
    "train_val_split": "sampler",
}
__all__ = [
    "EpisodeStore",
    "EpisodeValidationError",
    "EpisodeWriter",
    "KeySpec",
    "SequenceDataset",
    "StoreError",
    "train_val_split",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'robot_policy.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"robot_policy.data.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value
