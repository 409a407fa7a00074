"""Training windows from an episode store, held in memory and gathered with vectorized indexing.

Windows follow Diffusion Policy's SequenceSampler: a window of ``horizon`` steps may start up to
``n_obs_steps - 1`` steps before an episode and end up to ``n_action_steps - 1`` steps after it;
out-of-episode steps repeat the first/last frame. The first ``n_obs_steps`` frames are the
observation history, all ``horizon`` actions the target. Same layout as
``robot_policy.data.SequenceDataset``, but one numpy gather per batch instead of a Python call per
sample, which matters on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


class WindowSampler:
    def __init__(
        self,
        store,
        keys: list[str],
        action_key: str,
        n_obs_steps: int,
        horizon: int,
        n_action_steps: int,
        episodes: list[int] | np.ndarray | None = None,
    ):
        episodes = list(range(store.num_episodes)) if episodes is None else [int(e) for e in episodes]
        if not episodes:
            raise ValueError("no episodes to train on (empty dataset or empty split)")
        self.keys, self.action_key = list(keys), action_key
        self.n_obs_steps, self.horizon = n_obs_steps, horizon
        data: dict[str, list[np.ndarray]] = {k: [] for k in [*self.keys, action_key]}
        ep_start, ep_len, offs = [], [], []
        pos = 0
        pad_before, pad_after = n_obs_steps - 1, n_action_steps - 1
        for e in episodes:
            ep = store.get_episode(e)
            length = len(ep[action_key])
            for k in data:
                if k not in ep:
                    raise KeyError(f"dataset episode {e} has no key '{k}'; keys: {sorted(ep)}")
                data[k].append(np.asarray(ep[k]))
            starts = np.arange(-pad_before, max(length - horizon + pad_after, -pad_before) + 1)
            ep_start.append(np.full(len(starts), pos))
            ep_len.append(np.full(len(starts), length))
            offs.append(starts)
            pos += length
        self.data = {k: np.concatenate(v) for k, v in data.items()}
        self.ep_start = np.concatenate(ep_start)
        self.ep_len = np.concatenate(ep_len)
        self.offset = np.concatenate(offs)
        self.num_frames = pos

    def __len__(self) -> int:
        return len(self.offset)

    def batch(self, idx: np.ndarray) -> dict:
        """Windows ``idx`` -> ``{"obs": {k: (B, To, ...)}, "action": (B, Tp, A)}`` numpy arrays."""
        steps = self.offset[idx][:, None] + np.arange(self.horizon)[None]
        steps = np.clip(steps, 0, self.ep_len[idx][:, None] - 1) + self.ep_start[idx][:, None]
        obs = {k: self.data[k][steps[:, : self.n_obs_steps]] for k in self.keys}
        return {"obs": obs, "action": self.data[self.action_key][steps].astype(np.float32)}


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
