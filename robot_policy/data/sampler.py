"""Training access: windows of observations and actions, and an episode-level split.

``WindowIndex`` is the one window rule (which frames a window reads, how it pads at episode
edges); ``SequenceDataset`` reads windows by that rule, one at a time for a torch DataLoader or
a batch at a time with one numpy gather per key (the training loop, ``robot_policy.train``).
"""

from __future__ import annotations

import numpy as np

from robot_policy.data.layout import VALID_KEY
from robot_policy.data.store import EpisodeStore

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


class WindowIndex:
    """Which frames every training window reads: the one index and edge-padding rule.

    Built from the lengths of the selected episodes. Window ``w`` has a *current step*
    ``current[w]`` in selected episode ``episode[w]``; with ``To = n_obs_steps`` and
    ``H = horizon`` it covers steps ``t - To + 1 ... t - To + H`` of that episode (Diffusion
    Policy's convention: the action sequence starts with the first observation). Steps before
    the episode's start or past its end repeat the edge frame, so windows never cross episodes.

    Current steps run from 0 (``To - 1`` padded steps before the start, Diffusion Policy's
    ``pad_before``) to the last one whose window pads at most ``pad_after`` steps past the end
    (default ``H - To``: every frame is a current step once). An episode too short for any
    window under that limit gives none, unless ``keep_short``: then it gives one, at step 0.

    ``frame_ok`` (one bool per frame of the selected episodes, back to back) drops every window
    that reads a frame marked False: recordings mark frames next to a stream gap (the store's
    ``valid`` key), and a window across a gap would teach a jump that never happened.
    """

    def __init__(
        self,
        lengths,
        n_obs_steps: int,
        horizon: int,
        pad_after: int | None = None,
        keep_short: bool = False,
        frame_ok: np.ndarray | None = None,
    ) -> None:
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError(f"n_obs_steps and horizon must be >= 1, got {n_obs_steps}, {horizon}")
        if horizon < n_obs_steps:
            raise ValueError(
                f"horizon ({horizon}) must be >= n_obs_steps ({n_obs_steps}): actions start with the first observation"
            )
        self.n_obs_steps = int(n_obs_steps)
        self.horizon = int(horizon)
        self.pad_after = horizon - n_obs_steps if pad_after is None else int(pad_after)
        if self.pad_after < 0:
            raise ValueError(f"pad_after must be >= 0, got {pad_after}")
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        # Windows per episode: current steps 0 .. L-1-cut, where cut is how far a window at
        # the last frame would pad past pad_after.
        cut = max(0, (self.horizon - self.n_obs_steps) - self.pad_after)
        n_win = np.maximum(self.lengths - cut, 0)
        if keep_short:
            n_win[(n_win == 0) & (self.lengths > 0)] = 1
        self.episode = np.repeat(np.arange(len(self.lengths), dtype=np.int64), n_win)
        first_window = np.cumsum(n_win) - n_win
        self.current = np.arange(int(n_win.sum()), dtype=np.int64) - np.repeat(first_window, n_win)
        self.skipped = 0
        if frame_ok is not None:
            self._drop_windows_across_gaps(np.asarray(frame_ok, dtype=bool).reshape(-1))

    def _drop_windows_across_gaps(self, frame_ok: np.ndarray) -> None:
        if frame_ok.shape[0] != int(self.lengths.sum()):
            raise ValueError(f"frame_ok has {frame_ok.shape[0]} flags for {int(self.lengths.sum())} frames")
        # Bad frames before each frame (prefix sums): a window is clean when none lie in its span.
        bad_before = np.concatenate([[0], np.cumsum(~frame_ok)])
        base = (np.cumsum(self.lengths) - self.lengths)[self.episode]
        idx = np.arange(len(self))
        span = self.steps(idx, self.horizon)
        clean = bad_before[base + span[:, -1] + 1] == bad_before[base + span[:, 0]]
        self.skipped = int((~clean).sum())
        self.episode, self.current = self.episode[clean], self.current[clean]

    def __len__(self) -> int:
        return int(self.current.shape[0])

    def steps(self, idx: np.ndarray, count: int) -> np.ndarray:
        """``(B, count)`` steps within their episode read by windows ``idx``, edge-padded:
        steps ``t - To + 1 ...`` clipped to ``[0, L - 1]`` (non-decreasing along a row)."""
        first = self.current[idx] - (self.n_obs_steps - 1)
        steps = first[:, None] + np.arange(count)[None]
        return np.clip(steps, 0, self.lengths[self.episode[idx]][:, None] - 1)


