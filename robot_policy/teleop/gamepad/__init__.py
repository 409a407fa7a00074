"""Gamepad (SDL via pygame; ``pip install 'robot_policy[teleop]'``): Cartesian twist, deadman button."""

from robot_policy.teleop.gamepad.device import GamepadConfig, GamepadDevice

__all__ = ["GamepadConfig", "GamepadDevice"]
