"""robot_policy.evaluation"""
