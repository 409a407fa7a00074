"""robot_policy.ros"""
