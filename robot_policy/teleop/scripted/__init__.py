"""The sim task's scripted expert as a teleop device (so everything runs without a person)."""

from robot_policy.teleop.scripted.device import ScriptedConfig, ScriptedDevice, ScriptedSource

__all__ = ["ScriptedConfig", "ScriptedDevice", "ScriptedSource"]
