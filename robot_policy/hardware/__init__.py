"""robot_policy.hardware"""
