"""robot_policy.sim"""
