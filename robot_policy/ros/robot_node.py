"""``robot_node``: any arm backend of a hardware YAML (``arm:`` through the ARMS registry), looking
to the graph like ros2_control (+ realsense2_camera for a simulated world's cameras).

Publishes ``/joint_states`` (arm joints + gripper opening, measured) at the control rate,
``/joint_commands`` (target actually sent after the safety layer) and ``/diagnostics`` (safety
counters, control-loop timing, and the backend's status: connected, controller mode, faults,
protective stop). Accepts ``/joint_trajectory_controller/joint_trajectory`` (JointTrajectory),
``/forward_position_controller/commands`` (Float64MultiArray) and ``target_pose``
(geometry_msgs/PoseStamped, CRISP's name; IK to joints under the same limits). Services
``/estop``, ``/estop_reset`` (std_srvs/Trigger). All names remappable.

With a simulated world (``arm: sim``) also ``/<camera>/color/image_raw`` + ``camera_info`` (and
depth), ``/sim/observation`` (task state as a JointState named ``key/i``), and the services
``/sim/reset`` and ``/sim/success``.

The control loop is the backend's own thread (``robot_policy.runtime.robot``), never the rclpy
executor; this file only converts messages.
"""

from __future__ import annotations

import time
import traceback

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from robot_policy import conventions as conv
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, declare, now_s, run_node
from robot_policy.types import Frame

TARGET_POSE = "target_pose"
"""geometry_msgs/PoseStamped Cartesian target (relative name, as CRISP's controllers use)."""

ARM_PARAMETERS = {
    "task": "sim task (empty or auto: the hardware config's task)",
    "seed": "seed of the first scene reset; each /sim/reset uses the next",
    "randomization": "domain-randomization YAML (sim/randomization/NAME.yaml or a path)",
    "realtime": "pace ticks at control_hz (false: as fast as possible)",
    "max_catch_up_s": "a late control loop runs missed ticks at once up to this far behind; beyond "
    "it the ticks are skipped and reported as a stall",
}
"""Node parameters that, when given, override the backend's ``arm_config`` field of that name."""


