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

The code lives in ``lerobot_format`` (layout, key mapping), ``lerobot_export``, ``lerobot_reader``
(``LeRobotFolder``) and ``lerobot_import``, with the statistics in ``lerobot_stats``; the public
names are re-exported here.
"""

from robot_policy.interop.lerobot_export import ExportReport, export_lerobot, video_psnr
from robot_policy.interop.lerobot_format import (
    CHUNK_FILE,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODES_PATH,
    IMAGE_PREFIX,
    INFO_PATH,
    META_JSON,
    NON_OBSERVATION,
    STATE_FEATURE,
    STATS_PATH,
    TASKS_PATH,
    TOLERANCE_S,
    VIDEO_PATH,
    plan_features,
)
from robot_policy.interop.lerobot_import import ImportReport, import_lerobot
from robot_policy.interop.lerobot_reader import LeRobotFolder, column_to_numpy

__all__ = [
    "CHUNK_FILE",
    "CHUNKS_SIZE",
    "CODEBASE_VERSION",
    "DATA_PATH",
    "DEFAULT_FEATURES",
    "EPISODES_PATH",
    "IMAGE_PREFIX",
    "INFO_PATH",
    "META_JSON",
    "NON_OBSERVATION",
    "STATE_FEATURE",
    "STATS_PATH",
    "TASKS_PATH",
    "TOLERANCE_S",
    "VIDEO_PATH",
    "ExportReport",
    "ImportReport",
    "LeRobotFolder",
    "column_to_numpy",
    "export_lerobot",
    "import_lerobot",
    "plan_features",
    "video_psnr",
]
