"""robot_policy.calibration"""
