"""LeRobotDataset v3.0 export: an episode store to a LeRobot folder (pyarrow + PyAV, no ``lerobot``).

See ``robot_policy.interop.lerobot`` for the layout written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_policy.interop import lerobot_stats as lstats
from robot_policy.interop import require
from robot_policy.interop import video as vid
from robot_policy.interop.lerobot_format import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODES_PATH,
    INFO_PATH,
    MB,
    META_JSON,
    STATE_FEATURE,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    meta_columns,
    plan_features,
)
from robot_policy.interop.lerobot_reader import LeRobotFolder

_BLOCK = 64  # frames read from the store at a time


@dataclass
class ExportReport:
    path: str
    episodes: int
    frames: int
    seconds: float
    bytes: dict[str, int]
    psnr: dict[str, float] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        size = ", ".join(f"{k} {v / MB:.2f} MB" for k, v in self.bytes.items())
        ps = ", ".join(f"{k} {v:.1f} dB" for k, v in self.psnr.items()) or "no cameras"
        files = ", ".join(f"{k} {v}" for k, v in self.files.items())
        return (
            f"wrote LeRobot v3.0 dataset {self.path}: {self.episodes} episodes, {self.frames} frames in "
            f"{self.seconds:.1f} s ({self.frames_per_s:.0f} frames/s)\n  size: {size}\n  files: {files}\n"
            f"  video PSNR vs the store: {ps}\n  features: {', '.join(self.features)}"
        )


def _arrow_type(pa, dtype: str, n: int, scalar: bool):
    t = pa.from_numpy_dtype(np.dtype(dtype))
    return t if scalar else pa.list_(t, n)


def _column(pa, values: np.ndarray, dtype: str, n: int, scalar: bool):
    v = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    if scalar:
        return pa.array(v.reshape(-1))
    flat = pa.array(v.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, n)


def _pandas_index_metadata(index_col: str, value_col: str) -> bytes:
    """Schema metadata that makes pandas read ``index_col`` back as the DataFrame's index
    (LeRobot reads meta/tasks.parquet with ``pd.read_parquet`` and looks tasks up by index)."""
    return json.dumps(
        {
            "index_columns": [index_col],
            "column_indexes": [
                {
                    "name": None,
                    "field_name": None,
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": {"encoding": "UTF-8"},
                }
            ],
            "columns": [
                {
                    "name": value_col,
                    "field_name": value_col,
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": None,
                    "field_name": index_col,
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "creator": {"library": "pyarrow", "version": "robot_policy"},
            "pandas_version": "2.2.3",
        }
    ).encode()


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def export_lerobot(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    vcodec: str = "libsvtav1",
    crf: int | None = 30,
    gop: int | None = 2,
    state_keys: list[str] | None = None,
    task: str | None = None,
    repo_id: str | None = None,
    data_file_mb: float = 100.0,
    video_file_mb: float = 200.0,
    overwrite: bool = False,
    progress: bool = False,
    check_psnr: bool = True,
) -> ExportReport:
    """Write the store at ``src`` as a LeRobot v3.0 dataset folder ``dst``; see the module doc.

    ``state_keys``: keys concatenated into ``observation.state`` (None: joint_pos + gripper when
    present). ``task``: task text for episodes whose metadata has no "task". The folder is built
    under ``dst + ".partial"`` and renamed at the end, so a failure leaves no half dataset.
    ``check_psnr``: decode the videos afterwards and report their PSNR against the store (not
    counted in the export time).
    """
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    require("av")
    from tqdm import tqdm

    from robot_policy.data import EpisodeStore

    store = EpisodeStore.open(src, "r")
    if store.num_episodes == 0:
        raise ValueError(f"{src} has no episodes to export")
    fps = store.fps
    if not fps:
        raise ValueError(f"{src} does not record its fps; convert it with 'dataset convert --fps F' first")
    out = Path(dst)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    tmp = Path(str(out) + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    schema = store.schema
    features, mapping = plan_features(schema, state_keys)
    video_keys = {k: m["feature"] for k, m in mapping.items() if features[m["feature"]]["dtype"] == "video"}
    data_features = {f: d for f, d in features.items() if d["dtype"] != "video"}
    all_features = {**features, **DEFAULT_FEATURES}

    # parquet schema of the data files: our features, then LeRobot's default columns
    fields = []
    for name, ft in {**data_features, **DEFAULT_FEATURES}.items():
        n = ft["shape"][0]
        # LeRobot reads shape-(1,) features as scalar columns, longer ones as fixed-size lists
        fields.append(pa.field(name, _arrow_type(pa, ft["dtype"], n, n == 1)))
    data_schema = pa.schema(fields)

    t0 = time.perf_counter()
    tasks: dict[str, int] = {}
    episodes_rows: list[dict] = []
    ep_stats_all: list[dict] = []
    metas = store.episodes_meta()
    data_writer = None
    data_cf = (0, 0)
    data_files = 0
    video_writers: dict[str, vid.VideoWriter] = {}
    video_cf: dict[str, tuple[int, int]] = {}
    video_files: dict[str, int] = dict.fromkeys(video_keys, 0)
    global_index = 0
    bar = tqdm(total=store.num_frames, desc="export-lerobot", unit="frame", disable=not progress)
    try:
        for ep in range(store.num_episodes):
            s = store.episode_slice(ep)
            n = s.stop - s.start
            meta = metas[ep]
            task_text = str(meta.get("task") or task or "unspecified task")
            task_index = tasks.setdefault(task_text, len(tasks))
            row: dict = {"episode_index": ep, "tasks": [task_text], "length": n}

            # data file: roll over past the size limit (never split an episode)
            if data_writer is not None:
                path = tmp / DATA_PATH.format(chunk_index=data_cf[0], file_index=data_cf[1])
                if path.stat().st_size >= data_file_mb * MB:
                    data_writer.close()
                    data_writer = None
                    data_cf = _next_file(*data_cf)
            if data_writer is None:
                path = tmp / DATA_PATH.format(chunk_index=data_cf[0], file_index=data_cf[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, data_schema, compression="snappy", use_dictionary=True)
                data_files += 1
            row.update({"data/chunk_index": data_cf[0], "data/file_index": data_cf[1]})
            row.update({"dataset_from_index": global_index, "dataset_to_index": global_index + n})

            # videos: one writer per camera, rolled over past the size limit
            for key, feat in video_keys.items():
                w = video_writers.get(key)
                if w is not None and w.size() >= video_file_mb * MB:
                    w.close()
                    w = None
                    video_cf[key] = _next_file(*video_cf[key])
                if w is None:
                    cf = video_cf.setdefault(key, (0, 0))
                    h, wd, _ = features[feat]["shape"]
                    w = vid.VideoWriter(
                        tmp / VIDEO_PATH.format(video_key=feat, chunk_index=cf[0], file_index=cf[1]),
                        fps,
                        wd,
                        h,
                        vcodec=vcodec,
                        crf=crf,
                        gop=gop,
                    )
                    video_writers[key] = w
                    video_files[key] += 1
                cf = video_cf[key]
                row[f"videos/{feat}/chunk_index"] = cf[0]
                row[f"videos/{feat}/file_index"] = cf[1]
                row[f"videos/{feat}/from_timestamp"] = w.frames / fps

            # frames: low-dim kept for the episode's table, images streamed to the encoders
            lowdim: dict[str, list[np.ndarray]] = {k: [] for k in mapping if k not in video_keys}
            samples = {k: set(lstats.sample_indices(n).tolist()) for k in video_keys}
            sampled: dict[str, list[np.ndarray]] = {k: [] for k in video_keys}
            for a in range(s.start, s.stop, _BLOCK):
                b = min(s.stop, a + _BLOCK)
                for key in mapping:
                    block = np.asarray(store.array(key)[a:b])
                    if key in video_keys:
                        if block.ndim == 3:
                            block = block[..., None]
                        if block.shape[-1] == 1:
                            block = np.repeat(block, 3, axis=-1)
                        for i, img in enumerate(block):
                            video_writers[key].write(img)
                            if (a - s.start + i) in samples[key]:
                                sampled[key].append(img)
                    else:
                        lowdim[key].append(block.reshape(b - a, -1))
                bar.update(b - a)
            for key, feat in video_keys.items():
                row[f"videos/{feat}/to_timestamp"] = video_writers[key].frames / fps

            columns: dict[str, np.ndarray] = {}
            for key, parts in lowdim.items():
                m = mapping[key]
                v = np.concatenate(parts)
                if m["feature"] == STATE_FEATURE:
                    columns.setdefault(STATE_FEATURE, [])
                    columns[STATE_FEATURE].append(v)
                else:
                    columns[m["feature"]] = v
            if STATE_FEATURE in columns:
                columns[STATE_FEATURE] = np.concatenate(columns[STATE_FEATURE], axis=1)
            frame_index = np.arange(n, dtype=np.int64)
            columns["timestamp"] = (frame_index / fps).astype(np.float32)
            columns["frame_index"] = frame_index
            columns["episode_index"] = np.full(n, ep, dtype=np.int64)
            columns["index"] = np.arange(global_index, global_index + n, dtype=np.int64)
            columns["task_index"] = np.full(n, task_index, dtype=np.int64)
            arrays = []
            for f in data_schema:
                ft = all_features[f.name]
                scalar = not (pa.types.is_fixed_size_list(f.type))
                arrays.append(_column(pa, columns[f.name], ft["dtype"], ft["shape"][0], scalar))
            data_writer.write_table(pa.Table.from_arrays(arrays, schema=data_schema))

            # LeRobot's per-episode statistics
            ep_stats = {}
            for name, v in columns.items():
                ep_stats[name] = lstats.numeric_stats(v if v.ndim == 1 else v.reshape(n, -1))
            for key, feat in video_keys.items():
                ep_stats[feat] = lstats.image_stats(np.stack(sampled[key]))
            ep_stats_all.append(ep_stats)
            for name, st in ep_stats.items():
                for stat, value in st.items():
                    row[f"stats/{name}/{stat}"] = np.asarray(value).tolist()
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            row[META_JSON] = json.dumps(meta, sort_keys=True)
            episodes_rows.append(row)
            global_index += n
    finally:
        bar.close()
        if data_writer is not None:
            data_writer.close()
        for w in video_writers.values():
            w.close()

    # episodes table: fixed columns, stats, metadata columns
    for name, vals in meta_columns(metas).items():
        for row, v in zip(episodes_rows, vals):
            row[name] = v
    names = list(dict.fromkeys(k for r in episodes_rows for k in r))
    table = pa.Table.from_pydict({k: [r.get(k) for r in episodes_rows] for k in names})
    ep_path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, ep_path, compression="snappy")

    task_names = sorted(tasks, key=tasks.get)
    tasks_table = pa.table(
        {
            "task_index": pa.array([tasks[t] for t in task_names], pa.int64()),
            "__index_level_0__": pa.array(task_names, pa.string()),
        }
    )
    tasks_table = tasks_table.replace_schema_metadata(
        {b"pandas": _pandas_index_metadata("__index_level_0__", "task_index")}
    )
    pq.write_table(tasks_table, tmp / TASKS_PATH)

    stats = lstats.aggregate(ep_stats_all)
    (tmp / STATS_PATH).write_text(json.dumps(lstats.to_json(stats), indent=4))

    for feat in video_keys.values():
        first = tmp / VIDEO_PATH.format(video_key=feat, chunk_index=0, file_index=0)
        features[feat]["info"] = vid.info(first)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": store.robot,
        "total_episodes": store.num_episodes,
        "total_frames": store.num_frames,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": data_file_mb,
        "video_files_size_in_mb": video_file_mb,
        "fps": int(round(fps)) if abs(fps - round(fps)) < 1e-9 else fps,
        "splits": {"train": f"0:{store.num_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_keys else None,
        "features": {**features, **DEFAULT_FEATURES},
        "robot_policy": {
            "format": 1,
            "source": str(src),
            "fps": fps,
            "robot": store.robot,
            "attrs": store.attrs,
            "keys": mapping,
        },
    }
    (tmp / INFO_PATH).write_text(json.dumps(info, indent=4))
    _write_card(tmp, repo_id or out.name, info)
    seconds = time.perf_counter() - t0

    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)

    report = ExportReport(
        path=str(out),
        episodes=store.num_episodes,
        frames=store.num_frames,
        seconds=seconds,
        bytes={
            "data": _dir_bytes(out / "data"),
            "videos": _dir_bytes(out / "videos"),
            "meta": _dir_bytes(out / "meta"),
            "store": _dir_bytes(Path(store.path)),
        },
        files={"data": data_files, **{f"video {video_keys[k]}": c for k, c in video_files.items()}},
        features=list(info["features"]),
    )
    if check_psnr and video_keys:
        report.psnr = video_psnr(store, out)
    return report


def _write_card(root: Path, repo_id: str, info: dict) -> None:
    feats = "\n".join(f"| `{k}` | {v['dtype']} | {v['shape']} |" for k, v in info["features"].items())
    (root / "README.md").write_text(
        f"---\nlicense: apache-2.0\ntask_categories:\n- robotics\ntags:\n- LeRobot\n"
        f"configs:\n- config_name: default\n  data_files: data/*/*.parquet\n---\n\n"
        f"# {repo_id}\n\nExported by `robot-policy dataset export-lerobot` from `{info['robot_policy']['source']}` "
        f"(robot: {info['robot_type']}, {info['total_episodes']} episodes, {info['total_frames']} frames at "
        f"{info['fps']} fps). LeRobotDataset {CODEBASE_VERSION} layout.\n\n| feature | dtype | shape |\n|---|---|---|\n{feats}\n"
    )


def video_psnr(store, root: str | os.PathLike) -> dict[str, float]:
    """PSNR (dB) of every exported video frame against the store's image, per camera feature."""
    ds = LeRobotFolder(root)
    out = {}
    for key, m in ds.mapping.items():
        feat = m["feature"]
        if ds.features[feat]["dtype"] != "video":
            continue
        se, count = 0.0, 0
        for ep in range(ds.num_episodes):
            frames = ds.video_frames(feat, ep)
            ref = np.asarray(store.get_episode(ep, [key])[key])
            if ref.ndim == 3:
                ref = ref[..., None]
            if ref.shape[-1] == 1:
                ref = np.repeat(ref, 3, axis=-1)
            se += float(np.sum((frames.astype(np.float64) - ref.astype(np.float64)) ** 2))
            count += ref.size
        mse = se / max(count, 1)
        out[feat] = float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return out
