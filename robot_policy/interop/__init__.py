"""Data interop: other tools' formats to and from the episode store.

- ``lerobot``: LeRobotDataset v3 export and import (parquet + mp4, no ``lerobot`` package needed),
  with LeRobot's statistics (``lerobot_stats``) and video I/O through PyAV (``video``).
- ``bag``: rosbag2 (MCAP, sqlite3) import through the recorder's own aligner, and export for
  ``ros2 bag play``; needs ``rosbags``, no ROS install.
- ``dp``: Diffusion Policy drop-in stores (codec configs its zarr-python 2 code accepts).
- ``viewer``: an episode to Rerun (``.rrd``) or to mp4.

Each module imports its third-party libraries (pyarrow, av, rosbags, rerun) inside functions,
so ``robot-policy --help`` does not need them; a missing one raises an error naming the pip
extra (``pip install 'robot_policy[interop]'``). See docs/interop.md.
"""

from __future__ import annotations

EXTRA = "interop"


def require(module: str, package: str | None = None):
    """Import ``module`` or raise ImportError naming the pip extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is needed for this command: pip install '{package or module}' "
            f"(or the project's extra: pip install 'robot_policy[{EXTRA}]')"
        ) from e
