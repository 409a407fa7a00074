"""Universal Robots backend (ur_rtde servoJ streaming): registers arm ``ur_rtde``."""

from robot_policy.robots.ur_rtde.arm import URArm, URConfig

__all__ = ["URArm", "URConfig"]
