"""robot_policy.policies"""
