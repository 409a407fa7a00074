"""Names shared across layers, in one place: ROS 2 topic and service names, observation keys,
and the seed in the sim reset reply.

Foundation layer: imports nothing from ``robot_policy``, so the core, the nodes and the tests
can all use it. Topics follow what users already run: ``sensor_msgs/JointState`` on
``/joint_states``, ``joint_trajectory_controller`` / ``forward_position_controller`` command
topics, ``realsense2_camera`` naming for cameras (``/<camera>/color/image_raw``). Every name is
remappable at launch; these are the defaults the nodes are built with.
"""

from __future__ import annotations

import re

# -- topics ---------------------------------------------------------------------------------
JOINT_STATES = "/joint_states"
"""sensor_msgs/JointState: measured arm joints + gripper opening (the recorder's master clock)."""
JOINT_COMMANDS = "/joint_commands"
"""sensor_msgs/JointState: the target actually sent to the arm, after the safety layer. Its header
``frame_id`` is the sender's tag of the command in force (a trajectory's header ``frame_id``, a
forward command's layout label; "" when untagged): the arbiter's record of who commanded."""
TRAJECTORY = "/joint_trajectory_controller/joint_trajectory"
"""trajectory_msgs/JointTrajectory: action chunks, one point per action."""
FORWARD_COMMANDS = "/forward_position_controller/commands"
"""std_msgs/Float64MultiArray: one position target (joints, then gripper)."""
DIAGNOSTICS = "/diagnostics"
"""diagnostic_msgs/DiagnosticArray: rates, latencies, safety counters."""
SIM_OBSERVATION = "/sim/observation"
"""sensor_msgs/JointState carrying other low-dim task state; names are ``key/i``."""
TELEOP_INTERVENTION = "/teleop/intervention"
"""std_msgs/Bool: true while a human commands the arm."""
TELEOP_COMMAND = "/teleop/command"
"""std_msgs/Float64MultiArray: the human's target (command order) when an arbiter runs; the teleop
node's forward-command output is remapped here (without an arbiter it drives the robot directly)."""
POLICY_TRAJECTORY = "/policy/joint_trajectory"
"""trajectory_msgs/JointTrajectory: the policy's chunks when an arbiter runs (the policy node's
trajectory output is remapped here; the arbiter forwards them to the robot)."""
POLICY_ANNOTATIONS = "/policy/annotations"
"""trajectory_msgs/JointTrajectory beside each published plan, with the plan's header (stamp and
``frame_id`` tag) and time grid: ``joint_names`` are annotation names, each point's ``positions``
their values for that action (a TRANSIC policy's ``TRANSIC_KEYS``). The robot echoes the tag of
the plan in force on ``/joint_commands``, so the recorder files each executed action's values."""
TRANSIC_KEYS = ("transic_gate", "transic_gate_prob", "transic_residual_norm")
"""Per executed action of a TRANSIC policy: gate applied (1/0), gate probability, norm of the
applied residual (rad). Recorded with ``record_transic``; -1 for the probability (and 0 for the
others) where the step was not commanded by a TRANSIC plan (before the first, a human's)."""
TRANSIC_NO_DECISION = (0.0, -1.0, 0.0)
"""``TRANSIC_KEYS`` values of a step no TRANSIC plan commanded."""
ARBITER_STEP = "/arbiter/step"
"""sensor_msgs/JointState named ``key/i`` (like ``/sim/observation``), one per executed step,
stamped with the recorder frame it belongs to: ``intervention``, ``policy_action``, ``source``,
``interventions``."""

ROBOT_CHUNK_TRACE = "/robot/chunk_trace"
"""sensor_msgs/JointState, one per received trajectory: header stamp = the trajectory's (the capture
time it answers), names ``robot_arrival``, ``first_exec``, positions = their graph-clock seconds
(NaN when superseded before a tick used it). The policy node completes its chunk traces with it."""


def color_topic(camera: str) -> str:
    """``/<camera>/color/image_raw`` (realsense2_camera naming)."""
    return f"/{camera}/color/image_raw"


def color_info_topic(camera: str) -> str:
    """``/<camera>/color/camera_info``."""
    return f"/{camera}/color/camera_info"


def depth_topic(camera: str) -> str:
    """``/<camera>/depth/image_rect_raw`` (16UC1, millimetres)."""
    return f"/{camera}/depth/image_rect_raw"


def depth_info_topic(camera: str) -> str:
    """``/<camera>/depth/camera_info``."""
    return f"/{camera}/depth/camera_info"


def aligned_depth_topic(camera: str) -> str:
    """``/<camera>/aligned_depth_to_color/image_raw`` (16UC1 millimetres on the colour image's
    pixel grid; realsense2_camera naming with ``align_depth.enable``)."""
    return f"/{camera}/aligned_depth_to_color/image_raw"


