"""``camera_node``: the real cameras of a robot setup, looking to the graph like realsense2_camera.

Runs every camera of the hardware YAML (parameter ``hardware``) whose backend is a driver
(``realsense``, ``uvc``; the ``sim`` cameras are published by the simulated world's robot node),
or those listed in ``cameras``.
Per camera ``<name>`` (sensor-data QoS, all remappable):

- ``/<name>/color/image_raw`` (rgb8) and ``/<name>/color/camera_info``;
- with ``depth: true``: ``/<name>/aligned_depth_to_color/image_raw`` (16UC1 millimetres on the
  colour pixel grid) and ``/<name>/aligned_depth_to_color/camera_info`` (the colour intrinsics);
- ``/diagnostics``: one status ``camera: <name>`` per camera, every ``diagnostics_period_s``.

Header stamps are the capture time (``Capture.stamp``, host monotonic clock) moved onto the
graph's clock (ROS time) with an offset measured at every frame, never the publish time.
CameraInfo comes from ``calibration/<setup>/<name>_intrinsics.json`` when present (or the
camera's ``options: {intrinsics: FILE}``), else from the device. Each camera is read in its own
thread (:class:`robot_policy.runtime.camera_stream.CameraStream`), never in the executor.

A hardware YAML without driver cameras (a simulated setup, an arm alone) is not an error: the
node says so and exits with code 0, so ``real.launch.xml`` can always start it.
"""

from __future__ import annotations

from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from robot_policy import conventions as conv
from robot_policy.ros import convert
from robot_policy.ros._node import SENSOR_QOS, declare, now_s, run_node
from robot_policy.types import Frame

DIAG_PREFIX = "camera: "
"""``/diagnostics`` status name of camera ``<name>``: ``camera: <name>``."""


@dataclass
class _Outputs:
    """One camera's publishers and its CameraInfo (built once; only the stamp changes)."""

    name: str
    frame_id: str
    color: object
    color_info: object
    info: CameraInfo
    source: str = ""
    """Where the intrinsics come from (``calibration:<file>``, ``device:<serial>``, ``nominal:...``)."""
    depth: object = None
    depth_info: object = None


def _names(value) -> list[str]:
    """The ``cameras`` parameter: a list of names, or one string of comma-separated names."""
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    return [str(n) for n in (value or [])]


