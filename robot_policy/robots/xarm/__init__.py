"""UFACTORY xArm backend (xarm-python-sdk servo mode): registers arm ``xarm``."""

from robot_policy.robots.xarm.arm import XArmArm, XArmConfig, XArmGripper

__all__ = ["XArmArm", "XArmConfig", "XArmGripper"]
