"""Teleoperation: the device contract (``base``), Cartesian mapping (``cartesian``), the
intervention arbiter (``arbiter``), the per-tick session (``session``), one folder per device.

Importing this package registers every device in :data:`TELEOPS`; no device imports its SDK
(pygame, hidapi, dynamixel-sdk, feetech-servo-sdk) before ``connect()``.

A host (``teleop_node``, ``robot-policy teleop``) needs only::

    dev = make_teleop("spacemouse", hw, options)     # options: the device's config fields
    dev.connect()
    session = TeleopSession(dev, hw)                 # twist/pose -> joints, gripper state
    out = session.step(obs)                          # .target (command order), .intervening, .events
    dev.disconnect()
"""

from robot_policy.teleop import gamepad, keyboard, leader, scripted, spacemouse  # noqa: F401 - registers the devices
from robot_policy.teleop.base import (
    TELEOPS,
    DeviceDisconnected,
    DeviceNotFound,
    SDKMissing,
    TeleopCommand,
    TeleopConfig,
    TeleopDevice,
    TeleopError,
    TeleopEvent,
    load_options,
    make_teleop,
    register_teleop,
    teleop_class,
    teleop_config,
)
from robot_policy.teleop.session import TeleopOutput, TeleopSession

__all__ = [
    "TELEOPS",
    "DeviceDisconnected",
    "DeviceNotFound",
    "SDKMissing",
    "TeleopCommand",
    "TeleopConfig",
    "TeleopDevice",
    "TeleopError",
    "TeleopEvent",
    "TeleopOutput",
    "TeleopSession",
    "load_options",
    "make_teleop",
    "register_teleop",
    "teleop_class",
    "teleop_config",
]
