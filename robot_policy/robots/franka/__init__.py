"""Franka FR3 / Panda backend (franky), tested against franky-sim: registers arm ``franka``."""

from robot_policy.robots.franka.arm import FrankaArm, FrankaConfig, FrankyGripper
from robot_policy.robots.franka.sim_server import FrankySimServer, free_loopback_address

__all__ = ["FrankaArm", "FrankaConfig", "FrankyGripper", "FrankySimServer", "free_loopback_address"]