class RobotNode(Node):
    def __init__(self, name: str = "robot", default_hardware: str = ""):
        super().__init__(name)
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.robots.base import arm_class
        from robot_policy.runtime.robot import RobotRuntime, arm_overrides

        hw_name = declare(self, "hardware", default_hardware, "hardware/NAME.yaml or a path")
        if not hw_name:
            raise ValueError(
                f"{name}: give a robot setup: --ros-args -p hardware:=fr3_sim (hardware/NAME.yaml)"
            )
        ee_site = declare(
            self, "ee_site", "tcp", "end-effector site of the description MJCF (target_pose IK)"
        )
        latency_window_s = declare(
            self,
            "latency_window_s",
            60.0,
            "diagnostics: command latency percentiles cover the commands of the last this many seconds",
        )
        self.target_frames = {"", declare(self, "target_frame", "world", "frame_id accepted on target_pose")}
        given = {}
        for key, doc in ARM_PARAMETERS.items():
            value = self.declare_parameter(
                key, None, ParameterDescriptor(description=doc, dynamic_typing=True)
            ).value
            if value is not None and not (key == "task" and value in ("", "auto")):
                given[key] = value
        self.hw, unused = arm_overrides(load_hardware_config(hw_name), given)
        if unused:
            self.get_logger().warning(
                f"parameters {unused} do not apply to arm backend '{self.hw.arm}'; ignored"
            )
        self.names = self.hw.command_names
        self.pub_js = self.create_publisher(JointState, conv.JOINT_STATES, SENSOR_QOS)
        self.pub_cmd = self.create_publisher(JointState, conv.JOINT_COMMANDS, SENSOR_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, conv.DIAGNOSTICS, 10)
        self.pub_trace = self.create_publisher(JointState, conv.ROBOT_CHUNK_TRACE, 50)
        self.pub_img, self.pub_info, self.fovy = {}, {}, {}
        simulated = self.hw.simulated
        if simulated:
            self._sim_publishers()
        # Inputs before the runtime (their callbacks run once the executor spins, after __init__).
        subs = [
            self.create_subscription(JointTrajectory, conv.TRAJECTORY, self._on_traj, COMMAND_QOS),
            self.create_subscription(Float64MultiArray, conv.FORWARD_COMMANDS, self._on_fwd, COMMAND_QOS),
            self.create_subscription(PoseStamped, TARGET_POSE, self._on_pose, COMMAND_QOS),
        ]
        kwargs = {}
        if arm_class(self.hw).uses_ros:
            from robot_policy.ros.ros2_control_transport import Ros2ControlTransport

            own = {t.topic_name for t in [self.pub_js, self.pub_cmd, *subs]}
            kwargs["transport"] = Ros2ControlTransport(self, own_topics=own)
        self.rt = RobotRuntime(
            self.hw,
            clock=lambda: now_s(self),
            on_sample=self._publish,
            on_stall=self._on_stall,
            on_chunk_executed=self._publish_chunk_trace,
            on_captures=self._publish_captures,
            arm_kwargs=kwargs,
            ee_site=ee_site,
            latency_window_s=latency_window_s,
        )
        self.create_service(Trigger, conv.ESTOP, self._srv_estop)
        self.create_service(Trigger, conv.ESTOP_RESET, self._srv_estop_reset)
        if simulated:
            self.create_service(Trigger, conv.SIM_RESET, self._srv_reset)
            self.create_service(Trigger, conv.SIM_SUCCESS, self._srv_success)
        self.create_timer(1.0, self._publish_diagnostics)
        self.rt.start()  # connect errors (missing SDK, unreachable robot) end the node here
        if simulated:
            # /sim/reset takes no seed: setting ``seed`` at runtime (ros2 param set /sim seed N)
            # picks the next scene, so an evaluation replays one reset for each policy (A/B).
            self.add_on_set_parameters_callback(self._on_set_seed)
        what = f"task '{self.rt.world.task}'" if simulated else f"arm backend '{self.hw.arm}'"
        self.get_logger().info(
            f"robot '{self.hw.name}': {what}, control loop {self.rt.arm.control_hz:g} Hz, "
            f"joint_states {self.hw.control_hz:g} Hz"
            + (f", cameras {[c.name for c in self.hw.cameras]}" if simulated else "")
        )

    def _sim_publishers(self) -> None:
        self.pub_obs = self.create_publisher(JointState, conv.SIM_OBSERVATION, SENSOR_QOS)
        for c in self.hw.cameras:
            self.pub_img[c.name] = self.create_publisher(Image, conv.color_topic(c.name), SENSOR_QOS)
            self.pub_info[c.name] = self.create_publisher(
                CameraInfo, conv.color_info_topic(c.name), SENSOR_QOS
            )
            if c.depth:
                self.pub_img[f"{c.name}/depth"] = self.create_publisher(
                    Image, conv.depth_topic(c.name), SENSOR_QOS
                )
                self.pub_info[f"{c.name}/depth"] = self.create_publisher(
                    CameraInfo, conv.depth_info_topic(c.name), SENSOR_QOS
                )

    # -- commands -----------------------------------------------------------------------
    def _on_traj(self, msg: JointTrajectory) -> None:
        stamp = convert.from_time(msg.header.stamp)
        if stamp > 0:
            # Senders stamp chunks with the capture time of the observation they answer:
            # observation-to-command latency through the whole graph.
            self.rt.note_command_stamp(now_s(self) - stamp)
        try:
            start, tfs, pts = convert.trajectory_to_arrays(msg, self.names)
        except ValueError as e:
            self.rt.reject(str(e))
            return
        self.rt.submit_trajectory(
            start, tfs, pts, stamp=stamp if stamp > 0 else None, source=msg.header.frame_id
        )

    def _publish_chunk_trace(self, stamp: float, arrival: float, executed: float) -> None:
        msg = JointState(name=["robot_arrival", "first_exec"], position=[arrival, executed])
        msg.header.stamp = convert.to_time(stamp)
        if self.context.ok():  # the loop can tick once more after Ctrl-C shut the context down
            self.pub_trace.publish(msg)

    def _on_fwd(self, msg: Float64MultiArray) -> None:
        self.rt.submit_target(np.asarray(msg.data, dtype=np.float64), convert.forward_source(msg))

    def _on_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id not in self.target_frames:
            self.rt.reject(
                f"target_pose in frame '{msg.header.frame_id}'; this node takes {sorted(self.target_frames)} "
                "(parameter target_frame)"
            )
            return
        p, o = msg.pose.position, msg.pose.orientation
        self.rt.submit_pose([p.x, p.y, p.z], [o.w, o.x, o.y, o.z])

    # -- services -----------------------------------------------------------------------
    def _srv_reset(self, req, resp):
        resp.success, resp.message = True, conv.format_seed(self.rt.reset_scene())
        return resp

    def _on_set_seed(self, params):
        from rcl_interfaces.msg import SetParametersResult

        for p in params:
            if p.name == "seed":
                if not isinstance(p.value, int) or isinstance(p.value, bool):
                    return SetParametersResult(
                        successful=False, reason=f"seed must be an integer, got {p.value!r}"
                    )
                self.rt.world.next_seed = int(p.value)
        return SetParametersResult(successful=True)

    def _srv_success(self, req, resp):
        ep = self.rt.episode()
        resp.success = bool(ep["success"])
        resp.message = f"{conv.format_seed(ep['seed'])} steps={ep['steps']} success_now={resp.success}"
        return resp

    def _srv_estop(self, req, resp):
        self.rt.estop()
        resp.success, resp.message = True, "e-stop latched: holding position until /estop_reset"
        return resp

    def _srv_estop_reset(self, req, resp):
        self.rt.reset_estop()
        resp.success, resp.message = True, "e-stop released; the arm moves on the next command"
        return resp

    # -- publishing (the control loop's thread) -------------------------------------------
    def _publish(self, s) -> None:
        try:
            self._publish_sample(s)
        except Exception:
            if not self.context.ok():
                return  # shutting down (Ctrl-C): publishers are already gone
            # A node that stopped publishing must not look alive: exit non-zero.
            self.get_logger().error("publishing failed:\n" + traceback.format_exc())
            self.exit_code = 1
            self.context.try_shutdown()

    def _publish_captures(self, captures) -> None:
        from robot_policy.runtime.robot import RobotSample

        self._publish(RobotSample(state=None, command=None, captures=captures))

    def _publish_sample(self, s) -> None:
        if s.state is not None:
            self.pub_js.publish(convert.joint_state_to_msg(s.state))
        if s.command is not None:
            cmd = convert.joint_state_to_msg(s.command)
            cmd.header.frame_id = s.command_source  # the sender's tag of the command in force
            self.pub_cmd.publish(cmd)
        if s.task_state is not None:
            self.pub_obs.publish(convert.obs_to_named_vector(s.task_state, s.state.stamp))
        for name, cap in s.captures.items():
            if name not in self.fovy:
                self.fovy[name] = self.rt.world.camera_fovy(name)
            img = convert.frame_to_image(cap.color)
            self.pub_img[name].publish(img)
            h, w = cap.color.image.shape[:2]
            info = convert.camera_info(w, h, cap.stamp, self.fovy[name], frame_id=img.header.frame_id)
            self.pub_info[name].publish(info)
            if cap.depth is not None:
                # Rendered from the colour camera: already aligned, same intrinsics.
                depth = Frame(cap.depth.image, cap.stamp, name)
                self.pub_img[f"{name}/depth"].publish(convert.frame_to_image(depth, img.header.frame_id))
                self.pub_info[f"{name}/depth"].publish(info)

    def _on_stall(self, stall) -> None:
        # Told at once, not at the end of the episode: the streams have a hole now.
        self.get_logger().warning(
            f"control loop stalled {stall.seconds * 1e3:.0f} ms: {stall.skipped} ticks skipped "
            "(more than max_catch_up_s behind); recordings flag the gap"
        )
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        st = self.rt.status()
        name = self.get_name()
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self._safety_status(name, st), self._loop_status(name, st), self._arm_status(name, st)]
        self.pub_diag.publish(msg)

    def _status(self, name: str, level: int, message: str, values: dict) -> DiagnosticStatus:
        status = DiagnosticStatus(level=level, name=name, hardware_id=self.hw.name, message=message)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def _safety_status(self, name: str, st: dict) -> DiagnosticStatus:
        keys = ("accepted", "rejected", "clamped", "last_rejection", "watchdog_tripped", "estopped")
        values = {k: st[k] for k in keys}
        values["late_trajectory_points"] = st["late_trajectory_points"]
        values.update({k: v for k, v in st.items() if k.startswith("cmd_latency")})
        values.update({k: st[k] for k in ("episode_seed", "steps") if k in st})
        level, message = DiagnosticStatus.OK, "ok"
        if st["estopped"]:
            level, message = DiagnosticStatus.ERROR, "e-stop latched"
        elif st["watchdog_tripped"]:
            level, message = DiagnosticStatus.WARN, "watchdog hold"
        return self._status(f"{name}: safety", level, message, values)

    def _loop_status(self, name: str, st: dict) -> DiagnosticStatus:
        """The control loop's own timeline: what the publisher did, to compare with what a
        subscriber received (``robot-policy bench record``)."""
        pc = self.rt.ctl.pacing_status()
        values = {
            k: st[k] for k in ("ticks", "loop_hz_target", "loop_hz", "overruns", "tick_callback_errors")
        }
        level, message = DiagnosticStatus.OK, "on time"
        if pc:
            last = pc.pop("last_stall")
            values.update(pc)
            values["max_catch_up_s"] = getattr(self.rt.arm.config, "max_catch_up_s", "")
            if last is not None and time.monotonic() - last.resumed < 10.0:
                level = DiagnosticStatus.WARN
                message = f"stalled {last.seconds * 1e3:.0f} ms, {last.skipped} ticks skipped"
        return self._status(f"{name}: control loop", level, message, values)

    def _arm_status(self, name: str, st: dict) -> DiagnosticStatus:
        arm = dict(st["arm"])
        faults = list(arm.pop("faults", []))
        values = {
            "backend": st["backend"],
            "connected": st["connected"],
            "mode": arm.pop("mode", ""),
            "faults": "; ".join(faults),
            "protective_stop": arm.pop("protective_stop", False),
            "fault": st["fault"],
            "fault_count": st["fault_count"],
            "recoveries": st["recoveries"],
            "last_recover_error": st["last_recover_error"],
            **{k: v for k, v in arm.items() if not isinstance(v, dict)},
        }
        level, message = DiagnosticStatus.OK, "ok"
        if st["fault"] or not st["connected"]:
            level, message = DiagnosticStatus.ERROR, st["fault"] or "not connected"
        elif values["protective_stop"]:
            level, message = DiagnosticStatus.ERROR, "protective stop"
        return self._status(f"{name}: arm", level, message, values)

    def close(self) -> None:
        rt = getattr(self, "rt", None)
        if rt is not None:
            rt.close()


def main() -> int:
    """``robot_node``: the robot of ``-p hardware:=NAME`` (required)."""
    return run_node(RobotNode)


def sim_main() -> int:
    """``sim_node``: ``robot_node`` named ``sim`` with ``hardware:=sim_tabletop`` by default. A
    hardware config whose ``arm:`` is not ``sim`` runs that backend (no silent simulation)."""
    return run_node(lambda: RobotNode("sim", "sim_tabletop"))


if __name__ == "__main__":
    raise SystemExit(main())
