"""robot_policy.train"""
