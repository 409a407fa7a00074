"""Importing a hardware SDK only when a backend connects, with an error that says how to fix it.

Arm and camera backends import their vendor SDK inside ``connect()``, so the core (and every
other backend) works without it; a missing SDK names the PyPI package and the extra to install.
"""

from __future__ import annotations

import contextlib
import importlib
import os
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


@contextlib.contextmanager
def keep_thread_scheduling():
    """Restore the calling thread's scheduling policy after a franky call.

    libfranka (and the SVT-AV1 encoder) raise the thread they run in to SCHED_FIFO priority 99
    whenever they can (libfranka even with ``RealtimeConfig.Ignore``), and as root they can. A ROS node's
    executor thread or a test process left at FIFO 99 starves the whole machine (measured here:
    load average 40 on 2 cores); franky's own control threads keep their priority.
    """
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)
