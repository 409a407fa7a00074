"""Build hooks; all metadata is in pyproject.toml. colcon's ament_python build type also calls this file.

The repository's top-level ``sim/``, ``hardware/`` and ``launch/`` folders are what users edit, and
the code needs them at run time. A checkout reads them in place; every build ships them twice, from
the same source files (nothing is duplicated in git):

* inside the package, as ``robot_policy/_data/<folder>/...``, which ``robot_policy.resources`` finds
  through ``importlib.resources`` after a regular ``pip install`` (wheel, sdist, ``--user``, ``--target``);
* under ``<prefix>/share/robot_policy/<folder>/...`` with ``package.xml``, the DDS profiles and the
  ament index marker, where ROS 2 users and ``$(find-pkg-share robot_policy)`` look.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("sim", "hardware", "launch")  # keep in step with robot_policy/resources.py
DATA_DIR = ("robot_policy", "_data")


def _shipped_files() -> list[str]:
    """Repository-relative paths of every file in the shipped folders, plus package.xml."""
    out = ["package.xml"]
    for folder in SHIPPED_FOLDERS:
        for p in sorted((HERE / folder).rglob("*")):
            rel = p.relative_to(HERE)
            # Editor backups, caches and hidden files are not data.
            if p.is_file() and not any(part.startswith((".", "__pycache__")) for part in rel.parts):
                if not p.name.endswith(("~", ".pyc")):
                    out.append(rel.as_posix())
    return out


def _share_data_files() -> list[tuple[str, list[str]]]:
    """``data_files`` for the ROS 2 layout: one (install dir, [files]) entry per source folder."""
    by_dir: dict[str, list[str]] = {}
    for rel in _shipped_files():
        parent = os.path.dirname(rel)
        by_dir.setdefault(f"share/robot_policy/{parent}".rstrip("/"), []).append(rel)
    by_dir["share/robot_policy/config"] = [
        "robot_policy/ros/fastdds_shm.xml",
        "robot_policy/ros/fastdds_shm_localhost.xml",
    ]
    by_dir["share/ament_index/resource_index/packages"] = ["resource/robot_policy"]
    return sorted(by_dir.items())


class BuildPyWithData(build_py):
    """build_py that also copies the shipped folders into ``robot_policy/_data/`` of the build."""

    def _data_targets(self) -> list[tuple[str, str]]:
        return [
            (str(HERE / rel), os.path.join(self.build_lib, *DATA_DIR, *rel.split("/")))
            for rel in _shipped_files()
        ]

    def run(self) -> None:
        super().run()
        for src, dst in self._data_targets():
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst, preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        # install/bdist_wheel record what build_py produced: list the copies too.
        return super().get_outputs(include_bytecode) + [dst for _, dst in self._data_targets()]


setup(cmdclass={"build_py": BuildPyWithData}, data_files=_share_data_files())
