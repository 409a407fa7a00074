"""ROS-free logic behind the ROS 2 nodes: episode recording from timestamped streams and
observation assembly for a policy server. Nodes in ``robot_policy/ros/`` only convert messages
and call into here, so the same logic runs in tests and scripts without rclpy."""
