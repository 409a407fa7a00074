"""``robot-policy dataset`` interop commands: LeRobot v3, rosbag2, Diffusion Policy, viewer.

Registered into the ``dataset`` group by ``cli/dataset.py``; the work is in
``robot_policy.interop`` (imported inside each handler, so ``--help`` stays light).
"""

from __future__ import annotations

import sys

from robot_policy.console import add_command
from robot_policy.data.codecs import IMAGE_CODECS


def register_interop(group) -> None:
    p = add_command(
        group,
        "fix-codecs",
        help="make a format-2 store's image codec configs readable by Diffusion Policy's own code",
        description="Rewrite the codec configs of a store's arrays (metadata files only, atomically) so "
        "Diffusion Policy's codec registration (diffusion_policy.codecs.imagecodecs_numcodecs) opens "
        "them under zarr-python 2. Stores written by this version are already compatible; this fixes "
        "stores written before, whose JPEG2000/JPEG-XL configs carry parameters DP's classes reject "
        "('Jpeg2k.__init__() got an unexpected keyword argument planar'). The image bytes are not touched.",
        epilog="examples:\n  robot-policy dataset fix-codecs datasets/pick_v2.zarr\n"
        "  robot-policy dataset fix-codecs datasets/pick_v2.zarr --dry-run",
    )
    p.add_argument("path", help="the store to fix in place")
    p.add_argument("--dry-run", action="store_true", help="list the arrays that would change, change nothing")
    p.set_defaults(func=_fix_codecs)

    p = add_command(
        group,
        "export-lerobot",
        help="export a store as a LeRobotDataset v3 folder (parquet + mp4), no lerobot package needed",
        description="Write SRC as a LeRobotDataset v3.0 folder: meta/info.json, meta/stats.json (with "
        "LeRobot's quantiles), meta/tasks.parquet, meta/episodes/chunk-*/file-*.parquet, "
        "data/chunk-*/file-*.parquet and one mp4 per camera under videos/. Several episodes share a "
        "file. Low-dim keys are written exactly; images are video-encoded (lossy: the command prints "
        "the PSNR). Image keys '<camera>_rgb' become 'observation.images.<camera>', 'action' stays, "
        "--state-keys are concatenated into 'observation.state', other keys become 'observation.<key>' "
        "('valid' and event keys keep their name). The mapping is saved in info.json, so "
        "import-lerobot restores the store's keys, names, dtypes and per-episode metadata.",
        epilog="examples:\n  robot-policy dataset export-lerobot datasets/pick.zarr exports/pick_lerobot\n"
        "  robot-policy dataset export-lerobot datasets/pick.zarr exports/pick --vcodec h264 --crf 23\n"
        "  robot-policy dataset export-lerobot datasets/pick.zarr exports/pick --task 'pick the cube'",
    )
    p.add_argument("src", help="episode store (.zarr)")
    p.add_argument("dst", help="new LeRobot dataset folder")
    p.add_argument(
        "--vcodec",
        choices=("libsvtav1", "h264"),
        default="libsvtav1",
        help="video codec (default libsvtav1: AV1, LeRobot's default; h264 decodes everywhere)",
    )
    p.add_argument(
        "--crf",
        type=int,
        default=30,
        help="video quality: lower is better and bigger (default 30, LeRobot's)",
    )
    p.add_argument(
        "--gop",
        type=int,
        default=2,
        help="keyframe interval in frames (default 2, LeRobot's: fast random access)",
    )
    p.add_argument(
        "--state-keys",
        default=None,
        help="comma-separated keys concatenated into observation.state (default: joint_pos,gripper when present; '' for none)",
    )
    p.add_argument("--task", default=None, help="task text for episodes whose metadata has no 'task'")
    p.add_argument(
        "--repo-id", default=None, help="repo id recorded in the dataset card (default: the folder name)"
    )
    p.add_argument(
        "--data-file-mb",
        type=float,
        default=100.0,
        help="start a new data parquet file past this size (default 100, LeRobot's)",
    )
    p.add_argument(
        "--video-file-mb",
        type=float,
        default=200.0,
        help="start a new mp4 past this size (default 200, LeRobot's)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_export_lerobot)

    p = add_command(
        group,
        "import-lerobot",
        help="import a LeRobotDataset v3 folder into a new store",
        description="Read a LeRobotDataset v3.0 folder (parquet + mp4) with pyarrow and PyAV and write an "
        "episode store. A folder exported by export-lerobot comes back with its original keys, dtypes, "
        "names and per-episode metadata; a dataset from the Hub maps 'observation.images.<cam>' to "
        "'<cam>_rgb', 'observation.<x>' to '<x>' and keeps 'action'. Tasks go to the episode metadata "
        "('task', 'tasks'). Every video frame is checked against its timestamp (LeRobot's 1e-4 s tolerance).",
        epilog="examples:\n  robot-policy dataset import-lerobot exports/pick_lerobot datasets/pick_back.zarr\n"
        "  robot-policy dataset import-lerobot ~/.cache/huggingface/lerobot/lerobot/pusht datasets/pusht.zarr",
    )
    p.add_argument("src", help="LeRobot v3 dataset folder (meta/info.json inside)")
    p.add_argument("dst", help="new episode store (.zarr)")
    p.add_argument(
        "--image-codec",
        choices=tuple(IMAGE_CODECS),
        default=None,
        help="image codec of the new store (default: the store default)",
    )
    p.add_argument(
        "--zarr-format",
        type=int,
        choices=(2, 3),
        default=3,
        help="zarr format of the new store (2 for Diffusion Policy)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_import_lerobot)

    p = add_command(
        group,
        "import-bag",
        help="import a rosbag2 recording (MCAP or sqlite3) into a store, aligned like the recorder",
        description="Read a rosbag2 bag with the 'rosbags' library (no ROS install) and write one episode "
        "per recorded episode: the topics of the hardware YAML (/joint_states, each camera's "
        "image_raw or compressed image, /joint_commands) are fed to the recorder's own aligner "
        "(robot_policy.runtime.recorder.EpisodeRecorder) by capture stamp, with the same frame-count "
        "checks and validity mask as a live recording. Episodes are split by recorder service calls "
        "(/recorder/start, /recorder/stop, /recorder/discard as recorded by 'ros2 bag record "
        "--include-services' or as std_msgs/String events on --marker-topic), or by time gaps.",
        epilog="examples:\n  robot-policy dataset import-bag bags/session1 datasets/session1.zarr --hardware real_panda\n"
        "  robot-policy dataset import-bag bags/run.mcap datasets/run.zarr --hardware fr3 --split gap --gap-s 1.0",
    )
    p.add_argument("bag", help="rosbag2 folder (metadata.yaml) or a single .mcap / .db3 file")
    p.add_argument("dst", help="episode store to create or append to (.zarr)")
    p.add_argument(
        "--hardware", required=True, help="hardware YAML (name under hardware/ or a path): joints and cameras"
    )
    p.add_argument(
        "--split",
        choices=("auto", "services", "marker", "gap", "none"),
        default="auto",
        help="how episodes are found (auto: service calls if recorded, else the marker topic, else time gaps)",
    )
    p.add_argument(
        "--marker-topic",
        default="/recorder/episode",
        help="std_msgs/String topic with start/stop/discard/success events",
    )
    p.add_argument(
        "--gap-s",
        type=float,
        default=1.0,
        help="--split gap: a master-stream silence this long ends an episode",
    )
    p.add_argument(
        "--task", default=None, help="task name stored with each episode (default: the hardware's task)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse episodes with more than --max-missing frames missing in a stream",
    )
    p.add_argument("--max-missing", type=int, default=5, help="--strict: missing frames allowed per stream")
    p.set_defaults(func=_import_bag)

    p = add_command(
        group,
        "export-bag",
        help="write a store's episodes as a rosbag2 (MCAP or sqlite3) for 'ros2 bag play'",
        description="Write every episode (or --episodes) as ROS 2 messages with their frame times: "
        "/joint_states (sensor_msgs/JointState), each camera's /<camera>/color/image_raw "
        "(sensor_msgs/Image, rgb8), /joint_commands (the action, JointState) and a /recorder/episode "
        "marker (std_msgs/String) at each episode's start and stop, so import-bag reads it back.",
        epilog="examples:\n  robot-policy dataset export-bag datasets/pick.zarr bags/pick --hardware sim_tabletop\n"
        "  ros2 bag play bags/pick",
    )
    p.add_argument("src", help="episode store (.zarr)")
    p.add_argument("dst", help="new bag folder")
    p.add_argument("--hardware", required=True, help="hardware YAML: joint names and cameras")
    p.add_argument(
        "--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)"
    )
    p.add_argument("--episodes", default=None, help="comma-separated episode indices (default: all)")
    p.set_defaults(func=_export_bag)

    p = add_command(
        group,
        "view",
        help="look at an episode: log it to Rerun (.rrd) or write its cameras to mp4",
        description="Log one episode to Rerun: camera streams, joint positions, commands and every other "
        "low-dim key as time series on a frame and a time timeline, validity gaps and metadata "
        "(success, interventions) as events. Spawns the Rerun viewer when one can start, otherwise "
        "saves an .rrd file and says how to open it. --mp4 writes the episode's cameras side by side "
        "to an mp4 instead, for people without Rerun.",
        epilog="examples:\n  robot-policy dataset view datasets/pick.zarr --episode 3\n"
        "  robot-policy dataset view datasets/pick.zarr --episode 3 --save ep3.rrd\n"
        "  robot-policy dataset view datasets/pick.zarr --episode 3 --mp4 ep3.mp4",
    )
    p.add_argument("path", help="episode store (.zarr)")
    p.add_argument("--episode", type=int, default=0, help="episode index (negative counts from the end)")
    p.add_argument(
        "--save", default=None, help="write the Rerun recording to this .rrd instead of spawning a viewer"
    )
    p.add_argument("--mp4", default=None, help="write the episode's cameras to this mp4 instead of Rerun")
    p.set_defaults(func=_view)


def _fail(e: BaseException) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 1


def _fix_codecs(args) -> int:
    from robot_policy.interop.dp import make_dp_compatible

    try:
        changed = make_dp_compatible(args.path, dry_run=args.dry_run)
    except (OSError, RuntimeError, ValueError) as e:
        return _fail(e)
    verb = "would rewrite" if args.dry_run else "rewrote"
    if changed:
        print(f"{verb} the codec config of {len(changed)} array(s): {', '.join(changed)}")
    else:
        print(f"{args.path}: every codec config is already readable by Diffusion Policy's code")
    return 0


def _export_lerobot(args) -> int:
    from robot_policy.interop.lerobot import export_lerobot

    state = None if args.state_keys is None else [k for k in args.state_keys.split(",") if k]
    try:
        rep = export_lerobot(
            args.src,
            args.dst,
            vcodec=args.vcodec,
            crf=args.crf,
            gop=args.gop,
            state_keys=state,
            task=args.task,
            repo_id=args.repo_id,
            data_file_mb=args.data_file_mb,
            video_file_mb=args.video_file_mb,
            overwrite=args.overwrite,
            progress=True,
        )
    except (FileExistsError, FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        return _fail(e)
    print(rep.summary())
    return 0


def _import_lerobot(args) -> int:
    from robot_policy.interop.lerobot import import_lerobot

    try:
        rep = import_lerobot(
            args.src,
            args.dst,
            image_codec=args.image_codec,
            zarr_format=args.zarr_format,
            overwrite=args.overwrite,
            progress=True,
        )
    except (FileExistsError, FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        return _fail(e)
    print(rep.summary())
    return 0


def _import_bag(args) -> int:
    from robot_policy.interop.bag import import_bag

    try:
        rep = import_bag(
            args.bag,
            args.dst,
            args.hardware,
            split=args.split,
            marker_topic=args.marker_topic,
            gap_s=args.gap_s,
            task=args.task,
            strict=args.strict,
            max_missing=args.max_missing,
            progress=True,
        )
    except (FileExistsError, FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        return _fail(e)
    print(rep.summary())
    return 0 if rep.committed else 1


def _export_bag(args) -> int:
    from robot_policy.interop.bag import export_bag

    eps = None if args.episodes is None else [int(x) for x in args.episodes.split(",") if x.strip()]
    try:
        rep = export_bag(args.src, args.dst, args.hardware, storage=args.storage, episodes=eps, progress=True)
    except (FileExistsError, FileNotFoundError, ImportError, ValueError, RuntimeError) as e:
        return _fail(e)
    print(rep.summary())
    return 0


def _view(args) -> int:
    from robot_policy.interop import viewer

    try:
        if args.mp4:
            out = viewer.episode_to_mp4(args.path, args.episode, args.mp4)
            print(f"wrote {out}")
            return 0
        print(viewer.view_episode(args.path, args.episode, save=args.save))
    except (FileNotFoundError, ImportError, IndexError, ValueError, RuntimeError) as e:
        return _fail(e)
    return 0
