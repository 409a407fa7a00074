"""Leader arms on a servo bus (``pip install 'robot_policy[teleop]'``): GELLO-style Dynamixel and
LeRobot SO-101 (Feetech), joint-to-joint with a calibration file."""

from robot_policy.teleop.leader.bus import SERVO_BUSES, BusError, BusLost, DynamixelBus, FeetechBus, ServoBus
from robot_policy.teleop.leader.calibration import (
    LeaderCalibration,
    LeaderGripper,
    LeaderJoint,
    load_calibration,
)
from robot_policy.teleop.leader.device import LeaderConfig, LeaderDevice

__all__ = [
    "SERVO_BUSES",
    "BusError",
    "BusLost",
    "DynamixelBus",
    "FeetechBus",
    "LeaderCalibration",
    "LeaderConfig",
    "LeaderDevice",
    "LeaderGripper",
    "LeaderJoint",
    "ServoBus",
    "load_calibration",
]
