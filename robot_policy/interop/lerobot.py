"""LeRobotDataset v3.0 export and import, written against the format (pyarrow + PyAV), no ``lerobot``.

Layout written (``lerobot/datasets/utils.py`` of LeRobot 0.4):

    meta/info.json                                   codebase_version "v3.0", fps, features, paths
    meta/stats.json                                  per feature: min max mean std count q01 q10 q50 q90 q99
    meta/tasks.parquet                               task_index, indexed by the task string (pandas index)
    meta/episodes/chunk-000/file-000.parquet         one row per episode: length, tasks, file indices,
                                                     video from/to timestamps, stats/<feature>/<stat>
    data/chunk-CCC/file-FFF.parquet                  one row per frame, several episodes per file
    videos/<video_key>/chunk-CCC/file-FFF.mp4        one stream per camera, episodes back to back

Frame ``i`` of an episode has ``timestamp = i / fps`` (float32) and is shown by its camera's mp4
at ``from_timestamp + timestamp``; files roll over past ``data_files_size_in_mb`` /
``video_files_size_in_mb``, ``chunks_size`` files per chunk folder.

Our own keys map to LeRobot features and back (``info.json`` keeps the mapping under
``"robot_policy"``); per-episode metadata travels as extra columns of the episodes table, typed
where the values allow, plus one JSON column that restores it exactly.
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

from robot_policy import conventions as conv
from robot_policy.data.codecs import is_image_spec
from robot_policy.data.layout import VALID_KEY
from robot_policy.interop import lerobot_stats as lstats
from robot_policy.interop import require
from robot_policy.interop import video as vid

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
# LeRobot's check that timestamps match frame_index / fps, and that decoded frames match them.
TOLERANCE_S = 1e-4
META_JSON = "robot_policy/meta_json"
"""Episodes-table column holding each episode's metadata as JSON (exact round trip)."""
STATE_FEATURE = "observation.state"
IMAGE_PREFIX = "observation.images."
# Keys that are not observations keep their own name (LeRobot's policies read "observation.*"
# as inputs, "action" as the target; other columns ride along).
NON_OBSERVATION = {VALID_KEY, "intervention", "interventions", "reward", "done", "success", "source"}
_EPISODE_COLUMNS = {"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index", META_JSON}
_BLOCK = 64  # frames read from the store at a time
MB = 1024 * 1024


# ------------------------------------------------------------------------------- reports
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


@dataclass
class ImportReport:
    path: str
    episodes: int
    frames: int
    seconds: float
    keys: dict[str, str]
    """store key -> LeRobot feature"""
    notes: list[str] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        by_feature: dict[str, list[str]] = {}
        for key, feat in self.keys.items():
            by_feature.setdefault(feat, []).append(key)
        keys = ", ".join(f"{f} -> {'+'.join(k)}" for f, k in by_feature.items())
        out = (
            f"wrote {self.path}: {self.episodes} episodes, {self.frames} frames in {self.seconds:.1f} s "
            f"({self.frames_per_s:.0f} frames/s)\n  features: {keys}"
        )
        return out + "".join(f"\n  note: {n}" for n in self.notes)


# ------------------------------------------------------------------------------- mapping
def _feature_name(key: str, image: bool) -> str:
    if image:
        return IMAGE_PREFIX + (conv.camera_of(key) if conv.is_image_key(key) else key)
    if key == "action" or key in NON_OBSERVATION or "action" in key:
        return key
    return f"observation.{key}"


def _default_state_keys(schema) -> list[str]:
    keys = [k for k in (conv.JOINT_POS, conv.GRIPPER) if k in schema]
    return keys if keys and len({schema[k].dtype for k in keys}) == 1 else []


def _names(spec, key: str) -> list[str]:
    n = int(np.prod(spec.shape, dtype=np.int64)) if spec.shape else 1
    if spec.names and len(spec.names) == n:
        return list(spec.names)
    return [f"{key}_{i}" for i in range(n)] if n > 1 else [key]


