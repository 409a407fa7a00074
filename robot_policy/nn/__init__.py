"""robot_policy.nn"""
