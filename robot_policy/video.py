"""Writing rollout videos: one encoder setup for eval, replay and the demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: list[np.ndarray], fps: float) -> None:
    """mp4 (H.264 via imageio-ffmpeg) or gif, chosen by the file suffix."""
    import imageio.v3 as iio

    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        iio.imwrite(path, np.stack(frames), duration=1000.0 / fps, loop=0)
    elif suffix in (".mp4", ".m4v", ".mov"):
        iio.imwrite(path, np.stack(frames), fps=fps, codec="libx264", macro_block_size=8, plugin="FFMPEG")
    else:
        raise ValueError(f"--video {path}: use a .mp4 or .gif file name")


def write_video_or_gif(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """``path`` with an .mp4 suffix, or .gif when no ffmpeg plugin is available; returns the file written."""
    try:
        write_video(path.with_suffix(".mp4"), frames, fps)
        return path.with_suffix(".mp4")
    except Exception:  # noqa: BLE001 - no ffmpeg plugin here: GIF needs none
        write_video(path.with_suffix(".gif"), frames, fps)
        return path.with_suffix(".gif")
