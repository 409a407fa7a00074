"""Training access: windows of observations and actions, and an episode-level split."""

from __future__ import annotations

import numpy as np

try:  # torch is a core dependency, but keep the sampler importable in tooling without it
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover
    _TorchDataset = object

# Keys whose committed frames take less than this are held in RAM (low-dim keys always are in
# practice); bigger ones (images) are read from zarr per window.
IN_MEMORY_BYTES = 256 << 20


def train_val_split(
    num_episodes: int, val_ratio: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split episode indices (never frames: windows of one episode stay on one side).

    At least one validation episode when ``val_ratio > 0`` and there are two or more episodes,
    and always at least one training episode. Deterministic for a given ``seed``.
    """
    if num_episodes < 0:
        raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    n_val = int(round(num_episodes * val_ratio))
    if val_ratio > 0 and num_episodes >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, max(0, num_episodes - 1))
    perm = np.random.default_rng(seed).permutation(num_episodes)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


class SequenceDataset(_TorchDataset):
    """A torch ``Dataset`` of training windows, one per frame of the selected episodes.

    Item ``i`` is the window whose *current step* is frame ``t`` (the ``i``-th frame over the
    selected episodes). With ``To = n_obs_steps`` and ``H = horizon`` the window covers frames
    ``t - To + 1 ... t - To + H`` (Diffusion Policy's convention: the action sequence starts
    with the first observation)::

        {"obs": {key: (To, *shape)}, "action": (H, A)}

    Frames before an episode's start or past its end repeat the edge frame (padding), so
    windows never cross episodes. ``pad_after`` (default ``H - To``) is how many padded frames a
    window may have after the end; a smaller value drops the last windows of each episode.
    ``in_memory_keys``: keys loaded into RAM up front (default: every key whose committed
    frames take less than 256 MB, i.e. low-dim keys; images are then read from zarr per window).
    """

    def __init__(
        self,
        store,
        obs_keys: list[str],
        action_key: str = "action",
        n_obs_steps: int = 2,
        horizon: int = 16,
        episodes=None,
        pad_after: int | None = None,
        in_memory_keys: list[str] | None = None,
    ) -> None:
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be >= 1, got {n_obs_steps}, {horizon}")
        if horizon < n_obs_steps:
            raise ValueError(
                f"horizon ({horizon}) must be >= n_obs_steps ({n_obs_steps}): actions start with the first observation"
            )
        unknown = [k for k in [*obs_keys, action_key] if k not in store.schema]
        if unknown:
            raise KeyError(f"keys {unknown} not in the store (it has {store.keys})")
        self.store = store
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.n_obs_steps = int(n_obs_steps)
        self.horizon = int(horizon)
        self.pad_after = horizon - n_obs_steps if pad_after is None else int(pad_after)
        if self.pad_after < 0:
            raise ValueError(f"pad_after must be >= 0, got {pad_after}")
        n_ep = store.num_episodes
        eps = np.arange(n_ep) if episodes is None else np.asarray(episodes, dtype=np.int64).reshape(-1)
        if eps.size and (eps.min() < 0 or eps.max() >= n_ep):
            raise IndexError(f"episodes {eps.tolist()} out of range: the store has {n_ep}")
        self.episodes = eps
        ends = store.episode_ends
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        self._ep_start = starts[eps]
        self._ep_len = (ends[eps] - starts[eps]).astype(np.int64)
        # Windows per episode: current steps 0 .. L-1-cut, where cut is how far a window at
        # the last frame would pad past pad_after.
        cut = max(0, (self.horizon - self.n_obs_steps) - self.pad_after)
        self._n_win = np.maximum(self._ep_len - cut, 0)
        self._cum = np.cumsum(self._n_win)
        self._arrays: dict[str, object] = {}
        for k in dict.fromkeys([*self.obs_keys, action_key]):
            self._arrays[k] = self._maybe_in_memory(k, in_memory_keys)

    def _maybe_in_memory(self, key: str, in_memory_keys):
        arr = self.store.array(key)
        n = self.store.num_frames
        frame_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        wanted = n * frame_bytes <= IN_MEMORY_BYTES if in_memory_keys is None else key in in_memory_keys
        return np.asarray(arr[:n]) if wanted else arr

    def __getstate__(self) -> dict:
        # DataLoader workers started with "spawn" get a pickled copy: send arrays held in RAM,
        # and for the rest only the store's path; each worker reopens the store read-only.
        state = self.__dict__.copy()
        state["store"] = None
        state["_store_path"] = self.store.path
        state["_arrays"] = {k: (v if isinstance(v, np.ndarray) else None) for k, v in self._arrays.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        from robot_policy.data.store import EpisodeStore

        self.__dict__.update(state)
        self.store = EpisodeStore.open(state["_store_path"], "r")
        for k, v in self._arrays.items():
            if v is None:
                self._arrays[k] = self.store.array(k)

    def __len__(self) -> int:
        return int(self._cum[-1]) if len(self._cum) else 0

    def locate(self, i: int) -> tuple[int, int]:
        """(episode index in the store, current step within that episode) of item ``i``."""
        j, t = self._locate_selected(i)
        return int(self.episodes[j]), t

    def _locate_selected(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} windows")
        i %= n
        j = int(np.searchsorted(self._cum, i, side="right"))
        before = int(self._cum[j - 1]) if j > 0 else 0
        return j, i - before

    def _read(self, key: str, j: int, first: int, count: int) -> np.ndarray:
        """Frames ``first .. first+count-1`` of selected episode ``j``, edge-padded."""
        length = int(self._ep_len[j])
        idx = np.clip(np.arange(first, first + count), 0, length - 1)
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        base = int(self._ep_start[j])
        block = np.asarray(self._arrays[key][base + lo : base + hi])
        return block[idx - lo]

    def __getitem__(self, i: int) -> dict:
        j, t = self._locate_selected(int(i))
        first = t - self.n_obs_steps + 1
        obs = {k: self._read(k, j, first, self.n_obs_steps) for k in self.obs_keys}
        action = self._read(self.action_key, j, first, self.horizon)
        return {"obs": obs, "action": action}
