"""Helpers for the ROS 2 tests: start a launch file's nodes as real processes, read diagnostics."""

from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def private_domain() -> str:
    """A DDS domain of its own for this test run, so graphs of concurrent runs on one machine
    (other sessions, a demo in the background) never see each other's topics."""
    import os
    import random

    os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(10, 100))
    return os.environ["ROS_DOMAIN_ID"]


class Graph:
    """Nodes of a launch file running in separate processes, plus a client in this process."""

    def __init__(self, launch_file: str, args: dict[str, str], log: Path):
        from robot_policy.ros.client import GraphClient
        from robot_policy.ros.launch_file import parse_launch_file
        from robot_policy.ros.launcher import Launcher

        desc = parse_launch_file(REPO / "launch" / launch_file, args)
        self.log_path = log
        self._log = open(log, "w")
        self.launcher = Launcher(desc, grace=3.0, color=False, out=self._log)
        self.launcher.start()
        self.client = GraphClient("test_client")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> dict[str, bool]:
        return {p.spec.name: p.popen.poll() is None for p in self.launcher.procs}

    def close(self) -> None:
        self.client.close()
        self.launcher.shutdown()
        self._log.close()


def diagnostics(client, name: str, timeout: float = 10.0, since: float = 0.0) -> dict[str, str]:
    """Key/values of the newest /diagnostics status called ``name`` stamped after ``since``."""
    values = client.diagnostics(name, since=since, timeout=timeout)
    if values is None:
        raise TimeoutError(f"no /diagnostics status '{name}' within {timeout} s")
    return values


def wait_until(pred, timeout: float, what: str, poll: float = 0.05):
    """Poll ``pred()`` until truthy; fail naming ``what`` (timeouts bound the test, they are not
    the assertion: the assertion is that the state is eventually reached)."""
    import numpy as np

    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        # numpy comparisons give np.False_, which `is not False` would take as success.
        if last is not None and last is not False and not (isinstance(last, np.bool_) and not last):
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what} (last value {last!r})")
