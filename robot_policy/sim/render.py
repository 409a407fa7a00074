"""Fast offscreen rendering: one ``mujoco.Renderer`` per image size, shadows and reflections off.

Shadows (a 4096 shadow map by default) and reflections dominate the cost of an 84x84 frame on
a CPU renderer: turning them off takes a simple scene from ~26 ms to ~2-4 ms per frame.
"""

from __future__ import annotations

import atexit
import ctypes.util
import os
import weakref

import numpy as np

# Renderers still open at interpreter exit: close them while EGL is alive (else noisy __del__ errors).
_LIVE: weakref.WeakSet = weakref.WeakSet()
_HOOKED = False


def _close_all() -> None:
    for r in list(_LIVE):
        r.close()


def _hook_exit() -> None:
    # Registered after mujoco's EGL module registers eglTerminate, so (LIFO) it runs before it.
    global _HOOKED
    if not _HOOKED:
        atexit.register(_close_all)
        _HOOKED = True


def ensure_gl_backend() -> str:
    """Pick a headless GL backend: EGL when libEGL exists, else OSMesa (``MUJOCO_GL`` wins if set).

    mujoco reads ``MUJOCO_GL`` once, when it is first imported. If it was imported earlier
    without the variable (it then picks GLFW, which needs a display), switch its context class
    to the headless one, as long as PyOpenGL has not been bound to another platform yet.
    """
    import sys

    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    backend = os.environ["MUJOCO_GL"]
    if backend == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    gl = sys.modules.get("mujoco.rendering.classic.gl_context")
    if gl is not None and getattr(gl, "_MUJOCO_GL", backend) in ("", "glfw") and backend in ("egl", "osmesa"):
        if "OpenGL" not in sys.modules or os.environ.get("PYOPENGL_PLATFORM") == backend:
            import importlib

            gl.GLContext = importlib.import_module(f"mujoco.{backend}").GLContext
            gl._MUJOCO_GL = backend
    return backend


class CameraRenderer:
    """Renders named cameras of one model/data pair as uint8 HxWx3 arrays."""

    def __init__(self, model, data, hidden_geom_groups: tuple[int, ...] = ()):
        import mujoco

        self.model = model
        self.data = data
        self._renderers: dict[tuple[int, int], object] = {}
        # robosuite keeps coloured collision meshes in geom group 0 and hides them from cameras.
        self._option = mujoco.MjvOption()
        for g in hidden_geom_groups:
            self._option.geomgroup[g] = 0
        _LIVE.add(self)

    def _renderer(self, height: int, width: int):
        import mujoco

        key = (height, width)
        if key not in self._renderers:
            # The offscreen buffer must be at least as large as the image.
            self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height)
            self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, width)
            ensure_gl_backend()  # mujoco may have been imported before robot_policy.sim
            try:
                r = mujoco.Renderer(self.model, height, width)
            except Exception as e:  # noqa: BLE001 - GL failures come in many types
                raise RuntimeError(
                    f"could not create an offscreen renderer with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: {e}. "
                    "Install libegl1 (EGL) or set MUJOCO_GL=osmesa and install libosmesa6."
                ) from e
            _hook_exit()
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            self._renderers[key] = r
        return self._renderers[key]

    def render(self, camera: str | int, height: int, width: int) -> np.ndarray:
        r = self._renderer(height, width)
        r.update_scene(self.data, camera=camera, scene_option=self._option)
        return r.render().copy()

    def close(self) -> None:
        for r in self._renderers.values():
            try:
                # Free with this renderer's own context current: freeing a non-current EGL context
                # (another env's is current) raises inside mujoco's __del__.
                if getattr(r, "_gl_context", None) is not None:
                    r._gl_context.make_current()
                r.close()
            except Exception:  # noqa: BLE001 - GL teardown is best effort
                pass
        self._renderers.clear()

    def __del__(self) -> None:
        self.close()
