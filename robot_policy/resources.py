"""Find the files the code ships with: MuJoCo scenes, robot setups, randomization configs, launch files.

The repository's top-level folders (``sim/``, ``hardware/``, ``launch/``) are the source of truth
that users edit. A build copies them into the package (``robot_policy/_data/``, see ``setup.py``),
so a regular ``pip install`` or a colcon build finds them too. Every lookup goes through here:

1. an explicit path the user gave (their own hardware YAML, scene, randomization config) wins;
2. a bare name (``sim_tabletop``, ``wide``) or a repository-relative path (``sim/randomization/wide.yaml``)
   resolves against the **data root**: the checkout when the package runs from one (editable
   install, PYTHONPATH), else the installed package data.

Foundation layer: imports nothing from ``robot_policy`` (callers turn the error into their own).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIRNAME = "_data"
"""Folder inside the installed package that holds the copies of sim/, hardware/, launch/."""
SHIPPED_FOLDERS = ("sim", "hardware", "launch")
"""Repository folders copied into the package and under share/robot_policy/ at build time."""


class ResourceNotFoundError(FileNotFoundError):
    """A shipped file or a user-given path does not exist; the message says where it looked."""

    def __init__(self, message: str, looked: Sequence[Path] = (), available: Sequence[str] = ()):
        super().__init__(message)
        self.looked = [Path(p) for p in looked]
        self.available = list(available)


def source_root() -> Path | None:
    """The checkout the package is imported from, or None when it runs from an installed copy.

    A checkout is recognised by ``pyproject.toml`` and the shipped folders next to ``robot_policy/``
    (an installed ``site-packages`` has neither).
    """
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and all((root / f).is_dir() for f in SHIPPED_FOLDERS):
        return root
    return None


def installed_data_dir() -> Path:
    """Where a built package keeps its data files (may not exist: checkouts have none)."""
    data = importlib.resources.files("robot_policy").joinpath(DATA_DIRNAME)
    # MuJoCo and the launcher need real files: zip imports are not supported.
    return Path(str(data))


def data_root() -> Path:
    """The folder holding ``sim/``, ``hardware/``, ``launch/``: the checkout, else the installed copy."""
    return source_root() or installed_data_dir()


def data_path(rel: str | Path) -> Path:
    """``data_root() / rel`` without checking that it exists (for module-level constants)."""
    return data_root() / rel


def _where() -> str:
    root = source_root()
    if root is not None:
        return f"the checkout {root}"
    return f"the installed package data {installed_data_dir()}"


def shipped_file(rel: str | Path) -> Path:
    """A file the package ships (``sim/tabletop.xml``); a clear error when the install lacks it."""
    p = data_path(rel)
    if not p.is_file():
        raise ResourceNotFoundError(
            f"shipped file {rel} not found in {_where()} (looked at {p}); "
            "reinstall robot_policy (pip install robot_policy / colcon build), or run from a checkout",
            looked=[p],
        )
    return p


def shipped_names(folder: str, suffixes: Sequence[str] = (".yaml",)) -> list[str]:
    """Bare names available in a shipped folder: ``shipped_names("hardware")`` -> ``["real_panda", ...]``."""
    d = data_path(folder)
    if not d.is_dir():
        return []
    names = set()
    for p in d.iterdir():
        s = next((s for s in suffixes if p.name.endswith(s)), None)  # the longest suffix comes first
        if s and p.is_file():
            names.add(p.name[: -len(s)])
    return sorted(names)


def find_file(
    name_or_path: str | Path, folder: str, suffixes: Sequence[str] = (".yaml",), what: str = "file"
) -> Path:
    """Resolve a user path or a bare name of a shipped file in ``folder`` (e.g. ``"hardware"``).

    Order: an existing path as given (relative to the working directory or absolute); a relative
    path against the data root (``sim/randomization/wide.yaml``); a name in ``folder`` with or
    without its suffix (``wide``, ``wide.yaml``). The error lists every place it looked and the
    shipped names.
    """
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    looked = [p.resolve()] if not p.is_absolute() else [p]
    if not p.is_absolute():
        root = data_root()
        cands = [root / p]
        if len(p.parts) == 1:
            # A bare name: the folder's file as written (``wide.yaml``) or with each suffix (``wide``).
            if any(p.name.endswith(s) for s in suffixes):
                cands = [root / folder / p.name]
            else:
                cands = [root / folder / f"{p.name}{s}" for s in suffixes]
        for c in cands:
            if c.is_file():
                return c
        looked += [c for c in cands if c not in looked]
    available = shipped_names(folder, suffixes)
    raise ResourceNotFoundError(
        f"{what} {name_or_path} does not exist (looked at: {', '.join(str(x) for x in looked)}); "
        f"shipped names in {_where()}/{folder}: {available}; "
        f"give the path of your own file or one of these names",
        looked=looked,
        available=available,
    )
