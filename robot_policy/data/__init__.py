"""robot_policy.data"""
