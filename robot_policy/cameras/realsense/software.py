"""A RealSense stand-in built on pyrealsense2's own ``software_device``: frames you generate, with the
timestamps and frame numbers you choose, go through librealsense exactly as a camera's would.

Used by the tests (and usable to feed rendered MuJoCo frames through the real driver path)::

    sw = SoftwareRealSense(width=640, height=480, fps=30, serial="SW0001")
    cam = RealSenseCamera(RealSenseConfig(depth=True), device=sw.device)
    cam.connect()
    sw.push(rgb, depth_mm, timestamp_ms=..., number=7)       # what the camera would send
    capture = cam.read()

``record(path)`` wraps the device in ``rs.recorder`` so the frames pushed are also written to a
``.db3`` recording (librealsense >= 2.57 writes only .db3), playable with ``playback: path``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_policy.camera_model import Intrinsics, pinhole_from_fovy
from robot_policy.cameras.realsense.camera import _rs


class SoftwareRealSense:
    """A software device with a depth sensor (z16, 1 mm units) and a colour sensor (rgb8)."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        serial: str = "SW0000",
        intrinsics: Intrinsics | None = None,
        depth_units: float = 0.001,
    ):
        rs = _rs()
        self.rs = rs
        self.width, self.height, self.fps = int(width), int(height), int(round(fps))
        self.depth_units = depth_units
        intr = intrinsics or pinhole_from_fovy(58.0, width, height)
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        self._depth_sensor = self.device.add_sensor("Stereo Module")
        self._color_sensor = self.device.add_sensor("RGB Camera")
        self._depth_profile = rs.video_stream_profile(
            self._depth_sensor.add_video_stream(self._stream(rs.stream.depth, 0, rs.format.z16, 2, intr))
        )
        self._color_profile = rs.video_stream_profile(
            self._color_sensor.add_video_stream(self._stream(rs.stream.color, 1, rs.format.rgb8, 3, intr))
        )
        self._depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
        # rs.align needs the depth->colour extrinsics; a software device's default is all zeros
        # (which aligns every pixel to nothing), so register the identity: co-located sensors.
        ext = rs.extrinsics()
        ext.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        ext.translation = [0.0, 0.0, 0.0]
        self._depth_profile.register_extrinsics_to(self._color_profile, ext)
        self._keep: list[np.ndarray] = []
        self._recorder = None

    def _stream(self, kind, uid: int, fmt, bpp: int, intr: Intrinsics):
        rs = self.rs
        i = rs.intrinsics()
        i.width, i.height = self.width, self.height
        i.fx, i.fy, i.ppx, i.ppy = intr.fx, intr.fy, intr.cx, intr.cy
        i.model = rs.distortion.brown_conrady
        i.coeffs = [float(c) for c in (list(intr.dist) + [0.0] * 5)[:5]]
        s = rs.video_stream()
        s.type, s.index, s.uid = kind, 0, uid
        s.width, s.height, s.fps, s.bpp, s.fmt = self.width, self.height, self.fps, bpp, fmt
        s.intrinsics = i
        return s

    def record(self, path: str) -> Any:
        """Wrap the device in ``rs.recorder(path)``; returns the device a camera should open.
        Call :meth:`stop_recording` (and disconnect the camera) before reading the file back."""
        self._recorder = self.rs.recorder(str(path), self.device)
        return self._recorder

    def stop_recording(self) -> None:
        """Drop the recorder: librealsense finalises the file when its last reference goes."""
        self._recorder = None

    def push(
        self,
        rgb: np.ndarray,
        depth_mm: np.ndarray | None = None,
        *,
        timestamp_ms: float,
        number: int,
        domain: str = "global_time",
        depth_timestamp_ms: float | None = None,
    ) -> None:
        """Send one colour frame (and one depth frame) as the camera would, in that order's reverse:
        depth first, as a D4xx usually delivers it. ``domain`` is a ``rs.timestamp_domain`` name."""
        rs = self.rs
        dom = getattr(rs.timestamp_domain, domain)
        if depth_mm is not None:
            raw = np.rint(np.asarray(depth_mm, dtype=np.float64) * 0.001 / self.depth_units).astype(np.uint16)
            ts = timestamp_ms if depth_timestamp_ms is None else depth_timestamp_ms
            self._send(self._depth_sensor, self._depth_profile, raw, 2, ts, number, dom)
        self._send(
            self._color_sensor,
            self._color_profile,
            np.asarray(rgb, dtype=np.uint8),
            3,
            timestamp_ms,
            number,
            dom,
        )

    def _send(self, sensor, profile, pixels: np.ndarray, bpp: int, ts: float, number: int, dom) -> None:
        rs = self.rs
        pixels = np.ascontiguousarray(pixels)
        # librealsense keeps a pointer to the pixels until the frame is released: keep the last few alive.
        self._keep = (self._keep + [pixels])[-16:]
        f = rs.software_video_frame()
        f.pixels = pixels
        f.stride = self.width * bpp
        f.bpp = bpp
        f.timestamp = float(ts)
        f.domain = dom
        f.frame_number = int(number)
        f.profile = profile
        if bpp == 2:
            f.depth_units = self.depth_units
        sensor.on_video_frame(f)
