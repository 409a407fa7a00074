"""A small in-process client of the graph: call services, latest messages, publish commands.

Used by ``robot-policy demo`` (evaluation through the graph), the ROS benchmark and the tests.
It spins its own executor thread, so every call is a plain blocking Python call.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from robot_policy import conventions as conv
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, call_service, now_s
from robot_policy.ros.transport import apply_profile


class GraphClient:
    """``with GraphClient() as c: c.call("/sim/reset"); c.latest("/joint_states")``."""

    def __init__(self, name: str = "robot_policy_client"):
        apply_profile()
        self._own_context = not rclpy.ok()
        if self._own_context:
            rclpy.init()
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._msgs: dict[str, list] = defaultdict(list)
        self._counts: dict[str, int] = defaultdict(int)
        self._cond = threading.Condition()
        self._clients = {}
        self._pubs = {}
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop and rclpy.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self._stop:
                    return
                raise

    def now(self) -> float:
        return now_s(self.node)

    # -- topics --------------------------------------------------------------------------
    def subscribe(self, topic: str, msg_type, keep: int = 1, sensor: bool = True, callback=None) -> None:
        """Keep the last ``keep`` messages of ``topic`` (with their arrival time)."""

        def cb(msg, topic=topic):
            t = time.time()
            with self._cond:
                self._counts[topic] += 1
                buf = self._msgs[topic]
                buf.append((t, msg))
                del buf[:-keep]
                self._cond.notify_all()
            if callback is not None:
                callback(msg, t)

        self.node.create_subscription(msg_type, topic, cb, SENSOR_QOS if sensor else COMMAND_QOS)

    def latest(self, topic: str, timeout: float = 10.0, after: int | None = None):
        """The newest message on ``topic`` (waits up to ``timeout``; ``after``: newer than that count)."""
        deadline = time.time() + timeout
        with self._cond:
            while not self._msgs[topic] or (after is not None and self._counts[topic] <= after):
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"no message on {topic} within {timeout:.0f} s; is its node running?")
                self._cond.wait(left)
            return self._msgs[topic][-1][1]

    def messages(self, topic: str) -> list:
        with self._cond:
            return [m for _, m in self._msgs[topic]]

    def diagnostics(self, name: str, since: float = 0.0, timeout: float = 0.0) -> dict[str, str] | None:
        """Key/values of the newest ``/diagnostics`` status called ``name`` stamped at or after
        ``since`` (graph clock, see :meth:`now`), polling up to ``timeout`` s; None if none came.

        Reads what ``subscribe("/diagnostics", DiagnosticArray, sensor=False)`` keeps.
        """
        deadline = time.time() + timeout
        while True:
            for msg in reversed(self.messages(conv.DIAGNOSTICS)):
                if msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec < since:
                    continue
                for st in msg.status:
                    if st.name == name:
                        return {kv.key: kv.value for kv in st.values}
            if time.time() >= deadline:
                return None
            time.sleep(0.1)

    def count(self, topic: str) -> int:
        with self._cond:
            return self._counts[topic]

    def publish(self, topic: str, msg, sensor: bool = False) -> None:
        if topic not in self._pubs:
            self._pubs[topic] = self.node.create_publisher(
                type(msg), topic, SENSOR_QOS if sensor else COMMAND_QOS
            )
        self._pubs[topic].publish(msg)

    def wait_for_subscribers(self, topic: str, n: int = 1, timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while self.node.count_subscribers(topic) < n:
            if time.time() > deadline:
                raise TimeoutError(f"no subscriber on {topic} within {timeout:.0f} s")
            time.sleep(0.05)

    # -- services ------------------------------------------------------------------------
    def call(self, service: str, srv_type=None, timeout: float = 20.0, **fields):
        """Call a service (std_srvs/Trigger unless ``srv_type``); returns the response."""
        if srv_type is None:
            from std_srvs.srv import Trigger as srv_type
        return call_service(self.node, self._clients, service, srv_type, timeout, **fields)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        if self._own_context:
            rclpy.try_shutdown()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
