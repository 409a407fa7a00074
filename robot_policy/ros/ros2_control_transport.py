"""The rclpy side of the ``ros2_control`` arm backend (``robot_policy.robots.ros2_control``).

A node of its own, spun by its own executor thread, so the backend's ``connect()`` can wait for the
stack's first joint state while ``robot_node`` is still being built, and so the stack's topics
are exactly the YAML's: the node ignores command-line remaps (``use_global_arguments=False``), which
are meant for ``robot_node``'s own topics. A stack topic that is one of ``robot_node``'s own (after
remapping) is refused: the node would read its own output as the arm's state.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_policy.robots.base import ArmError
from robot_policy.robots.ros2_control import JointTransport, Ros2ControlConfig
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, now_s
from robot_policy.types import JointState


class Ros2ControlTransport(JointTransport):
    """Joint states from, and commands to, a ros2_control stack over DDS."""

    def __init__(self, host: Node, own_topics: set[str] = frozenset()):
        self.host = host
        self.own_topics = set(own_topics)
        self.node: Node | None = None
        self._executor: SingleThreadedExecutor | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._latest: JointState | None = None
        self._problem = ""

    def open(self, config: Ros2ControlConfig, state_names: list[str], command_names: list[str]) -> None:
        self.close()
        node = Node(
            f"{self.host.get_name()}_ros2_control",
            namespace=self.host.get_namespace(),
            context=self.host.context,
            use_global_arguments=False,
        )
        for what, topic in (
            ("joint_states_topic", config.joint_states_topic),
            ("command_topic", config.command_topic),
        ):
            resolved = node.resolve_topic_name(topic)
            if resolved in self.own_topics:
                node.destroy_node()
                raise ArmError(
                    f"ros2_control: arm_config.{what} {resolved} is a topic of {self.host.get_name()} itself; "
                    "run the stack in its own namespace or remap this node's topics (-r /joint_states:=...)"
                )
        self._state_names = list(state_names)
        self._interface = config.interface
        self._command_names = list(command_names)
        self._latest, self._problem = None, ""
        node.create_subscription(JointStateMsg, config.joint_states_topic, self._on_state, SENSOR_QOS)
        msg_type = JointTrajectory if config.interface == "joint_trajectory" else Float64MultiArray
        self._pub = node.create_publisher(msg_type, config.command_topic, COMMAND_QOS)
        self.node = node
        self._executor = SingleThreadedExecutor(context=self.host.context)
        self._executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, name="ros2_control-transport", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        ex = self._executor
        while ex is self._executor and self.host.context.ok():
            try:
                ex.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                return

    def _on_state(self, msg: JointStateMsg) -> None:
        try:
            js = convert.msg_to_joint_state(msg, self._state_names)
        except KeyError as e:
            self._problem = str(e.args[0])
            return
        stamp = js.stamp
        # The stack stamps on the graph clock; the contract stamps on time.monotonic().
        mono = time.monotonic()
        stamp = mono - (now_s(self.node) - stamp) if stamp > 0 else mono
        with self._lock:
            self._latest = JointState(js.position, min(stamp, mono), js.velocity, js.names)

    def latest(self) -> JointState | None:
        with self._lock:
            return self._latest

    def problem(self) -> str:
        return self._problem

    def send(self, positions: np.ndarray, horizon: float) -> None:
        values = np.asarray(positions, dtype=np.float64).tolist()
        if self._interface == "forward_position":
            self._pub.publish(Float64MultiArray(data=values))
            return
        # Header stamp zero: "start now", as joint_trajectory_controller reads it; one point a
        # period ahead, so the controller interpolates between our ticks.
        msg = JointTrajectory(joint_names=self._command_names)
        msg.points = [JointTrajectoryPoint(positions=values, time_from_start=convert.to_duration(horizon))]
        self._pub.publish(msg)

    def close(self) -> None:
        ex, self._executor = self._executor, None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if ex is not None:
            ex.shutdown()
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