def aligned_depth_info_topic(camera: str) -> str:
    """``/<camera>/aligned_depth_to_color/camera_info`` (the colour intrinsics)."""
    return f"/{camera}/aligned_depth_to_color/camera_info"


# -- services (std_srvs/Trigger unless noted) ----------------------------------------------
SIM_RESET = "/sim/reset"
"""New episode; the reply message carries the scene seed (see :func:`format_seed`)."""
SIM_SUCCESS = "/sim/success"
ESTOP = "/estop"
ESTOP_RESET = "/estop_reset"
RECORDER_START = "/recorder/start"
RECORDER_STOP = "/recorder/stop"
RECORDER_DISCARD = "/recorder/discard"
RECORDER_MARK_SUCCESS = "/recorder/mark_success"
"""std_srvs/SetBool."""
POLICY_RESET = "/policy/reset"
POLICY_PAUSE = "/policy/pause"
ARBITER_RESET = "/arbiter/reset"
"""New episode: the arbiter's per-episode intervention counters restart."""
TELEOP_RESET = "/teleop/reset"
"""New episode: the teleop device replans (the scripted expert) and forgets held state."""

# -- observation keys -----------------------------------------------------------------------
JOINT_POS = "joint_pos"
JOINT_VEL = "joint_vel"
GRIPPER = "gripper"
JOINT_STATE_KEYS = (JOINT_POS, JOINT_VEL, GRIPPER)
"""Observation keys carried by ``/joint_states`` (the gripper only when the robot has one)."""

IMAGE_SUFFIX = "_rgb"


def joint_state_keys(gripper: bool = True) -> list[str]:
    """Observation keys of a ``/joint_states`` message: joint_pos, joint_vel[, gripper]."""
    return [JOINT_POS, JOINT_VEL] + ([GRIPPER] if gripper else [])


def image_key(camera: str) -> str:
    """Observation key of a camera's colour image: ``<camera>_rgb``."""
    return f"{camera}{IMAGE_SUFFIX}"


def is_image_key(key: str) -> bool:
    """Whether ``key`` names a camera image (``<camera>_rgb``)."""
    return key.endswith(IMAGE_SUFFIX) and len(key) > len(IMAGE_SUFFIX)


def camera_of(key: str) -> str:
    """Camera name of an image key (``agentview_rgb`` -> ``agentview``); ValueError otherwise."""
    if not is_image_key(key):
        raise ValueError(f"image key {key!r} does not follow the '<camera>{IMAGE_SUFFIX}' naming")
    return key[: -len(IMAGE_SUFFIX)]


# -- the seed in a service reply ------------------------------------------------------------
_SEED = re.compile(r"(?:^|\s)seed=(-?\d+)(?=\s|$)")


def format_seed(seed: int) -> str:
    """``seed=N``: how ``/sim/reset`` (and ``/sim/success``) report the episode's scene seed."""
    return f"seed={int(seed)}"


def parse_seed(message: str) -> int:
    """The ``N`` of a ``seed=N`` token in a service reply written with :func:`format_seed`."""
    m = _SEED.search(message)
    if m is None:
        raise ValueError(f"service reply {message!r} carries no 'seed=N' (N an integer)")
    return int(m.group(1))


__all__ = [
    "ARBITER_RESET",
    "ARBITER_STEP",
    "POLICY_ANNOTATIONS",
    "TRANSIC_KEYS",
    "TRANSIC_NO_DECISION",
    "DIAGNOSTICS",
    "ESTOP",
    "ESTOP_RESET",
    "FORWARD_COMMANDS",
    "GRIPPER",
    "IMAGE_SUFFIX",
    "JOINT_COMMANDS",
    "JOINT_POS",
    "JOINT_STATES",
    "JOINT_STATE_KEYS",
    "JOINT_VEL",
    "POLICY_PAUSE",
    "POLICY_RESET",
    "POLICY_TRAJECTORY",
    "RECORDER_DISCARD",
    "RECORDER_MARK_SUCCESS",
    "RECORDER_START",
    "RECORDER_STOP",
    "SIM_OBSERVATION",
    "SIM_RESET",
    "SIM_SUCCESS",
    "TELEOP_COMMAND",
    "TELEOP_INTERVENTION",
    "TELEOP_RESET",
    "TRAJECTORY",
    "aligned_depth_info_topic",
    "aligned_depth_topic",
    "camera_of",
    "color_info_topic",
    "color_topic",
    "depth_info_topic",
    "depth_topic",
    "format_seed",
    "image_key",
    "is_image_key",
    "joint_state_keys",
    "parse_seed",
]
