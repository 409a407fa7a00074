"""robot_policy.inference"""
