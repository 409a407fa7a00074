"""Core data types shared by every layer: numpy arrays plus capture timestamps.

All timestamps are seconds on one monotonic clock (``time.monotonic()`` in a live system,
simulated time in MuJoCo). "Time is data": a value without its capture time is not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """One camera image."""

    image: np.ndarray
    """uint8 HxWx3 RGB (or HxW uint16 depth in millimetres)."""
    stamp: float
    """Capture time in seconds on the shared clock (not arrival time)."""
    camera: str = "camera"
    """Camera name, as in ``/<camera>/color/image_raw``."""


@dataclass
class JointState:
    """Arm joint state at one instant."""

    position: np.ndarray
    """Joint positions (rad or m), float64, in the order of ``names``."""
    stamp: float
    """Capture time in seconds on the shared clock."""
    velocity: np.ndarray | None = None
    """Joint velocities, same order as ``position``; None when the driver does not report them."""
    names: tuple[str, ...] = ()
    """Joint names from the hardware config."""


@dataclass
class ActionChunk:
    """A sequence of actions, each meant to execute at a given time."""

    actions: np.ndarray
    """float32 (T, action_dim): absolute joint-position targets plus gripper by default."""
    start_time: float = 0.0
    """Time (seconds, shared clock) at which ``actions[0]`` is meant to execute."""
    dt: float = 0.1
    """Seconds between consecutive actions (1 / control rate)."""
    obs_stamp: float | None = None
    """Capture time of the newest observation the chunk answers (None: not recorded); a
    published trajectory carries it as its header stamp."""

    def times(self) -> np.ndarray:
        """Execution time of every action."""
        return self.start_time + self.dt * np.arange(len(self.actions))

    def __len__(self) -> int:
        return len(self.actions)
