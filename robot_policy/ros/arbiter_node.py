"""``arbiter_node``: the intervention arbiter between the policy, the human and the robot.

Wiring (all remappable; ``launch/sim.launch.xml arbiter:=true`` does it): the policy node's
trajectory output is remapped to ``/policy/joint_trajectory`` and the teleop node's command
output to ``/teleop/command``; this node subscribes to both, to ``/teleop/intervention`` (Bool),
``/joint_states`` and ``/joint_commands``, and publishes what wins to the robot's
``/joint_trajectory_controller/joint_trajectory`` and ``/forward_position_controller/commands``.

It also publishes ``/arbiter/step`` (one JointState named ``key/i`` per executed step, stamped
with the recorder frame it belongs to: ``intervention``, ``policy_action``, ``source``,
``interventions``; ``recorder_node record_arbiter:=true`` records it) and ``/diagnostics``
(source, per-episode intervention count, steps and duration, handbacks, holds). Service
``/arbiter/reset`` (Trigger): a new episode's counters. Decisions are made by
:class:`robot_policy.teleop.arbiter.Arbiter`; this file only converts messages.

Every command goes out tagged (a trajectory's header ``frame_id``, a forward command's layout
label) and ``robot_node`` echoes the tag of the command in force on ``/joint_commands`` (header
``frame_id``): the step records say who commanded each executed step as the robot saw it.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_policy import conventions as conv
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, declare, now_s, run_node


class ArbiterNode(Node):
    def __init__(self):
        super().__init__("arbiter")
        from robot_policy.config import field_docs
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.teleop.arbiter import Arbiter, ArbiterConfig

        self.hw = load_hardware_config(
            declare(self, "hardware", "sim_tabletop", "hardware/NAME.yaml or a path")
        )
        docs = field_docs(ArbiterConfig)
        values = {
            f.name: declare(self, f.name, f.default, docs.get(f.name, ""))
            for f in dataclasses.fields(ArbiterConfig)
        }
        self.arb = Arbiter(self.hw, ArbiterConfig(**values))
        self.names = self.hw.command_names
        self._lock = threading.Lock()
        self.pub_traj = self.create_publisher(JointTrajectory, conv.TRAJECTORY, COMMAND_QOS)
        self.pub_fwd = self.create_publisher(Float64MultiArray, conv.FORWARD_COMMANDS, COMMAND_QOS)
        self.pub_step = self.create_publisher(JointState, conv.ARBITER_STEP, SENSOR_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, conv.DIAGNOSTICS, 10)
        self.create_subscription(JointTrajectory, conv.POLICY_TRAJECTORY, self._on_policy, COMMAND_QOS)
        self.create_subscription(Float64MultiArray, conv.TELEOP_COMMAND, self._on_command, COMMAND_QOS)
        self.create_subscription(Bool, conv.TELEOP_INTERVENTION, self._on_flag, COMMAND_QOS)
        self.create_subscription(JointState, conv.JOINT_STATES, self._on_state, SENSOR_QOS)
        self.create_subscription(JointState, conv.JOINT_COMMANDS, self._on_executed, SENSOR_QOS)
        self.create_service(Trigger, conv.ARBITER_RESET, self._srv_reset)
        self.create_timer(1.0, self._publish_diagnostics)
        self._intervening = False  # the teleop's latest flag
        self._stamps: dict[float, object] = {}  # recent joint-state stamps, as received
        self._errors = 0
        self._last_error = ""
        self.get_logger().info(
            f"arbiter for '{self.hw.name}': policy {conv.POLICY_TRAJECTORY} + teleop {conv.TELEOP_COMMAND} -> "
            f"{conv.TRAJECTORY} / {conv.FORWARD_COMMANDS}; handback at {self.arb.cfg.handback_speed:g} x "
            "velocity limits"
        )

    # -- inputs ------------------------------------------------------------------------------
    def _refused(self, what: str, e: Exception) -> None:
        self._errors += 1
        self._last_error = f"{what}: {e}"
        self.get_logger().error(self._last_error, throttle_duration_sec=2.0)

    def _on_policy(self, msg: JointTrajectory) -> None:
        from robot_policy.teleop import TeleopError

        try:
            start, tfs, pts = convert.trajectory_to_arrays(msg, self.names)
            with self._lock:
                out = self.arb.policy_chunk(start, tfs, pts, now_s(self))
        except (ValueError, TeleopError) as e:
            self._refused("policy chunk refused", e)
            return
        self._send(out)

    def _on_command(self, msg: Float64MultiArray) -> None:
        from robot_policy.teleop import TeleopError

        try:
            with self._lock:
                out = self.arb.teleop(np.asarray(msg.data), self._intervening, now_s(self))
        except TeleopError as e:
            self._refused("teleop command refused", e)
            return
        self._send(out)

    def _on_flag(self, msg: Bool) -> None:
        with self._lock:
            self._intervening = bool(msg.data)
            out = self.arb.teleop(None, self._intervening, now_s(self))
        self._send(out)

    def _on_state(self, msg: JointState) -> None:
        stamp = convert.from_time(msg.header.stamp)
        with self._lock:
            # Records go out with the frame's own header stamp, bit for bit: the recorder pairs
            # them with the frame by stamp ("at or before"), a float round trip could miss by 1 ns.
            self._stamps[stamp] = msg.header.stamp
            while len(self._stamps) > 200:
                self._stamps.pop(next(iter(self._stamps)))
            was = self.arb.error
            out = self.arb.state(stamp, now_s(self))
            err = self.arb.error
        if err and err != was:
            self.get_logger().error(err)
            self._publish_diagnostics()
        self._send(out)

    def _on_executed(self, msg: JointState) -> None:
        try:
            cmd = convert.msg_to_joint_state(msg, self.names).position
        except KeyError as e:
            self._refused("joint_commands", e)
            return
        with self._lock:
            rec = self.arb.executed(cmd, convert.from_time(msg.header.stamp), msg.header.frame_id)
        if rec is None:
            return
        values = {
            "intervention": np.array([float(rec.intervention)]),
            "policy_action": rec.policy_action,
            "source": np.array([float(rec.source)]),
            "interventions": np.array([float(rec.interventions)]),
        }
        out = convert.obs_to_named_vector(values, rec.stamp)
        with self._lock:
            original = self._stamps.get(rec.stamp)
        if original is not None:
            out.header.stamp = original
        self.pub_step.publish(out)

    # -- outputs -----------------------------------------------------------------------------
    def _send(self, out) -> None:
        from robot_policy.teleop.arbiter import Forward, Trajectory

        if isinstance(out, Forward):
            self.pub_fwd.publish(convert.forward_msg(out.target, out.tag))
        elif isinstance(out, Trajectory):
            chunk_msg = JointTrajectory()
            chunk_msg.header.stamp = convert.to_time(out.start)
            chunk_msg.header.frame_id = out.tag
            chunk_msg.joint_names = list(self.names)
            for t, p in zip(out.time_from_start, out.points):
                chunk_msg.points.append(
                    JointTrajectoryPoint(positions=p.tolist(), time_from_start=convert.to_duration(float(t)))
                )
            self.pub_traj.publish(chunk_msg)

    def _srv_reset(self, req, resp):
        with self._lock:
            self.arb.reset_episode()
        resp.success, resp.message = True, "arbiter: intervention counters reset for a new episode"
        return resp

    def _publish_diagnostics(self) -> None:
        with self._lock:
            st = self.arb.status(now_s(self))
        st["refused_inputs"] = self._errors
        st["last_refused"] = self._last_error
        level = DiagnosticStatus.OK
        message = str(st["source"])
        if st["error"]:
            level, message = DiagnosticStatus.ERROR, str(st["error"])
        elif st["intervening"]:
            level = DiagnosticStatus.WARN  # a human has the arm: operators should see it at a glance
            message = "human in control"
        status = DiagnosticStatus(level=level, name="arbiter", hardware_id=self.hw.name, message=message)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in st.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)


def main() -> int:
    return run_node(ArbiterNode)


if __name__ == "__main__":
    raise SystemExit(main())
