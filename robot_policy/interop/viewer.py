"""Look at one episode: Rerun (``rerun-sdk``, LeRobot's choice) or a plain mp4 of its cameras.

Rerun layout of an episode (timelines ``frame`` and ``time``, seconds from the episode start):

    cameras/<camera>          each image key, one image per frame (JPEG-compressed above 0.2 MP)
    robot/joint_pos ...       joint positions, velocities, gripper, as time series (named lines)
    robot/action              the commands
    data/<key>                every other low-dim key (valid mask as 0/1, intervention, task state)
    events                    gaps of the validity mask, intervention on/off, the outcome
    meta                      the episode's metadata and the store's description (static text)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from robot_policy import conventions as conv
from robot_policy.data.codecs import is_image_spec
from robot_policy.interop import require

ROBOT_KEYS = (conv.JOINT_POS, conv.JOINT_VEL, conv.GRIPPER, "action")
MAX_SERIES = 64  # wider low-dim keys (flattened images, point sets) are not plotted
COMPRESS_PIXELS = 200_000


def _camera(key: str) -> str:
    return conv.camera_of(key) if conv.is_image_key(key) else key


def can_spawn_viewer() -> bool:
    """A Rerun viewer window can open: a display on Linux, always elsewhere."""
    import sys

    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def log_episode(rec, store, episode: int) -> dict:
    """Log episode ``episode`` of ``store`` to the Rerun recording stream ``rec``; returns counts."""
    rr = require("rerun", "rerun-sdk")
    s = store.episode_slice(episode)
    episode %= store.num_episodes
    n = s.stop - s.start
    fps = store.fps or 1.0
    meta = store.episode_meta(episode)
    schema = store.schema
    frames = np.arange(n)
    times = frames / fps
    rec.log(
        "meta",
        rr.TextDocument(
            json.dumps(
                {
                    "store": store.path,
                    "episode": episode,
                    "frames": n,
                    "fps": store.fps,
                    "robot": store.robot,
                    "meta": meta,
                },
                indent=2,
                default=str,
            ),
            media_type=rr.MediaType.TEXT,
        ),
        static=True,
    )
    index = [rr.TimeColumn("frame", sequence=frames), rr.TimeColumn("time", duration=times)]
    counts = {"images": 0, "series": 0, "events": 0}
    image_keys = [k for k, sp in schema.items() if is_image_spec(sp.dtype, sp.shape)]
    for key, spec in schema.items():
        if key in image_keys:
            continue
        width = int(np.prod(spec.shape, dtype=np.int64)) if spec.shape else 1
        if width > MAX_SERIES:
            continue
        values = np.asarray(store.array(key)[s.start : s.stop]).reshape(n, width).astype(np.float64)
        entity = f"robot/{key}" if key in ROBOT_KEYS else f"data/{key}"
        names = (
            spec.names if spec.names and len(spec.names) == width else [f"{key}[{i}]" for i in range(width)]
        )
        rec.log(entity, rr.SeriesLines(names=names), static=True)
        rec.send_columns(entity, indexes=index, columns=rr.Scalars.columns(scalars=values))
        counts["series"] += width
    for key in image_keys:
        arr = store.array(key)
        for i in range(n):
            img = np.asarray(arr[s.start + i])
            rec.set_time("frame", sequence=i)
            rec.set_time("time", duration=float(times[i]))
            image = rr.Image(img)
            if img.shape[0] * img.shape[1] > COMPRESS_PIXELS:
                image = image.compress(jpeg_quality=90)
            rec.log(f"cameras/{_camera(key)}", image)
            counts["images"] += 1

    def event(i: int, text: str, level: str = "INFO") -> None:
        rec.set_time("frame", sequence=int(i))
        rec.set_time("time", duration=float(i / fps))
        rec.log("events", rr.TextLog(text, level=level))
        counts["events"] += 1

    for g in meta.get("gaps") or []:
        what = (
            f"{g.get('missing')} frames missing" if g.get("missing") else f"{g.get('frames')} frames flagged"
        )
        event(min(int(g.get("frame", 0)), max(n - 1, 0)), f"gap in {g.get('stream')}: {what}", "WARN")
    if "intervention" in schema:
        flag = np.asarray(store.array("intervention")[s.start : s.stop]).reshape(n, -1).any(axis=1)
        prev = False
        for i, f in enumerate(flag):
            if f != prev:
                event(
                    i,
                    "human intervention starts" if f else "human intervention ends",
                    "WARN" if f else "INFO",
                )
            prev = bool(f)
    if "success" in meta:
        event(
            max(n - 1, 0),
            f"episode outcome: success={meta['success']}",
            "INFO" if meta["success"] else "ERROR",
        )
    return counts


def view_episode(
    path: str | os.PathLike,
    episode: int = 0,
    save: str | os.PathLike | None = None,
    spawn: bool | None = None,
) -> str:
    """Log an episode to Rerun: into the viewer when one can open (``spawn``; default: when a
    display exists), else into an ``.rrd`` file (``save``; default ``<store>_episode<K>.rrd``).
    Returns a sentence saying where it went and how to open it."""
    rr = require("rerun", "rerun-sdk")
    from robot_policy.data import EpisodeStore

    store = EpisodeStore.open(path, "r")
    if store.num_episodes == 0:
        raise ValueError(f"{path} has no episodes")
    store.episode_slice(episode)  # IndexError naming the range
    k = episode % store.num_episodes
    rec = rr.RecordingStream("robot_policy", recording_id=f"{Path(path).name}#{k}")
    spawn = (save is None and can_spawn_viewer()) if spawn is None else spawn
    where = None
    if spawn:
        try:
            rec.spawn()
            where = "sent to the Rerun viewer"
        except Exception as e:  # noqa: BLE001 - no viewer binary / cannot start: save instead
            where = None
            spawn_error = e
    if where is None:
        out = Path(save) if save else Path(f"{Path(path).stem}_episode{k}.rrd")
        out.parent.mkdir(parents=True, exist_ok=True)
        rec.save(out)
    counts = log_episode(rec, store, k)
    rec.flush()
    if where is None:
        rec.disconnect()
        why = (
            ""
            if save
            else (
                f" (no viewer could be spawned: {spawn_error})"
                if spawn
                else " (no display here to spawn a viewer)"
            )
        )
        return (
            f"episode {k} of {path}: {counts['images']} images, {counts['series']} series, {counts['events']} events "
            f"saved to {out}{why}; open it with: rerun {out}   (the viewer ships with 'pip install rerun-sdk')"
        )
    return f"episode {k} of {path}: {counts['images']} images, {counts['series']} series, {counts['events']} events {where}"


def episode_to_mp4(path: str | os.PathLike, episode: int, out: str | os.PathLike, crf: int = 18) -> Path:
    """Write the episode's cameras side by side to an H.264 mp4 at the store's fps; returns ``out``."""
    from robot_policy.data import EpisodeStore
    from robot_policy.interop.video import VideoWriter

    store = EpisodeStore.open(path, "r")
    s = store.episode_slice(episode)
    cams = [k for k, sp in store.schema.items() if is_image_spec(sp.dtype, sp.shape)]
    if not cams:
        raise ValueError(
            f"{path} has no image keys to write (keys: {store.keys}); use Rerun for the time series"
        )
    shapes = [store.schema[k].shape for k in cams]
    h = max(sh[0] for sh in shapes)
    w = sum(sh[1] for sh in shapes)
    H, W = h + h % 2, w + w % 2
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise ValueError(f"--mp4 {out}: use a .mp4 file name")
    with VideoWriter(out, store.fps or 10.0, W, H, vcodec="h264", crf=crf, gop=None) as wr:
        for a in range(s.start, s.stop, 64):
            b = min(s.stop, a + 64)
            blocks = [np.asarray(store.array(k)[a:b]) for k in cams]
            for i in range(b - a):
                canvas = np.zeros((H, W, 3), np.uint8)
                x = 0
                for blk in blocks:
                    img = blk[i]
                    if img.ndim == 2:
                        img = img[..., None]
                    img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
                    canvas[: img.shape[0], x : x + img.shape[1]] = img
                    x += img.shape[1]
                wr.write(canvas)
    return out