class CameraNode(Node):
    def __init__(self, cameras: list | None = None, hardware_name: str | None = None):
        """``cameras``: already built (not connected) ``robot_policy.cameras.Camera`` objects to run
        instead of those of the hardware YAML (a benchmark feeding a software device in-process)."""
        super().__init__("cameras")
        from robot_policy.cameras import make_camera
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.runtime.camera_stream import CameraStream, camera_options, driver_cameras

        hw_name = declare(self, "hardware", hardware_name or "", "hardware/NAME.yaml or a path (required)")
        wanted = _names(
            self.declare_parameter(
                "cameras",
                "",
                ParameterDescriptor(
                    description="camera names to run (list or comma-separated); empty: every camera "
                    "of the hardware YAML with a driver backend (not sim)",
                    dynamic_typing=True,
                ),
            ).value
        )
        calibration = declare(
            self,
            "calibration",
            "calibration",
            "calibration folder: <folder>/<setup>/<camera>_intrinsics.json gives CameraInfo when present "
            "(empty: always the device's intrinsics, unless the YAML names a file)",
        )
        reconnect_s = declare(
            self, "reconnect_s", 1.0, "after a stream error, reconnect every this many s (<= 0: never)"
        )
        timeout = declare(self, "read_timeout_s", 0.0, "read timeout (s); 0: each camera's timeout_s")
        period = declare(self, "diagnostics_period_s", 1.0, "seconds between /diagnostics reports")
        window = declare(
            self,
            "latency_window",
            300,
            "frames over which /diagnostics reports capture-to-publish percentiles",
        )

        if cameras is None:
            if not hw_name:
                raise ValueError(
                    "camera_node: parameter 'hardware' is required (a hardware/NAME.yaml name or a path), "
                    "e.g. --ros-args -p hardware:=real_panda"
                )
            hw = load_hardware_config(hw_name)
            self.hw_name = hw.name
            chosen = driver_cameras(hw, wanted)
            if not chosen:
                self.get_logger().info(
                    f"hardware '{hw.name}' has no camera with a driver backend "
                    f"({[(c.name, c.backend) for c in hw.cameras] or 'no cameras'}); sim cameras are "
                    "published by the robot node (robot_node / sim_node with arm: sim). "
                    "Nothing to do: exiting."
                )
                raise SystemExit(0)
            cameras = [make_camera(c.backend, camera_options(hw, c, calibration)) for c in chosen]
        else:
            self.hw_name = hw_name or "injected"
        self.cameras = list(cameras)
        self.streams: list[CameraStream] = []
        self.outputs: dict[str, _Outputs] = {}
        try:
            for cam in self.cameras:
                cam.connect()  # a wrong serial, file or mode fails here, at start, naming the camera
                self.outputs[cam.config.name] = self._outputs(cam)
        except BaseException:
            for cam in self.cameras:
                cam.disconnect()
            raise
        self.pub_diag = self.create_publisher(DiagnosticArray, conv.DIAGNOSTICS, 10)
        log = self.get_logger()
        for cam in self.cameras:
            out = self.outputs[cam.config.name]
            self.streams.append(
                CameraStream(
                    cam,
                    lambda capture, out=out: self._publish(out, capture),
                    reconnect_s=reconnect_s,
                    window=max(1, window),
                    read_timeout_s=timeout or None,
                    warn=log.warning,
                    error=log.error,
                    info=log.info,
                )
            )
        for s in self.streams:
            s.start()
        self.create_timer(max(period, 0.05), self._publish_diagnostics)
        log.info(
            "cameras "
            + ", ".join(
                f"{c.config.name} ({c.backend} {c.config.width}x{c.config.height}@{c.config.fps:g}"
                f"{' +depth' if c.config.depth else ''}, intrinsics {self.outputs[c.config.name].source})"
                for c in self.cameras
            )
        )

    def _outputs(self, cam) -> _Outputs:
        name = cam.config.name
        frame_id = f"{name}_color_optical_frame"
        intr = cam.intrinsics()
        out = _Outputs(
            name=name,
            frame_id=frame_id,
            color=self.create_publisher(Image, conv.color_topic(name), SENSOR_QOS),
            color_info=self.create_publisher(CameraInfo, conv.color_info_topic(name), SENSOR_QOS),
            info=convert.intrinsics_to_camera_info(intr, 0.0, frame_id),
            source=intr.source or "device",
        )
        if cam.config.depth:
            out.depth = self.create_publisher(Image, conv.aligned_depth_topic(name), SENSOR_QOS)
            out.depth_info = self.create_publisher(
                CameraInfo, conv.aligned_depth_info_topic(name), SENSOR_QOS
            )
        return out

    def _publish(self, out: _Outputs, capture) -> None:
        """Called in the camera's thread: capture stamp (host monotonic) -> graph clock, publish."""
        from robot_policy.runtime.camera_stream import clock_offset

        if not self.context.ok():
            return
        self.graph_offset = clock_offset(lambda: now_s(self))
        stamp = capture.stamp + self.graph_offset
        img = convert.frame_to_image(Frame(capture.color.image, stamp, out.name), out.frame_id)
        out.info.header.stamp = img.header.stamp
        out.color.publish(img)
        out.color_info.publish(out.info)
        if out.depth is not None and capture.depth is not None:
            out.depth.publish(
                convert.frame_to_image(Frame(capture.depth.image, stamp, out.name), out.frame_id)
            )
            out.depth_info.publish(out.info)

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        offset = getattr(self, "graph_offset", None)
        for stream in self.streams:
            st = stream.status()
            cfg = stream.camera.config
            level, message = DiagnosticStatus.OK, f"{st['rate_hz']:.1f} Hz"
            if st["capture_to_publish_ms_p50"] is not None:
                message += f", capture-to-publish p50 {st['capture_to_publish_ms_p50']:.1f} ms"
            if st["state"] != "streaming":
                level, message = DiagnosticStatus.ERROR, f"{st['state']}: {st['last_error']}"
            elif st["frames_published"] > 2 * cfg.fps and st["rate_hz"] < 0.8 * cfg.fps:
                level, message = DiagnosticStatus.WARN, f"{message} (expected {cfg.fps:g} Hz)"
            hardware_id = str(st.get("serial") or st.get("device") or self.hw_name)
            status = DiagnosticStatus(
                level=level, name=DIAG_PREFIX + cfg.name, hardware_id=hardware_id, message=message
            )
            values = {
                "expected_hz": cfg.fps,
                **st,
                "graph_minus_monotonic_s": offset,
                "intrinsics": self.outputs[cfg.name].source,
            }
            status.values = [
                KeyValue(key=k, value=_fmt(v)) for k, v in values.items() if k not in ("camera",)
            ]
            msg.status.append(status)
        self.pub_diag.publish(msg)

    def close(self) -> None:
        for s in self.streams:
            s.stop()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6f}" if abs(v) < 1e6 else f"{v:.3f}"
    return "" if v is None else str(v)


def main() -> int:
    return run_node(CameraNode)


if __name__ == "__main__":
    raise SystemExit(main())
