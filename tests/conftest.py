"""Shared pytest configuration: markers that skip only what cannot run here."""

from __future__ import annotations

import os

import pytest

# Headless rendering and localhost-only DDS discovery for every test process.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA (GPU-marked test)")
    skip_hw = pytest.mark.skip(reason="needs attached hardware device")
    has_cuda = _cuda_available()
    has_hw = os.environ.get("ROBOT_POLICY_HARDWARE") == "1"
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "hardware" in item.keywords and not has_hw:
            item.add_marker(skip_hw)


@pytest.fixture(autouse=True)
def _normal_scheduling(request):
    """Fail the test that leaves the test process at a realtime scheduling class (libfranka raises
    its caller to SCHED_FIFO 99), and put it back so later tests and their children are not run
    at a priority that starves the machine."""
    yield
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        pytest.fail(f"{request.node.nodeid} left the test process at a realtime scheduling class")
