"""Arms: the contract (``base``), the shared control loop (``controller``), one folder per backend.

Importing this package registers every backend in :data:`ARMS`; no backend imports its SDK
before ``connect()``, so this import never needs franky, ur_rtde, the xArm SDK or MuJoCo.
"""

from robot_policy.robots import franka, ros2_control, sim, ur_rtde, xarm  # noqa: F401 - registers the backends
from robot_policy.robots.base import (
    ARMS,
    Arm,
    ArmConfig,
    ArmError,
    Gripper,
    GripperState,
    SDKMissing,
    arm_config_from,
    make_arm,
    register_arm,
)
from robot_policy.robots.controller import ArmController

__all__ = [
    "ARMS",
    "Arm",
    "ArmConfig",
    "ArmController",
    "ArmError",
    "Gripper",
    "GripperState",
    "SDKMissing",
    "arm_config_from",
    "make_arm",
    "register_arm",
]
