"""The ``sim`` arm backend: the arm of a simulated MuJoCo world (``SimWorld``), whose cameras are
read from the same world."""

from robot_policy.robots.sim.arm import SimArm, SimArmConfig, SimGripper
from robot_policy.robots.sim.world import SimWorld

__all__ = ["SimArm", "SimArmConfig", "SimGripper", "SimWorld"]
