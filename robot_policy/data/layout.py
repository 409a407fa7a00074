"""Names of the on-disk layout and the store's error type: the bottom of ``robot_policy.data``.

Every other module of the package imports these at module top; this one imports nothing from
the package, so ``data/`` has no import cycle. The layout is Diffusion Policy's zarr
ReplayBuffer layout plus our own attributes::

    <path>/data/<key>          (T_total, *shape) arrays concatenated over time, chunked along time
    <path>/meta/episode_ends   int64 exclusive ends: episode i is frames [ends[i-1], ends[i])
    <path>/meta  (attrs)       "episodes": [per-episode metadata dict, ...]
    <path>       (attrs)       "robot_policy": {format_version, schema, fps, robot, pending, attrs}
    <path>       (attrs)       "robot_policy_stats": cached normalization statistics
"""

from __future__ import annotations

FORMAT_VERSION = 1
"""Version of our attributes under ``ATTR`` (the arrays follow Diffusion Policy's layout)."""

DATA_GROUP = "data"
"""Group of the per-key frame arrays, concatenated over time."""
META_GROUP = "meta"
"""Group of ``episode_ends`` and other per-episode arrays; its attributes hold ``EPISODES_ATTR``."""
EPISODE_ENDS = "episode_ends"
"""int64 array in ``META_GROUP``: exclusive end frame of each committed episode."""
EPISODES_ATTR = "episodes"
"""Attribute of ``META_GROUP``: list of per-episode metadata dicts, one per episode."""
ATTR = "robot_policy"
"""Root attribute: format version, schema, fps, robot, pending writer, user attributes."""
STATS_ATTR = "robot_policy_stats"
"""Root attribute: normalization statistics cached with a digest of ``episode_ends``."""
VALID_KEY = "valid"
"""Optional data key written by the recorder: bool ``(T, S)``, one column per recorded stream
(the KeySpec's ``names``). ``valid[k, s]`` is False when stream ``s`` had a gap at frame ``k``:
its sample was stale, or (the master stream) frames are missing right before ``k``. Training
windows that read such a frame are skipped; ``meta`` lists the gaps per episode."""
GAPS_META = "gaps"
"""Episode metadata key: list of ``{"stream", "frame", "frames"}`` runs of flagged frames."""


class StoreError(RuntimeError):
    """The store cannot do what was asked (wrong mode, no such episode, writer busy...)."""
