"""ROS 2 layer: thin rclpy nodes (robot, sim, camera, policy, recorder, teleop, arbiter), message
conversion, the Fast DDS profiles, the XML launch-file runner and a graph client. The only package
that imports rclpy (``transport``, ``launch_file`` and ``launcher`` do not, so ``robot-policy
launch`` starts fast). See docs/ros.md."""
