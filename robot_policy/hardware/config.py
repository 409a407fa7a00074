"""Robot setup configs: one ``hardware/*.yaml`` per robot (arm backend, joints, limits, cameras, rates).

The same file drives the simulated robot node, the safety layer and (later) real drivers, so a
joint limit is written once. Load with :func:`load_hardware_config`; unknown keys are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robot_policy import resources
from robot_policy.config import ConfigError, load_config


@dataclass
class CameraConfig:
    """One camera stream, published as ``/<name>/color/image_raw`` (realsense2_camera naming)."""

    name: str
    """Camera name: topic prefix and the ``<name>_rgb`` observation key."""
    width: int = 84
    """Image width in pixels."""
    height: int = 84
    """Image height in pixels."""
    fps: float = 30.0
    """Frame rate (Hz). The simulated robot renders at most once per control step."""
    depth: bool = False
    """Also publish depth (16UC1, millimetres): ``/<name>/depth/image_rect_raw`` from sim_node,
    ``/<name>/aligned_depth_to_color/image_raw`` (aligned to colour) from camera_node."""
    serial: str = ""
    """Device serial number for real cameras (empty in simulation)."""
    backend: str = "sim"
    """Camera driver backend (``robot_policy.cameras.CAMERAS``): ``sim`` renders from the MuJoCo
    scene inside sim_node; ``realsense`` and ``uvc`` run in camera_node."""
    options: dict[str, object] = field(default_factory=dict)
    """Backend-specific settings, checked by the backend's config class (unknown keys are errors
    naming the field): e.g. ``{device: /dev/video2, fourcc: MJPG}`` for uvc, ``{playback: x.db3,
    sensor_options: {exposure: 8000}}`` for realsense, ``{intrinsics: FILE.json}`` for any."""


@dataclass
class HardwareConfig:
    """A robot setup: which arm, its joints and limits, its cameras and its rates."""

    name: str
    """Setup name, stored with every recorded episode (``robot`` in the dataset)."""
    arm: str = "sim"
    """Arm driver backend (``sim`` runs a MuJoCo task in-process)."""
    arm_config: dict[str, object] = field(default_factory=dict)
    """Backend-specific settings (address, rates, gains), parsed and checked by the backend's
    config class (``robot_policy.robots``: ``ARMS.get(arm).config_class``)."""
    task: str = "tabletop"
    """Simulation task for the ``sim`` backend (see ``robot_policy.sim.list_tasks``)."""
    joint_names: list[str] = field(default_factory=list)
    """Arm joint names in command order (excluding the gripper)."""
    position_lower: list[float] = field(default_factory=list)
    """Lower joint-position limits (rad or m), one per joint."""
    position_upper: list[float] = field(default_factory=list)
    """Upper joint-position limits (rad or m), one per joint."""
    velocity_limits: list[float] = field(default_factory=list)
    """Maximum joint speed (rad/s or m/s), one per joint: commanded targets move no faster."""
    gripper_joint: str | None = "gripper"
    """Name of the gripper command (last command entry, in [-1 open, 1 closed]); null: no gripper."""
    control_hz: float = 20.0
    """Control rate (Hz): command execution and ``/joint_states`` publishing."""
    watchdog_timeout: float = 0.5
    """Seconds without a fresh command after which the arm holds its current position."""
    cameras: list[CameraConfig] = field(default_factory=list)
    """Camera streams."""
    description: str = ""
    """Robot description file (MJCF/URDF) relative to the repository, for tools that draw the robot."""

    def __post_init__(self):
        n = len(self.joint_names)
        if n == 0:
            raise ConfigError(f"hardware config '{self.name}': joint_names is empty; list the arm joints")
        for fname in ("position_lower", "position_upper", "velocity_limits"):
            if len(getattr(self, fname)) != n:
                raise ConfigError(
                    f"hardware config '{self.name}': {fname} has {len(getattr(self, fname))} entries "
                    f"but there are {n} joint_names; give one value per joint"
                )
        for j, lo, hi in zip(self.joint_names, self.position_lower, self.position_upper):
            if not lo < hi:
                raise ConfigError(f"hardware config '{self.name}': joint {j} has lower {lo} >= upper {hi}")
        if any(v <= 0 for v in self.velocity_limits):
            raise ConfigError(f"hardware config '{self.name}': velocity_limits must be > 0")
        if self.control_hz <= 0 or self.watchdog_timeout <= 0:
            raise ConfigError(f"hardware config '{self.name}': control_hz and watchdog_timeout must be > 0")

    @property
    def command_names(self) -> list[str]:
        """Names of the command vector entries: arm joints, then the gripper if any."""
        return list(self.joint_names) + ([self.gripper_joint] if self.gripper_joint else [])

    @property
    def simulated(self) -> bool:
        """The arm is a simulated world's (``arm: sim``): only then are there ``/sim/*`` topics
        (task state, scene reset, success) and cameras rendered by the robot node."""
        return self.arm == "sim"

    @property
    def command_dim(self) -> int:
        """Length of a command (arm joints plus gripper)."""
        return len(self.command_names)


def resolve_hardware_path(name_or_path: str | Path) -> Path:
    """A path to the user's own YAML wins; ``sim_tabletop`` -> the shipped ``hardware/sim_tabletop.yaml``
    (of the checkout, else of the installed package: see :mod:`robot_policy.resources`)."""
    try:
        return resources.find_file(name_or_path, "hardware", (".yaml", ".yml"), what="hardware config")
    except resources.ResourceNotFoundError as e:
        raise ConfigError(str(e)) from None


def load_hardware_config(name_or_path: str | Path) -> HardwareConfig:
    """Load a hardware YAML (by path or by short name under ``hardware/``)."""
    return load_config(HardwareConfig, resolve_hardware_path(name_or_path))
