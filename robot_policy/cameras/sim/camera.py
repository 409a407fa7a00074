"""A camera of a MuJoCo scene: renders one named camera of the model/data it is given.

The simulated world (arm, cameras, task) is one object in one process; this backend does not own
it. Whoever steps the physics (the sim robot) hands over its ``model`` and ``data`` (and, to share
GL contexts, its :class:`~robot_policy.sim.render.CameraRenderer`), and every ``read()`` renders
the current state. There is nothing newer to wait for in a simulation: a read at the same
simulated time renders the same instant again, with the same ``number``.

Stamps are simulated time (``data.time``) unless a ``clock`` is given (a node running the
simulation in real time passes its host clock). Intrinsics follow from the camera's ``fovy`` and
the image size (``fy = 0.5 H / tan(fovy / 2)``, ``cx = (W - 1) / 2``); depth is MuJoCo's depth
buffer (distance along the optical axis), aligned to colour by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_policy.camera_model import Intrinsics, pinhole_from_fovy
from robot_policy.cameras.base import Camera, CameraConfig, CameraError, Capture, import_sdk, register_camera
from robot_policy.types import Frame

MAX_DEPTH_M = 65.0
"""Depth beyond this (and the far plane) is reported as 0 (no return), as uint16 millimetres cannot hold it."""


@dataclass
class SimCameraConfig(CameraConfig):
    """A camera of the MuJoCo scene (``backend: sim``)."""

    camera: str = ""
    """MuJoCo camera name in the model; empty: the same as ``name``."""
    hidden_geom_groups: list[int] = field(default_factory=list)
    """Geom groups not drawn (robosuite keeps collision meshes in group 0)."""


@register_camera("sim")
class SimCamera(Camera):
    """Renders ``config.camera`` from a MuJoCo ``model``/``data`` owned by the caller."""

    config_class = SimCameraConfig
    extra = "sim"
    has_depth = True
    standalone = False  # renders the robot node's MuJoCo scene; that node publishes it

    def __init__(
        self,
        config: SimCameraConfig,
        model: Any = None,
        data: Any = None,
        renderer: Any = None,
        clock: Callable[[], float] | None = None,
    ):
        super().__init__(config)
        if model is None or data is None:
            raise CameraError(
                f"camera '{config.name}': the sim backend renders a MuJoCo scene it is given: "
                "pass model= and data= (the simulated robot's)"
            )
        self.config: SimCameraConfig = config
        self.model, self.data = model, data
        self._renderer = renderer
        self._clock = clock or (lambda: float(self.data.time))
        self._depth_renderer = None
        self._connected = False
        self._last_time: float | None = None
        self._number = -1
        self._cam_id = self._camera_id()

    @property
    def camera_name(self) -> str:
        return self.config.camera or self.config.name

    def _camera_id(self) -> int:
        mujoco = import_sdk("mujoco", backend="sim", package="mujoco", extra="sim")
        cid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera_name)
        if cid < 0:
            names = [
                mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(self.model.ncam)
            ]
            raise CameraError(
                f"camera '{self.config.name}': the MuJoCo model has no camera {self.camera_name!r}; "
                f"cameras: {names} (set camera: to one of them)"
            )
        return cid

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        from robot_policy.sim.render import CameraRenderer

        if self._renderer is None:
            self._renderer = CameraRenderer(self.model, self.data, tuple(self.config.hidden_geom_groups))
            self._own_renderer = True
        self._connected = True

    def disconnect(self) -> None:
        if getattr(self, "_own_renderer", False) and self._renderer is not None:
            self._renderer.close()
            self._renderer = None
            self._own_renderer = False
        if self._depth_renderer is not None:
            try:
                self._depth_renderer._gl_context.make_current()
                self._depth_renderer.close()
            except Exception:  # noqa: BLE001 - GL teardown is best effort
                pass
            self._depth_renderer = None
        self._connected = False

    def read(self, timeout_s: float | None = None) -> Capture:
        self._require_connected()
        cfg = self.config
        stamp = self._clock()
        if stamp != self._last_time:
            self._number += 1
            self.stats.frame_number(self._number)
            self._last_time = stamp
        rgb = self._renderer.render(self.camera_name, cfg.height, cfg.width)
        capture = Capture(color=Frame(image=rgb, stamp=stamp, camera=cfg.name), number=self._number)
        if cfg.depth:
            capture.depth = Frame(image=self._render_depth(), stamp=stamp, camera=cfg.name)
        self.stats.returned(stamp, self._clock())
        return capture

    def _render_depth(self) -> np.ndarray:
        import mujoco

        cfg = self.config
        if self._depth_renderer is None:
            vis = self.model.vis.global_
            vis.offheight, vis.offwidth = max(vis.offheight, cfg.height), max(vis.offwidth, cfg.width)
            self._depth_renderer = mujoco.Renderer(self.model, cfg.height, cfg.width)
            self._depth_renderer.enable_depth_rendering()
        r = self._depth_renderer
        r.update_scene(self.data, camera=self.camera_name)
        d = r.render()
        return np.where(np.isfinite(d) & (d < MAX_DEPTH_M), np.round(d * 1000.0), 0).astype(np.uint16)

    def device_intrinsics(self) -> Intrinsics:
        m, cid = self.model, self._cam_id
        if np.any(np.asarray(m.cam_sensorsize[cid]) > 0):
            raise CameraError(
                f"camera '{self.config.name}': MuJoCo camera {self.camera_name!r} uses sensorsize/focal; "
                "only fovy cameras are supported (give intrinsics: a calibration file instead)"
            )
        return pinhole_from_fovy(
            float(m.cam_fovy[cid]), self.config.width, self.config.height, source=f"mujoco:{self.camera_name}"
        )

    def status(self) -> dict[str, Any]:
        return super().status() | {"mujoco_camera": self.camera_name}
