"""The ``ros2_control`` arm backend: an arm that already runs a ros2_control stack, reached over
its joint-state and controller topics through a transport (rclpy: ``robot_policy.ros``)."""

from robot_policy.robots.ros2_control.arm import (
    INTERFACES,
    JointTransport,
    Ros2ControlArm,
    Ros2ControlConfig,
    Ros2ControlGripper,
)

__all__ = ["INTERFACES", "JointTransport", "Ros2ControlArm", "Ros2ControlConfig", "Ros2ControlGripper"]
