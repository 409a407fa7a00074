"""Keyboard joint jogging in a terminal (no extra needed): ``robot-policy teleop keyboard``."""

from robot_policy.teleop.keyboard.device import KEY_HELP, KeyboardConfig, KeyboardDevice, KeyboardJogger

__all__ = ["KEY_HELP", "KeyboardConfig", "KeyboardDevice", "KeyboardJogger"]
