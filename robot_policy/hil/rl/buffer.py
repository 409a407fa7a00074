"""Bounded replay buffers of transitions, saved as safetensors + JSON (never pickle).

A transition batch is ``dict[str, np.ndarray]`` with a leading N (see :mod:`.agent`). The
first :meth:`ReplayBuffer.add` fixes the keys, per-transition shapes and dtypes; later batches
must match (a clear error names the key). When full, the oldest transitions are overwritten
(ring buffer). HIL-SERL keeps two: the **online** buffer (everything the actor executed) and
the **offline** buffer (demonstrations + every intervention step); intervention transitions
go to both (:func:`add_transitions`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REQUIRED_KEYS = ("action", "reward", "done", "intervened", "intervention_start")
"""Keys every transition batch carries besides ``obs/<key>`` and ``next_obs/<key>``."""


class ReplayBuffer:
    """Ring buffer of transitions with uniform sampling."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.data: dict[str, np.ndarray] = {}
        self.size = 0
        self.pos = 0
        self.added = 0
        """Transitions ever added (including overwritten ones)."""

    def __len__(self) -> int:
        return self.size

    @property
    def spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """``{key: (per-transition shape, dtype name)}`` (empty before the first add)."""
        return {k: (tuple(v.shape[1:]), v.dtype.name) for k, v in self.data.items()}

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Append a batch (leading dimension N); overwrites the oldest when full."""
        if not batch:
            return
        lens = {k: len(v) for k, v in batch.items()}
        n = next(iter(lens.values()))
        if any(v != n for v in lens.values()):
            raise ValueError(f"transition batch has keys of different lengths: {lens}")
        if n == 0:
            return
        if not self.data:
            missing = [k for k in REQUIRED_KEYS if k not in batch]
            if missing:
                raise ValueError(f"transition batch lacks {missing}; keys: {sorted(batch)}")
            for k, v in batch.items():
                v = np.asarray(v)
                self.data[k] = np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
        if set(batch) != set(self.data):
            raise ValueError(f"transition keys {sorted(batch)} differ from the buffer's {sorted(self.data)}")
        if n > self.capacity:  # only the newest fit
            batch = {k: np.asarray(v)[-self.capacity :] for k, v in batch.items()}
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        for k, v in batch.items():
            v = np.asarray(v)
            if v.shape[1:] != self.data[k].shape[1:]:
                raise ValueError(
                    f"transition key {k!r} has shape {v.shape[1:]}, the buffer holds {self.data[k].shape[1:]}"
                )
            self.data[k][idx] = v
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.capacity, self.size + n))
        self.added += n

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = rng.integers(0, self.size, n)
        return {k: v[idx] for k, v in self.data.items()}

    def all(self) -> dict[str, np.ndarray]:
        """Every stored transition, oldest first."""
        order = (self.pos - self.size + np.arange(self.size)) % self.capacity
        return {k: v[order] for k, v in self.data.items()}

    def save(self, path: str | Path) -> None:
        """``<path>.safetensors`` (the stored rows, oldest first) + ``<path>.json``."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.all()
        bools = [k for k, v in rows.items() if v.dtype == np.bool_]
        tensors = {k: np.ascontiguousarray(v.astype(np.uint8) if k in bools else v) for k, v in rows.items()}
        tmp = path.with_suffix(".safetensors.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path.with_suffix(".safetensors"))  # a crash mid-write keeps the previous file
        meta = {"capacity": self.capacity, "size": self.size, "added": self.added, "bool_keys": bools}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path, capacity: int | None = None) -> ReplayBuffer:
        from safetensors.numpy import load_file

        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        buf = cls(int(capacity or meta["capacity"]))
        if meta["size"]:
            rows = load_file(str(path.with_suffix(".safetensors")))
            for k in meta["bool_keys"]:
                rows[k] = rows[k].astype(bool)
            buf.add(rows)
        buf.added = int(meta["added"])
        return buf


def add_transitions(online: ReplayBuffer, offline: ReplayBuffer, batch: dict[str, np.ndarray]) -> None:
    """HIL-SERL routing: everything to ``online``; intervention steps to ``offline`` as well."""
    online.add(batch)
    mask = np.asarray(batch["intervened"], bool).reshape(-1)
    if mask.any():
        offline.add({k: np.asarray(v)[mask] for k, v in batch.items()})