class SequenceDataset(_TorchDataset):
    """A torch ``Dataset`` of training windows, one per frame of the selected episodes.

    Item ``i`` is the window whose *current step* is frame ``t`` (the ``i``-th frame over the
    selected episodes). With ``To = n_obs_steps`` and ``H = horizon`` the window covers frames
    ``t - To + 1 ... t - To + H`` (Diffusion Policy's convention: the action sequence starts
    with the first observation)::

        {"obs": {key: (To, *shape)}, "action": (H, A)}

    Frames before an episode's start or past its end repeat the edge frame (padding), so
    windows never cross episodes. ``pad_after`` (default ``H - To``) is how many padded frames a
    window may have after the end; a smaller value drops the last windows of each episode, and
    ``keep_short`` keeps one window of an episode too short for any (``WindowIndex``).
    ``skip_gaps``: leave out windows that read a frame the store's ``valid`` mask flags (a
    recorded stream had a gap there); stores without the key have no such frames.
    ``in_memory_keys``: keys whose frames of the selected episodes are loaded into RAM up front
    (default: every key for which they take less than 256 MB, i.e. low-dim keys; the others,
    images, are then read from zarr per window). ``batch(idx)`` gathers many windows at once.
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
        keep_short: bool = False,
        skip_gaps: bool = True,
    ) -> None:
        unknown = [k for k in [*obs_keys, action_key] if k not in store.schema]
        if unknown:
            raise KeyError(f"keys {unknown} not in the store (it has {store.keys})")
        self.store = store
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        n_ep = store.num_episodes
        eps = np.arange(n_ep) if episodes is None else np.asarray(episodes, dtype=np.int64).reshape(-1)
        if eps.size and (eps.min() < 0 or eps.max() >= n_ep):
            raise IndexError(f"episodes {eps.tolist()} out of range: the store has {n_ep}")
        self.episodes = eps
        ends = store.episode_ends
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        self._ep_start = starts[eps]  # first frame of each selected episode in the store
        self._ep_len = (ends[eps] - starts[eps]).astype(np.int64)
        # ... and in arrays held in RAM, which hold only the selected episodes, back to back
        self._ram_start = np.cumsum(self._ep_len) - self._ep_len
        # Recordings with stream gaps carry a per-frame, per-stream ``valid`` mask (recorder).
        frame_ok = None
        if skip_gaps and VALID_KEY in store.schema:
            frame_ok = _read_episodes(store.array(VALID_KEY), self._ep_start, self._ep_len)
            frame_ok = frame_ok.reshape(len(frame_ok), -1).all(axis=1)
        self.index = WindowIndex(self._ep_len, n_obs_steps, horizon, pad_after, keep_short, frame_ok)
        self.n_obs_steps, self.horizon, self.pad_after = (
            self.index.n_obs_steps,
            self.index.horizon,
            self.index.pad_after,
        )
        self._arrays: dict[str, object] = {}
        for k in dict.fromkeys([*self.obs_keys, action_key]):
            self._arrays[k] = self._maybe_in_memory(k, in_memory_keys)

    def _maybe_in_memory(self, key: str, in_memory_keys):
        arr = self.store.array(key)
        frame_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
        n = int(self._ep_len.sum())
        wanted = n * frame_bytes <= IN_MEMORY_BYTES if in_memory_keys is None else key in in_memory_keys
        return _read_episodes(arr, self._ep_start, self._ep_len) if wanted else arr

    def __getstate__(self) -> dict:
        # DataLoader workers started with "spawn" get a pickled copy: send arrays held in RAM,
        # and for the rest only the store's path; each worker reopens the store read-only.
        state = self.__dict__.copy()
        state["store"] = None
        state["_store_path"] = self.store.path
        state["_arrays"] = {k: (v if isinstance(v, np.ndarray) else None) for k, v in self._arrays.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.store = EpisodeStore.open(state["_store_path"], "r")
        for k, v in self._arrays.items():
            if v is None:
                self._arrays[k] = self.store.array(k)

    def __len__(self) -> int:
        return len(self.index)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} windows")
        return i % n

    def locate(self, i: int) -> tuple[int, int]:
        """(episode index in the store, current step within that episode) of item ``i``."""
        i = self._check_index(int(i))
        return int(self.episodes[self.index.episode[i]]), int(self.index.current[i])

    def _gather(self, key: str, j: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Frames ``(B, count, *shape)`` of ``key`` at ``steps`` (B, count) of selected episodes ``j``."""
        arr = self._arrays[key]
        if isinstance(arr, np.ndarray):
            return arr[self._ram_start[j][:, None] + steps]
        # On disk: one contiguous read per window (each chunk decoded once), then the padded picks.
        out = []
        for jj, row in zip(j, steps):
            lo, hi = int(row[0]), int(row[-1]) + 1
            base = int(self._ep_start[jj])
            out.append(np.asarray(arr[base + lo : base + hi])[row - lo])
        return np.stack(out)

    def _take(self, idx: np.ndarray) -> dict:
        j = self.index.episode[idx]
        steps = self.index.steps(idx, self.horizon)
        obs = {k: self._gather(k, j, steps[:, : self.n_obs_steps]) for k in self.obs_keys}
        return {"obs": obs, "action": self._gather(self.action_key, j, steps)}

    def batch(self, idx) -> dict:
        """Windows ``idx`` -> ``{"obs": {k: (B, To, ...)}, "action": (B, H, A)}`` numpy arrays,
        actions as float32 (what the losses take). One numpy gather per key held in RAM."""
        b = self._take(np.asarray(idx, dtype=np.int64).reshape(-1))
        b["action"] = b["action"].astype(np.float32)
        return b

    def __getitem__(self, i: int) -> dict:
        b = self._take(np.array([self._check_index(int(i))]))
        return {"obs": {k: v[0] for k, v in b["obs"].items()}, "action": b["action"][0]}


def _read_episodes(arr, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Frames of the given episodes, back to back; adjacent episodes are read as one slice."""
    runs: list[list[int]] = []  # [lo, hi) frame ranges
    for s, n in zip(starts.tolist(), lengths.tolist()):
        if runs and runs[-1][1] == s:
            runs[-1][1] += n
        else:
            runs.append([s, s + n])
    parts = [np.asarray(arr[lo:hi]) for lo, hi in runs] or [np.asarray(arr[0:0])]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
