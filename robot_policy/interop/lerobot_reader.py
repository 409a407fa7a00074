"""LeRobotDataset v3.x folders read with pyarrow and PyAV (no ``lerobot``): metadata, episode
rows, and video frames found by timestamp."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from robot_policy import conventions as conv
from robot_policy.interop import require
from robot_policy.interop import video as vid
from robot_policy.interop.lerobot_format import (
    DEFAULT_FEATURES,
    IMAGE_PREFIX,
    INFO_PATH,
    TASKS_PATH,
    TOLERANCE_S,
)


def column_to_numpy(col, n_rows: int) -> np.ndarray:
    """A pyarrow column (scalar, list or fixed-size list) as a numpy array (rows, ...)."""
    import pyarrow as pa

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if (
        pa.types.is_fixed_size_list(arr.type)
        or pa.types.is_list(arr.type)
        or pa.types.is_large_list(arr.type)
    ):
        flat = arr.flatten()
        out = flat.to_numpy(zero_copy_only=False)
        return out.reshape(n_rows, -1) if n_rows else out.reshape(0, max(1, len(out)))
    return arr.to_numpy(zero_copy_only=False)


class LeRobotFolder:
    """A LeRobot v3 dataset folder read with pyarrow and PyAV (the import's reader)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.pq = require("pyarrow.parquet")
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.exists():
            raise FileNotFoundError(f"{self.root} is not a LeRobot dataset: no {INFO_PATH}")
        self.info = json.loads(info_path.read_text())
        version = str(self.info.get("codebase_version", "?"))
        if not version.startswith("v3"):
            raise ValueError(
                f"{self.root}: codebase_version {version!r}; only LeRobotDataset v3.x is read. Convert it with "
                "'python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=...' first"
            )
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        self.episodes = self._read_episodes()
        self.num_episodes = len(self.episodes)
        self.tasks = self._read_tasks()
        own = self.info.get("robot_policy") or {}
        self.mapping: dict[str, dict] = own.get("keys") or self._derive_mapping()
        self._tables: dict[Path, object] = {}
        self._cursor: dict[str, _VideoCursor] = {}

    def _read_episodes(self) -> list[dict]:
        paths = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not paths:
            raise FileNotFoundError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet")
        rows: list[dict] = []
        for p in paths:
            t = self.pq.read_table(p)
            keep = [c for c in t.column_names if not c.startswith("stats/")]
            rows += t.select(keep).to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        for i, r in enumerate(rows):
            if r["episode_index"] != i:
                raise ValueError(
                    f"{self.root}: episode indices are not 0..N-1 (found {r['episode_index']} at row {i})"
                )
        return rows

    def _read_tasks(self) -> dict[int, str]:
        path = self.root / TASKS_PATH
        if not path.exists():
            return {}
        t = self.pq.read_table(path)
        idx = t.column("task_index").to_pylist()
        text_col = "task" if "task" in t.column_names else None
        if text_col is None:
            meta = json.loads((t.schema.metadata or {}).get(b"pandas", b"{}") or b"{}")
            cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
            text_col = cols[0] if cols else next(c for c in t.column_names if c != "task_index")
        return dict(zip(idx, t.column(text_col).to_pylist()))

    def _derive_mapping(self) -> dict[str, dict]:
        mapping: dict[str, dict] = {}
        for name, ft in self.features.items():
            if name in DEFAULT_FEATURES or ft["dtype"] == "string":
                continue
            shape = list(ft["shape"])
            names = ft.get("names")
            if isinstance(names, dict):  # older datasets: {"motors": [...]}
                names = next(iter(names.values()), None)
            if ft["dtype"] in ("video", "image"):
                if isinstance(names, list) and names and names[0] in ("channel", "channels"):
                    shape = [shape[1], shape[2], shape[0]]
                cam = name.removeprefix(IMAGE_PREFIX).replace(".", "_")
                key = conv.image_key(cam)
                mapping[key] = {"feature": name, "dtype": "uint8", "shape": shape, "gray": False}
                continue
            key = name.removeprefix("observation.").replace(".", "_").replace("/", "_")
            entry = {"feature": name, "dtype": ft["dtype"], "shape": shape}
            if (
                isinstance(names, list)
                and len(names) == int(np.prod(shape))
                and all(isinstance(x, str) for x in names)
            ):
                entry["names"] = names if len(shape) == 1 else None
            mapping[key] = entry
        return mapping

    # -- data
    def _table(self, ep: int):
        e = self.episodes[ep]
        path = self.root / self.info["data_path"].format(
            chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]
        )
        if path not in self._tables:
            self._tables.clear()  # one file in memory at a time
            self._tables[path] = self.pq.read_table(path)
        return self._tables[path]

    def episode_table(self, ep: int):
        """The episode's rows of its data file (sorted by frame_index)."""
        import pyarrow.compute as pc

        t = self._table(ep)
        rows = t.filter(pc.equal(t.column("episode_index"), ep))
        rows = rows.sort_by("frame_index")
        want = self.episodes[ep]["length"]
        if rows.num_rows != want:
            raise ValueError(
                f"{self.root}: episode {ep} has {rows.num_rows} rows in its data file, its length says {want}"
            )
        return rows

    # -- video
    def video_frames(self, feature: str, ep: int, timestamps: np.ndarray | None = None) -> np.ndarray:
        """The episode's frames of a video feature (T, H, W, 3) uint8, one per timestamp
        (default ``frame_index / fps``), each found within ``TOLERANCE_S`` of ``from_timestamp + ts``."""
        e = self.episodes[ep]
        n = e["length"]
        ts = np.arange(n) / self.fps if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        path = self.root / self.info["video_path"].format(
            video_key=feature,
            chunk_index=e[f"videos/{feature}/chunk_index"],
            file_index=e[f"videos/{feature}/file_index"],
        )
        cur = self._cursor.get(feature)
        start = float(e[f"videos/{feature}/from_timestamp"])
        if cur is None or cur.path != path or cur.t > start + ts[0] + TOLERANCE_S:
            cur = self._cursor[feature] = _VideoCursor(path)
        return cur.take(start + ts, f"feature {feature!r}, episode {ep}")


class _VideoCursor:
    """Sequential decoding of one mp4, episode after episode, without re-opening it."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"video file {path} is missing")
        self.path = path
        self._it = vid.decode(path)
        self._pending: tuple[float, np.ndarray] | None = None
        self.t = -math.inf

    def _next(self) -> tuple[float, np.ndarray] | None:
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        return next(self._it, None)

    def take(self, times: np.ndarray, what: str) -> np.ndarray:
        out = []
        for want in times:
            while True:
                item = self._next()
                if item is None:
                    raise ValueError(
                        f"{self.path}: {what}: no frame at t={want:.6f} s (the video ends before it); "
                        "the dataset's videos and episode table disagree"
                    )
                t, img = item
                self.t = t
                if t < want - TOLERANCE_S:
                    continue  # a frame of another episode or a skipped one
                if abs(t - want) > TOLERANCE_S:
                    self._pending = item
                    raise ValueError(
                        f"{self.path}: {what}: the frame for t={want:.6f} s is missing (next frame at "
                        f"{t:.6f} s, tolerance {TOLERANCE_S} s); timestamps must equal frame_index / fps"
                    )
                out.append(img)
                break
        return np.stack(out) if out else np.zeros((0, 0, 0, 3), np.uint8)
