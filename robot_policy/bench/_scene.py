"""Realistic camera frames for storage benchmarks, rendered with plain MuJoCo.

Codec figures measured on random noise are meaningless (noise does not compress, real scenes
do), so the store benchmark renders a small tabletop scene: textured floor and table, a
jointed arm that moves, coloured blocks, shadows. Two cameras (front and side) like a typical
two-RealSense cell. Needs the ``sim`` extra (mujoco) and a headless GL (``MUJOCO_GL=egl``).
"""

from __future__ import annotations

import os

import numpy as np

SCENE_XML = """
<mujoco model="bench_tabletop">
  <visual><global offwidth="640" offheight="480"/><quality shadowsize="2048"/></visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.6 0.7 0.8" rgb2="0.1 0.1 0.15"
             width="256" height="256"/>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.35 0.35 0.38" rgb2="0.28 0.28 0.3"
             width="512" height="512" mark="random" markrgb="0.5 0.5 0.5" random="0.05"/>
    <texture name="wood" type="2d" builtin="flat" rgb1="0.55 0.4 0.25" rgb2="0.45 0.3 0.18"
             width="512" height="512" mark="random" markrgb="0.6 0.45 0.3" random="0.3"/>
    <material name="floor" texture="floor" texrepeat="8 8" reflectance="0.05"/>
    <material name="wood" texture="wood" texrepeat="3 3"/>
    <material name="arm" rgba="0.92 0.92 0.92 1" specular="0.5" shininess="0.6"/>
    <material name="joint" rgba="0.15 0.15 0.15 1"/>
  </asset>
  <worldbody>
    <light pos="0.5 -0.5 2.5" dir="-0.2 0.2 -1" diffuse="0.8 0.8 0.8" castshadow="true"/>
    <light pos="-1 1 2" dir="0.5 -0.5 -1" diffuse="0.3 0.3 0.3" castshadow="false"/>
    <geom type="plane" size="3 3 0.1" material="floor"/>
    <geom type="box" pos="0.5 0 0.4" size="0.45 0.6 0.02" material="wood"/>
    <geom type="cylinder" pos="0.5 0 0.2" size="0.05 0.19" rgba="0.2 0.2 0.2 1"/>
    <body name="base" pos="0.1 0 0.42">
      <geom type="cylinder" size="0.07 0.04" material="joint"/>
      <body name="l1" pos="0 0 0.04">
        <joint name="j1" type="hinge" axis="0 0 1" range="-3 3"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.3" size="0.045" material="arm"/>
        <body name="l2" pos="0 0 0.3">
          <joint name="j2" type="hinge" axis="0 1 0" range="-2 2"/>
          <geom type="sphere" size="0.055" material="joint"/>
          <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.04" material="arm"/>
          <body name="l3" pos="0.3 0 0">
            <joint name="j3" type="hinge" axis="0 1 0" range="-2.5 2.5"/>
            <geom type="sphere" size="0.05" material="joint"/>
            <geom type="capsule" fromto="0 0 0 0.25 0 0" size="0.035" material="arm"/>
            <body name="hand" pos="0.25 0 0">
              <joint name="j4" type="hinge" axis="1 0 0" range="-3 3"/>
              <geom type="box" size="0.02 0.06 0.02" material="joint"/>
              <geom type="box" pos="0.05 0.04 0" size="0.04 0.008 0.015" rgba="0.3 0.3 0.3 1"/>
              <geom type="box" pos="0.05 -0.04 0" size="0.04 0.008 0.015" rgba="0.3 0.3 0.3 1"/>
            </body>
          </body>
        </body>
      </body>
    </body>
    <body name="red" pos="0.55 0.1 0.45"><freejoint/>
      <geom type="box" size="0.025 0.025 0.025" rgba="0.8 0.15 0.1 1"/></body>
    <body name="green" pos="0.6 -0.15 0.45"><freejoint/>
      <geom type="box" size="0.03 0.03 0.03" rgba="0.2 0.7 0.25 1"/></body>
    <body name="blue" pos="0.7 0.05 0.45"><freejoint/>
      <geom type="cylinder" size="0.03 0.04" rgba="0.15 0.3 0.8 1"/></body>
    <camera name="front" pos="1.6 0 1.0" xyaxes="0 1 0 -0.45 0 0.9" fovy="50"/>
    <camera name="side" pos="0.5 -1.1 0.95" xyaxes="1 0 0 0 0.5 0.87" fovy="55"/>
  </worldbody>
</mujoco>
"""

CAMERAS = ("front", "side")
JOINTS = ("j1", "j2", "j3", "j4")


class BenchScene:
    """A moving tabletop rendered from two cameras; ``frame(t)`` returns realistic uint8 images."""

    def __init__(self, height: int = 480, width: int = 640) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        self._mj = mujoco
        self.model = mujoco.MjModel.from_xml_string(SCENE_XML)
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, height=height, width=width)
        self._qadr = [self.model.joint(j).qposadr[0] for j in JOINTS]

    def frame(self, t: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Images per camera and the arm's joint positions at time ``t`` seconds."""
        q = np.array(
            [0.8 * np.sin(0.7 * t), 0.5 + 0.3 * np.sin(1.1 * t), -0.9 + 0.4 * np.cos(0.9 * t), 1.5 * t]
        )
        for adr, v in zip(self._qadr, q):
            self.data.qpos[adr] = v
        self._mj.mj_forward(self.model, self.data)
        images = {}
        for cam in CAMERAS:
            self.renderer.update_scene(self.data, camera=cam)
            images[cam] = self.renderer.render().copy()
        return images, q.astype(np.float32)

    def close(self) -> None:
        self.renderer.close()


def render_frames(n: int, fps: float = 30.0, height: int = 480, width: int = 640):
    """``n`` consecutive frames: ({camera: (n, H, W, 3) uint8}, joints (n, 4) float32)."""
    scene = BenchScene(height, width)
    try:
        per = [scene.frame(i / fps) for i in range(n)]
    finally:
        scene.close()
    images = {cam: np.stack([p[0][cam] for p in per]) for cam in CAMERAS}
    return images, np.stack([p[1] for p in per])
