"""robot_policy.hil"""