def plan_features(schema: dict, state_keys: list[str] | None) -> tuple[dict, dict]:
    """LeRobot features and the key mapping (``info.json["robot_policy"]["keys"]``) for a schema."""
    state = _default_state_keys(schema) if state_keys is None else list(state_keys)
    for k in state:
        if k not in schema:
            raise ValueError(f"--state-keys: {k!r} is not a key of the store (keys: {list(schema)})")
        if is_image_spec(schema[k].dtype, schema[k].shape) and len(schema[k].shape) >= 2:
            raise ValueError(f"--state-keys: {k!r} is an image key; give low-dim keys only")
    if state and len({schema[k].dtype for k in state}) > 1:
        raise ValueError(
            f"--state-keys {state} have different dtypes {[schema[k].dtype for k in state]}; "
            "observation.state needs one dtype (pick keys of the same dtype)"
        )
    features: dict[str, dict] = {}
    mapping: dict[str, dict] = {}
    if state:
        names, offset = [], 0
        for k in state:
            spec = schema[k]
            n = int(np.prod(spec.shape, dtype=np.int64)) if spec.shape else 1
            names += _names(spec, k)
            mapping[k] = {"feature": STATE_FEATURE, "slice": [offset, offset + n]}
            offset += n
        features[STATE_FEATURE] = {"dtype": schema[state[0]].dtype, "shape": [offset], "names": names}
    for key, spec in schema.items():
        if key in state:
            continue
        image = is_image_spec(spec.dtype, spec.shape)
        if image:
            c = spec.shape[2] if len(spec.shape) == 3 else 1
            if c not in (1, 3):
                raise ValueError(
                    f"key {key!r}: {c}-channel images cannot be stored as LeRobot video (1 or 3 channels); "
                    "drop the alpha channel first"
                )
            h, w = spec.shape[:2]
            if h % 2 or w % 2:
                raise ValueError(f"key {key!r}: image size {w}x{h} is odd; mp4 (yuv420p) needs even sizes")
            name = _feature_name(key, True)
            features[name] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
            mapping[key] = {"feature": name, "gray": c == 1}
        else:
            name = _feature_name(key, False)
            n = int(np.prod(spec.shape, dtype=np.int64)) if spec.shape else 1
            names = _names(spec, key) if (spec.names or n > 1) else None
            features[name] = {"dtype": spec.dtype, "shape": [n], "names": names}
            mapping[key] = {"feature": name}
        if name in DEFAULT_FEATURES or sum(m["feature"] == name for m in mapping.values()) > 1:
            raise ValueError(f"key {key!r} maps to LeRobot feature {name!r}, which is already taken")
    for key, m in mapping.items():
        m.update(schema[key].to_json())
    return features, mapping


# ------------------------------------------------------------------------------- arrow helpers
def _arrow_type(pa, dtype: str, n: int, scalar: bool):
    t = pa.from_numpy_dtype(np.dtype(dtype))
    return t if scalar else pa.list_(t, n)


def _column(pa, values: np.ndarray, dtype: str, n: int, scalar: bool):
    v = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    if scalar:
        return pa.array(v.reshape(-1))
    flat = pa.array(v.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, n)


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


def _meta_columns(metas: list[dict]) -> dict[str, list]:
    """Typed episode-table columns for top-level metadata fields whose values are all of one
    primitive type (None allowed): success, seed, operator, task... Nested ones live in the JSON."""
    cols: dict[str, list] = {}
    fields = sorted({k for m in metas for k in m})
    for f in fields:
        if f in _EPISODE_COLUMNS or "/" in f:
            continue
        vals = [m.get(f) for m in metas]
        kinds = {type(v) for v in vals if v is not None}
        if len(kinds) == 1 and kinds <= {bool, int, float, str}:
            cols[f] = vals
    return cols


# ------------------------------------------------------------------------------- export
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
    for name, vals in _meta_columns(metas).items():
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


# ------------------------------------------------------------------------------- reading
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


