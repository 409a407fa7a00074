"""A stand-in policy node that drifts, for the human-in-the-loop graph test.

Like ``policy_node`` it answers every observation with a chunk (JointTrajectory stamped with the
observation's capture time, one point per control period from one period after it), published
on ``/policy/joint_trajectory`` for the arbiter. Its plan: stay where the arm is, except joint 1,
which it pushes away at ``DRIFT`` rad/s, so the arm drifts off the task whenever it has control.

    python tests/drift_policy.py [hardware]
"""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_policy import conventions as conv
from robot_policy.hardware.config import load_hardware_config
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, run_node

DRIFT = 0.5
"""rad/s on the first joint."""
HORIZON = 8


class DriftPolicy(Node):
    def __init__(self, hardware: str):
        super().__init__("drift_policy")
        self.hw = load_hardware_config(hardware)
        self.names = self.hw.command_names
        self.dt = 1.0 / self.hw.control_hz
        self.pub = self.create_publisher(JointTrajectory, conv.POLICY_TRAJECTORY, COMMAND_QOS)
        self.create_subscription(JointState, conv.JOINT_STATES, self._on_js, SENSOR_QOS)
        self.get_logger().info(f"drift policy ready: joint 1 at +{DRIFT} rad/s on {conv.POLICY_TRAJECTORY}")

    def _on_js(self, msg: JointState) -> None:
        q = convert.msg_to_joint_state(msg, self.names).position.copy()
        q[-1] = -1.0  # keep the gripper open
        out = JointTrajectory(joint_names=list(self.names))
        out.header.stamp = msg.header.stamp
        for i in range(HORIZON):
            p = q.copy()
            p[0] += DRIFT * (i + 1) * self.dt
            out.points.append(
                JointTrajectoryPoint(
                    positions=p.tolist(), time_from_start=convert.to_duration((i + 1) * self.dt)
                )
            )
        self.pub.publish(out)


if __name__ == "__main__":
    hw = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "sim_tabletop"
    raise SystemExit(run_node(lambda: DriftPolicy(hw)))
