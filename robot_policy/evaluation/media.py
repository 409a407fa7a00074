"""Per-episode camera media of an evaluation session: a thumbnail strip and a short video per camera.

Files are named by trial and hidden label (``t003_A_agentview.png``), never by policy, so a
folder of media reveals nothing before the session ends. Paths are stored relative to the
session file's folder, so a session folder can be moved or archived whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

THUMB_HEIGHT = 96
"""Thumbnail height in pixels (each frame of the strip is scaled to it)."""


def _resize(img: np.ndarray, height: int) -> np.ndarray:
    """Nearest-neighbour resize to ``height`` rows (keeps the aspect ratio; no extra dependency)."""
    h, w = img.shape[:2]
    width = max(1, round(w * height / h))
    rows = np.minimum((np.arange(height) * h / height).astype(int), h - 1)
    cols = np.minimum((np.arange(width) * w / width).astype(int), w - 1)
    return img[rows][:, cols]


def _even(img: np.ndarray, block: int = 8) -> np.ndarray:
    """RGB uint8 padded (edge pixels) to a multiple of ``block``: H.264 encoders want one, and
    imageio would otherwise rescale the frame with a warning per video."""
    img = np.asarray(img, np.uint8)[..., :3]
    h, w = img.shape[:2]
    return np.pad(img, ((0, -h % block), (0, -w % block), (0, 0)), mode="edge")


def thumbnail_strip(frames: list[np.ndarray], n: int = 3, height: int = THUMB_HEIGHT) -> np.ndarray:
    """``n`` frames spread over the episode (first ... last), side by side, ``height`` rows."""
    idx = np.unique(np.linspace(0, len(frames) - 1, num=min(n, len(frames))).round().astype(int))
    tiles = [_resize(np.asarray(frames[i], dtype=np.uint8), height) for i in idx]
    gap = np.full((height, 2, 3), 255, np.uint8)
    parts = []
    for t in tiles:
        parts += [t[..., :3], gap]
    return np.concatenate(parts[:-1], axis=1)


def write_episode_media(
    frames: dict[str, list[np.ndarray]], folder: Path, stem: str, fps: float, root: Path
) -> dict[str, dict[str, str]]:
    """Write ``<stem>_<camera>.png`` (thumbnail strip) and a video per camera into ``folder``.

    Returns ``{camera: {"thumb": path, "video": path}}`` with paths relative to ``root``.
    Cameras without frames are skipped.
    """
    import imageio.v3 as iio

    from robot_policy.video import write_video_or_gif

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, str]] = {}
    for cam, imgs in frames.items():
        if not imgs:
            continue
        thumb = folder / f"{stem}_{cam}.png"
        iio.imwrite(thumb, thumbnail_strip(imgs))
        video = write_video_or_gif([_even(f) for f in imgs], folder / f"{stem}_{cam}", fps)
        out[cam] = {
            "thumb": str(thumb.resolve().relative_to(Path(root).resolve())),
            "video": str(video.resolve().relative_to(Path(root).resolve())),
        }
    return out
