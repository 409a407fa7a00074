"""Importing a hardware SDK only when a backend connects, with an error that says how to fix it.

Arm and camera backends import their vendor SDK inside ``connect()``, so the core (and every
other backend) works without it; a missing SDK names the PyPI package and the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class SDKMissing(ImportError):
    """A backend's SDK is not installed; the message names the pip extra that installs it."""


def import_sdk(module: str, *, kind: str, backend: str, package: str, extra: str) -> ModuleType:
    """Import ``module`` for the ``kind`` backend ``backend`` (e.g. ``"arm"``, ``"franka"``);
    a missing SDK raises :class:`SDKMissing` naming ``package`` and ``robot_policy[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SDKMissing(
            f"{kind} backend '{backend}' needs {package} (module '{module}'): "
            f"pip install 'robot_policy[{extra}]'  ({e})"
        ) from e
