"""LeRobotDataset v3.0 layout: paths, constants, and how our store keys map to LeRobot features.

Shared by the exporter (``lerobot_export``), the reader (``lerobot_reader``) and the importer
(``lerobot_import``); see ``robot_policy.interop.lerobot`` for the layout.
"""

from __future__ import annotations

import json

import numpy as np

from robot_policy import conventions as conv
from robot_policy.data.codecs import is_image_spec
from robot_policy.data.layout import VALID_KEY

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
EPISODE_COLUMNS = {"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index", META_JSON}
MB = 1024 * 1024


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


def meta_columns(metas: list[dict]) -> dict[str, list]:
    """Typed episode-table columns for top-level metadata fields whose values are all of one
    primitive type (None allowed): success, seed, operator, task... Nested ones live in the JSON."""
    cols: dict[str, list] = {}
    fields = sorted({k for m in metas for k in m})
    for f in fields:
        if f in EPISODE_COLUMNS or "/" in f:
            continue
        vals = [m.get(f) for m in metas]
        kinds = {type(v) for v in vals if v is not None}
        if len(kinds) == 1 and kinds <= {bool, int, float, str}:
            cols[f] = vals
    return cols


def episode_meta(row: dict, tasks: dict[int, str]) -> dict:
    if row.get(META_JSON):
        return json.loads(row[META_JSON])
    meta = {}
    for k, v in row.items():
        if k in EPISODE_COLUMNS or k.startswith(("data/", "videos/", "meta/", "stats/")) or v is None:
            continue
        meta[k] = v
    ep_tasks = [str(t) for t in (row.get("tasks") or [])]
    if ep_tasks:
        meta["task"] = ep_tasks[0]
        if len(ep_tasks) > 1:
            meta["tasks"] = ep_tasks
    return meta
