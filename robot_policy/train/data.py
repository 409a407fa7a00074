"""Training windows for the training loop, and the dataset fingerprint a checkpoint records.

The windows are ``robot_policy.data.SequenceDataset``'s (one window rule, ``WindowIndex``),
with every key held in RAM so that a batch is one numpy gather per key instead of a Python call
per sample, which matters on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from robot_policy.data.sampler import SequenceDataset


def training_windows(
    store,
    keys: list[str],
    action_key: str,
    n_obs_steps: int,
    horizon: int,
    n_action_steps: int,
    episodes: list[int] | np.ndarray | None = None,
) -> SequenceDataset:
    """Windows as Diffusion Policy's SequenceSampler makes them for training.

    A window of ``horizon`` steps starts up to ``n_obs_steps - 1`` steps before an episode and
    ends up to ``n_action_steps - 1`` steps after it (out-of-episode steps repeat the edge
    frame); an episode too short for that still gives one window, so no demonstration is
    dropped. The first ``n_obs_steps`` frames are the observation history (every key in
    ``keys``), all ``horizon`` actions the target; sample with ``.batch(idx)``.
    """
    episodes = list(range(store.num_episodes)) if episodes is None else [int(e) for e in episodes]
    if not episodes:
        raise ValueError("no episodes to train on (empty dataset or empty split)")
    return SequenceDataset(
        store,
        keys,
        action_key,
        n_obs_steps,
        horizon,
        episodes=episodes,
        pad_after=n_action_steps - 1,
        in_memory_keys=[*keys, action_key],
        keep_short=True,
    )


def dataset_fingerprint(store) -> str:
    """sha256 over schema, episode boundaries and statistics: changes whenever the data does."""
    h = hashlib.sha256()
    schema = {k: repr(v) for k, v in store.schema.items()}
    h.update(json.dumps(schema, sort_keys=True).encode())
    h.update(np.asarray(store.episode_ends, dtype=np.int64).tobytes())
    for k, st in sorted(store.stats().items()):
        for s in sorted(st):
            h.update(k.encode() + s.encode() + np.asarray(st[s], dtype=np.float64).tobytes())
    return h.hexdigest()
