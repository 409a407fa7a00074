"""3Dconnexion SpaceMouse (hidapi; ``pip install 'robot_policy[teleop]'``): 6-DoF twist."""

from robot_policy.teleop.spacemouse.device import DEVICES, SpaceMouseConfig, SpaceMouseDevice, parse_report

__all__ = ["DEVICES", "SpaceMouseConfig", "SpaceMouseDevice", "parse_report"]
