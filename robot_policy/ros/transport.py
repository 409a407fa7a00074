"""DDS transport settings for every process of the graph (no rclpy import: the launcher uses it).

The shipped Fast DDS profiles give the shared-memory transport a 32 MB segment so whole camera
frames fit (see ``fastdds_shm.xml``). ``apply_profile`` points ``FASTDDS_DEFAULT_PROFILES_FILE`` at
one of them in an environment dict before any node starts; it must happen before rclpy creates
its first participant, so the CLI and the launcher set it in the children's environment.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

_HERE = Path(__file__).resolve().parent
PROFILE = _HERE / "fastdds_shm.xml"
"""Production profile: 32 MB SHM segment, UDP on every interface."""
PROFILE_LOCALHOST = _HERE / "fastdds_shm_localhost.xml"
"""Test/CI profile: 32 MB SHM segment, UDP on loopback only."""

PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def default_profile(env: MutableMapping[str, str] | None = None) -> Path:
    """The loopback-only profile when discovery is restricted to localhost, else the production one."""
    env = os.environ if env is None else env
    local = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST" or env.get(
        "ROS_LOCALHOST_ONLY"
    ) in ("1", "true")
    return PROFILE_LOCALHOST if local else PROFILE


def apply_profile(
    env: MutableMapping[str, str] | None = None, profile: str | Path | None = "auto", override: bool = False
) -> str | None:
    """Set ``FASTDDS_DEFAULT_PROFILES_FILE`` in ``env`` (default: ``os.environ``).

    ``profile``: ``"auto"`` picks :func:`default_profile`; a path uses that file; ``None`` or
    ``"default"`` leaves Fast DDS defaults (and removes a profile this module set). A profile the
    user already exported wins unless ``override``. Also pins the RMW to Fast DDS, which the
    profile is written for. Returns the profile in effect.
    """
    env = os.environ if env is None else env
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if profile in (None, "default", "none"):
        if override:
            env.pop(PROFILE_ENV, None)
        return env.get(PROFILE_ENV)
    if env.get(PROFILE_ENV) and not override:
        return env[PROFILE_ENV]
    path = default_profile(env) if profile == "auto" else Path(profile)
    if not Path(path).exists():
        raise FileNotFoundError(f"Fast DDS profile {path} does not exist; pass an existing XML file")
    env[PROFILE_ENV] = str(path)
    return str(path)