# ------------------------------------------------------------------------------- import
def import_lerobot(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    image_codec: str | None = None,
    zarr_format: int = 3,
    overwrite: bool = False,
    progress: bool = False,
) -> ImportReport:
    """Read the LeRobot v3 folder ``src`` and write it as a new episode store ``dst``."""
    from tqdm import tqdm

    from robot_policy.data import EpisodeStore, KeySpec

    t0 = time.perf_counter()
    ds = LeRobotFolder(src)
    own = ds.info.get("robot_policy") or {}
    notes: list[str] = []
    skipped = [f for f, ft in ds.features.items() if ft["dtype"] == "string"]
    if skipped:
        notes.append(f"string features {skipped} are not imported (the store holds numbers and images)")

    # per-frame task changes become a key; the per-episode task list goes to the metadata
    task_key = False
    schema: dict[str, KeySpec] = {}
    for key, m in ds.mapping.items():
        shape = tuple(m.get("shape") or ())
        schema[key] = KeySpec(
            dtype=m["dtype"],
            shape=shape,
            names=m.get("names") if len(shape) == 1 else None,
            units=m.get("units"),
            codec=m.get("codec") if image_codec is None else None,
            extra=dict(m.get("extra") or {}),
        )
    if not own:
        for ep in range(ds.num_episodes):
            t = ds.episode_table(ep)
            if len(set(t.column("task_index").to_pylist())) > 1:
                task_key = True
                break
        if task_key:
            schema["task_index"] = KeySpec("int64", ())
            notes.append("tasks change within episodes: per-frame 'task_index' kept as a key")
    kwargs = {"image_codec": image_codec} if image_codec else {}
    attrs = {**(own.get("attrs") or {}), "imported_from": str(src)}
    store = EpisodeStore.create(
        dst,
        schema,
        fps=float(own.get("fps") or ds.fps),
        robot=own.get("robot", ds.info.get("robot_type")),
        zarr_format=zarr_format,
        overwrite=overwrite,
        attrs=attrs,
        **kwargs,
    )
    total = sum(e["length"] for e in ds.episodes)
    bar = tqdm(total=total, desc="import-lerobot", unit="frame", disable=not progress)
    try:
        for ep, e in enumerate(ds.episodes):
            rows = ds.episode_table(ep)
            n = rows.num_rows
            ts = column_to_numpy(rows.column("timestamp"), n).astype(np.float64)
            fi = column_to_numpy(rows.column("frame_index"), n)
            off = np.abs(ts - fi / ds.fps)
            if off.size and off.max() > TOLERANCE_S:
                i = int(off.argmax())
                raise ValueError(
                    f"{src}: episode {ep}, frame {int(fi[i])}: timestamp {ts[i]:.6f} s is not frame_index / fps "
                    f"= {fi[i] / ds.fps:.6f} s (tolerance {TOLERANCE_S} s)"
                )
            frames: dict[str, np.ndarray] = {}
            for key, m in ds.mapping.items():
                spec = schema[key]
                feat = m["feature"]
                ft = ds.features[feat]
                if ft["dtype"] == "video":
                    img = ds.video_frames(feat, ep, ts)
                    if img.shape[1:] != (spec.shape[0], spec.shape[1], 3):
                        raise ValueError(
                            f"{src}: feature {feat!r} decodes to {img.shape[1:]}, info.json says {tuple(ft['shape'])}"
                        )
                    frames[key] = img[..., :1].reshape((n, *spec.shape)) if m.get("gray") else img
                elif ft["dtype"] == "image":
                    frames[key] = _decode_images(rows.column(feat), n, spec.shape)
                else:
                    v = column_to_numpy(rows.column(feat), n)
                    if "slice" in m:
                        a, b = m["slice"]
                        v = v.reshape(n, -1)[:, a:b]
                    frames[key] = np.ascontiguousarray(
                        v.reshape((n, *spec.shape)).astype(spec.dtype, copy=False)
                    )
            if task_key:
                frames["task_index"] = column_to_numpy(rows.column("task_index"), n).astype(np.int64)
            store.add_episode(frames, meta=_episode_meta(e, ds.tasks))
            bar.update(n)
    except BaseException:
        store.close()
        shutil.rmtree(dst, ignore_errors=True)
        raise
    finally:
        bar.close()
    store.close()
    return ImportReport(
        path=str(dst),
        episodes=ds.num_episodes,
        frames=total,
        seconds=time.perf_counter() - t0,
        keys={k: m["feature"] for k, m in ds.mapping.items()},
        notes=notes,
    )


def _episode_meta(row: dict, tasks: dict[int, str]) -> dict:
    if row.get(META_JSON):
        return json.loads(row[META_JSON])
    meta = {}
    for k, v in row.items():
        if k in _EPISODE_COLUMNS or k.startswith(("data/", "videos/", "meta/", "stats/")) or v is None:
            continue
        meta[k] = v
    ep_tasks = [str(t) for t in (row.get("tasks") or [])]
    if ep_tasks:
        meta["task"] = ep_tasks[0]
        if len(ep_tasks) > 1:
            meta["tasks"] = ep_tasks
    return meta


def _decode_images(col, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """LeRobot ``image`` features: a struct column {bytes, path} of PNG/JPEG files."""
    import imagecodecs

    out = np.empty((n, *shape), dtype=np.uint8)
    for i, item in enumerate(col.to_pylist()):
        data = item.get("bytes") if isinstance(item, dict) else item
        if data is None:
            raise ValueError(
                f"image row {i} has no embedded bytes (path {item.get('path')!r}): embedded images only"
            )
        img = imagecodecs.imread(data)
        out[i] = img.reshape(shape) if img.size == out[i].size else img[..., : shape[-1]]
    return out
