"""Simulated cameras: render a camera of a MuJoCo scene owned by the caller."""

from robot_policy.cameras.sim.camera import SimCamera, SimCameraConfig

__all__ = ["SimCamera", "SimCameraConfig"]
