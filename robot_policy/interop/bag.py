"""rosbag2 recordings to episode stores and back, with ``rosbags`` (no ROS install).

**Import** (:func:`import_bag`). The topics of a hardware YAML are read from an MCAP or sqlite3
bag: ``/joint_states`` (the master clock), each camera's ``/<camera>/color/image_raw``
(``sensor_msgs/Image``) or ``.../image_raw/compressed`` (``sensor_msgs/CompressedImage``),
``/joint_commands`` (``sensor_msgs/JointState``, the executed command; a
``/forward_position_controller/commands`` ``Float64MultiArray`` stands in when it is absent),
and, when present, ``/sim/observation`` and ``/teleop/intervention``. Each episode's messages
are fed, in the order the bag logged them, to the recorder's own
:class:`~robot_policy.runtime.recorder.EpisodeRecorder`, which aligns them by capture stamp with
its :class:`~robot_policy.runtime.align.StreamAligner`, counts missing frames per stream, writes
the ``valid`` mask and the ``gaps`` metadata, and refuses an episode exactly as a live
recording would. Nothing of the alignment is re-implemented here.

Episodes are found by (``split``):

- ``services``: recorder service calls recorded with ``ros2 bag record --include-services``
  (``/recorder/start/_service_event`` ... ``std_srvs/srv/Trigger_Event``): start, stop,
  discard, and ``/recorder/mark_success`` (``SetBool``) for the success flag;
- ``marker``: a ``std_msgs/String`` topic (default ``/recorder/episode``) carrying ``start``,
  ``stop``, ``discard``, ``success`` or ``failure`` (``export_bag`` writes these);
- ``gap``: the master stream falls silent for longer than ``gap_s``;
- ``none``: the whole bag is one episode; ``auto`` picks the first of these the bag supports.

**Export** (:func:`export_bag`): a store's episodes as those same messages, with frame times
``t0 + k / fps``, so ``ros2 bag play`` replays them into a graph and ``import_bag`` reads them back.

The code lives in ``bag_messages`` (types, stamps, message conversions), ``bag_import`` and
``bag_export``; the public names are re-exported here.
"""

from robot_policy.interop.bag_export import BagExportReport, export_bag
from robot_policy.interop.bag_import import (
    BagImportReport,
    BagSource,
    Episode,
    episodes_from_calls,
    episodes_from_gaps,
    hardware_topics,
    import_bag,
)
from robot_policy.interop.bag_messages import (
    MARKER_TOPIC,
    NS,
    REQUEST_RECEIVED,
    REQUEST_SENT,
    SERVICE_SUFFIX,
    compressed_array,
    image_array,
    joint_obs,
    named_vector,
    ros_header,
    ros_time,
    stamp_of,
    typestore,
)

# the names these helpers had before the module was split (tests build messages with them)
_time = ros_time
_header = ros_header

__all__ = [
    "MARKER_TOPIC",
    "NS",
    "REQUEST_RECEIVED",
    "REQUEST_SENT",
    "SERVICE_SUFFIX",
    "BagExportReport",
    "BagImportReport",
    "BagSource",
    "Episode",
    "compressed_array",
    "episodes_from_calls",
    "episodes_from_gaps",
    "export_bag",
    "hardware_topics",
    "image_array",
    "import_bag",
    "joint_obs",
    "named_vector",
    "ros_header",
    "ros_time",
    "stamp_of",
    "typestore",
]
