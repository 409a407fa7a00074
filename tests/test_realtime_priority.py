"""``realtime_priority`` (every node's parameter): SCHED_FIFO for all of a process's threads,
inherited by threads started later, refused outside 1-99, and a warning (not a crash) where the
OS does not permit it. Runs in a child process: the test runner itself stays under the normal
scheduler."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = r"""
import json, os, threading
from robot_policy.ros._node import set_realtime_priority

before = threading.Thread(target=lambda: started.wait())
started = threading.Event()
before.start()  # a thread that exists before the call (like DDS's)
ok = set_realtime_priority(7)
policies = {}
def probe():
    policies["later"] = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
t = threading.Thread(target=probe); t.start(); t.join()
policies["main"] = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
policies["before"] = (os.sched_getscheduler(before.native_id), os.sched_getparam(before.native_id).sched_priority)
started.set(); before.join()
print(json.dumps({"ok": ok, "fifo": os.SCHED_FIFO, "policies": policies}))
"""


def test_every_thread_runs_fifo_where_permitted_else_a_warning_names_the_fix():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["ok"]:
        for where, (policy, prio) in r["policies"].items():
            assert (policy, prio) == (r["fifo"], 7), where
    else:  # an unprivileged user without an rtprio limit
        assert all(p != r["fifo"] for p, _ in r["policies"].values())
        assert "rtprio" in out.stderr, out.stderr


@pytest.mark.parametrize("priority", [100, -1])
def test_priority_outside_1_to_99_is_refused(priority):
    from robot_policy.ros._node import set_realtime_priority

    with pytest.raises(ValueError, match="1-99"):
        set_realtime_priority(priority)
