"""Shared plumbing of every node: init with the DDS profile, QoS, parameters, clean shutdown."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from robot_policy.ros.transport import apply_profile

SENSOR_QOS: QoSProfile = qos_profile_sensor_data
"""Best effort, keep last 5: camera and joint-state streams (a late frame is a useless frame)."""
RECORD_QOS: QoSProfile = QoSProfile(
    depth=100,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
    history=qos_profile_sensor_data.history,
)
"""Best effort (compatible with sensor publishers), keep last 100: a recorder must not lose a
sample because its callbacks fell a few hundred ms behind on a busy machine; depth 5 did."""
COMMAND_QOS = QoSProfile(depth=10)
"""Reliable, keep last 10: commands must not be lost silently."""


def declare(node: Node, name: str, default, description: str = ""):
    """Declare a parameter and return its value (type taken from ``default``)."""
    from rcl_interfaces.msg import ParameterDescriptor

    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def now_s(node: Node) -> float:
    """The graph's shared clock (ROS time) in seconds; every header stamp uses it."""
    return node.get_clock().now().nanoseconds * 1e-9


def call_service(node: Node, clients: dict, name: str, srv_type, timeout: float, **fields):
    """Call service ``name`` and wait for the answer; ``fields`` fill the request.

    For a thread other than the one spinning ``node`` (a blocking wait inside a callback would
    starve the executor). ``clients`` caches one client per (name, type) across calls. Raises
    TimeoutError naming the service when it is not available or does not answer in time.
    """
    key = (name, srv_type)
    if key not in clients:
        clients[key] = node.create_client(srv_type, name)
    cli = clients[key]
    if not cli.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {name} not available within {timeout:.0f} s; is its node running?")
    req = srv_type.Request()
    for k, v in fields.items():
        setattr(req, k, v)
    fut, done = cli.call_async(req), threading.Event()
    fut.add_done_callback(lambda f: done.set())
    if not done.wait(timeout):
        raise TimeoutError(f"service {name} did not answer within {timeout:.0f} s")
    return fut.result()


EXECUTORS = ("single", "multi")
"""How a node spins its callbacks (node parameter ``executor``):

* ``single``: rclpy's SingleThreadedExecutor, the default. Callbacks run one at a time.
* ``multi``: MultiThreadedExecutor with 2 threads, for nodes whose callbacks block on other
  callbacks (a service handler that calls a service) or on slow work (the recorder committing an
  episode while frames keep arriving). Its Python dispatch loop holds the GIL a large share of
  the time even when idle: measured with ``py-spy record --gil`` on sim_node (20 Hz, two 84x84
  cameras) the executor thread held the GIL in 22% of samples against 2% for ``single``, and
  the control loop's camera renders (2 ms of CPU) took 25-45 ms of wall time waiting for it;
  the observation-to-command tail followed (docs/inference.md, "Executor").

rclpy's experimental EventsExecutor (dispatch in C++) held the GIL even less on sim_node, but
policy_node under it answered no command and hung on SIGINT (rclpy 9.1.2): not offered."""


def _make_executor(kind: str):
    if kind == "single":
        return SingleThreadedExecutor()
    if kind == "multi":
        return MultiThreadedExecutor(num_threads=2)
    raise ValueError(f"executor:={kind!r} is not one of {', '.join(EXECUTORS)}")


def set_realtime_priority(priority: int, logger=None) -> bool:
    """Put every thread of this process (executor, DDS, a control loop) under SCHED_FIFO at
    ``priority``; threads started later inherit it. On a loaded machine a callback then waits
    for the CPU far less often behind other processes (measured: docs/inference.md). Returns
    False, with a warning naming the fix, where the OS does not permit it."""
    import os

    if not 1 <= int(priority) <= 99:
        raise ValueError(f"realtime_priority must be 0 (off) or 1-99, got {priority}")
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(int(priority)))
    except PermissionError:
        msg = (
            f"realtime_priority {priority} not permitted for this user: running with the normal "
            "scheduler. Allow it with an rtprio limit (e.g. '@realtime - rtprio 99' in "
            "/etc/security/limits.conf and the user in group realtime), or run as root."
        )
        (logger.warning if logger is not None else logging.getLogger("robot_policy.ros").warning)(msg)
        return False
    except FileNotFoundError:  # a thread ended while we walked the list: harmless
        pass
    return True


def run_node(factory: Callable[[], Node], executor: str = "single") -> int:
    """Init rclpy (after applying the Fast DDS profile), spin ``factory()`` until SIGINT/SIGTERM,
    then close it (``node.close()`` if defined) and shut down. Returns the process exit code.

    ``executor``: the default kind of :data:`EXECUTORS`; the node parameter ``executor``
    (``--ros-args -p executor:=multi``) overrides it."""
    apply_profile()  # before the first participant; a launcher/user-provided profile wins
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    rclpy.init(args=sys.argv)
    node = None
    code = 0
    try:
        node = factory()
        # Everything built so far (imports, models, scenes) lives as long as the process: move
        # it out of the collector's reach, so full collections stay short. Measured in the
        # recorder before this: 50-135 ms gen-2 pauses every 5-10 s while recording.
        gc.collect()
        gc.freeze()
        kind = declare(node, "executor", executor, "callback executor: " + ", ".join(EXECUTORS))
        priority = declare(
            node,
            "realtime_priority",
            0,
            "SCHED_FIFO priority 1-99 for all of this node's threads (0: the normal scheduler); "
            "needs root or an rtprio limit (docs/inference.md, 'Real-time priority')",
        )
        if priority:
            set_realtime_priority(priority, node.get_logger())
        spinner = _make_executor(kind)
        spinner.add_node(node)
        spinner.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SystemExit as e:  # a node asked to end (e.g. scripted teleop finished)
        code = int(e.code or 0)
    except Exception as e:
        if isinstance(e, (ValueError, KeyError, OSError)) or type(e).__module__.startswith("robot_policy"):
            # Configuration errors (bad parameter, missing file or checkpoint): the message says
            # what is wrong and how to fix it; a traceback would bury it.
            logging.getLogger("robot_policy.ros").error("%s: %s", type(e).__name__, e)
        else:
            logging.getLogger("robot_policy.ros").exception("node failed")
        code = 1
    finally:
        if node is not None:
            code = code or int(getattr(node, "exit_code", 0))
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logging.getLogger("robot_policy.ros").exception("error while closing the node")
            node.destroy_node()
        rclpy.try_shutdown()
    return code
