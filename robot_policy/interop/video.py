"""mp4 video through PyAV: the encoder LeRobot uses (same codecs and options) and a decoder that
yields each frame with its presentation time.

Frames carry exact presentation times: ``pts = frame number`` in a time base of ``1/fps``, so
frame ``i`` of a file plays at ``i / fps`` (the mp4 muxer rescales to its own time base, which
keeps these times exact for integer and NTSC rates).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from robot_policy.interop import require
from robot_policy.sdk import keep_thread_scheduling

# LeRobot's encoder defaults (lerobot/datasets/video_utils.py): yuv420p, a keyframe every 2
# frames (cheap random access for training windows), crf 30, SVT-AV1 preset 12.
PIX_FMT = "yuv420p"
VCODECS = ("libsvtav1", "h264")


def rate_of(fps: float) -> Fraction:
    """fps as an exact fraction (30 -> 30/1, 29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Append RGB frames (H, W, 3) uint8 to an mp4; ``frames`` counts them, ``size()`` is the
    file's size so far (the muxer writes as it goes)."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        vcodec: str = "libsvtav1",
        crf: int | None = 30,
        gop: int | None = 2,
        threads: int | None = None,
    ) -> None:
        av = require("av")
        if vcodec not in VCODECS:
            raise ValueError(f"vcodec {vcodec!r}: choose one of {VCODECS}")
        if width % 2 or height % 2:
            raise ValueError(
                f"video frames must have an even width and height for {PIX_FMT} (got {width}x{height}); "
                "crop or resize the images first"
            )
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per file
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rate = rate_of(fps)
        options = {}
        if gop is not None:
            options["g"] = str(gop)
        if crf is not None:
            options["crf"] = str(crf)
        if vcodec == "libsvtav1":
            options["preset"] = "12"
            if threads:
                options["svtav1-params"] = f"lp={threads}"
        elif threads:
            options["threads"] = str(threads)
        with keep_thread_scheduling():
            self._container = av.open(str(self.path), "w")
            self._stream = self._container.add_stream(vcodec, rate=self.rate, options=options)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, PIX_FMT
        self._av = av
        self.shape = (height, width, 3)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != self.shape or rgb.dtype != np.uint8:
            raise ValueError(f"{self.path}: frame {rgb.dtype} {rgb.shape}, expected uint8 {self.shape}")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self.rate
        with keep_thread_scheduling():
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.frames += 1

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        with keep_thread_scheduling():
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode(path: str | os.PathLike) -> Iterator[tuple[float, np.ndarray]]:
    """``(presentation time in s, rgb (H, W, 3) uint8)`` for every frame of the first video stream."""
    av = require("av")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield float(frame.pts * frame.time_base), frame.to_ndarray(format="rgb24")


def info(path: str | os.PathLike) -> dict:
    """LeRobot's ``get_video_info`` fields for a video file (info.json ``features[key]["info"]``)."""
    av = require("av")
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        pix = s.pix_fmt or PIX_FMT
        channels = 1 if "gray" in pix else 4 if ("rgba" in pix or "yuva" in pix) else 3
        return {
            "video.height": s.height,
            "video.width": s.width,
            "video.codec": s.codec_context.codec.canonical_name if s.codec_context else s.codec.name,
            "video.pix_fmt": pix,
            "video.is_depth_map": False,
            "video.fps": int(s.base_rate) if s.base_rate else None,
            "video.channels": channels,
            "has_audio": False,
        }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 arrays (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
