"""robot_policy: from teleoperated demonstrations to deployed generative policies, ROS 2-native.

The core (everything but ``robot_policy.ros``) runs in a plain Python process: no rclpy needed.
"""

__version__ = "0.1.0"
