"""``recorder_node``: records episodes from the graph into an episode store (zarr).

Subscribes to ``/joint_states`` (master clock), ``/<camera>/color/image_raw`` for every camera
of the hardware config, ``/sim/observation`` (optional task state) and ``/joint_commands`` (the
action actually executed). Services (std_srvs): ``/recorder/start``, ``/recorder/stop`` (the
episode ends at the request; waits up to ``stop_wait_s`` for frames still in flight, then commits;
refused, naming the stream, when one misses too many frames), ``/recorder/discard``,
``/recorder/mark_success`` (SetBool). Frames are aligned by capture stamp and streamed to the
store while recording (``lookahead_s`` of samples in memory), so a crash loses only the open
episode.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from robot_policy import conventions as conv
from robot_policy.ros import convert
from robot_policy.ros._node import RECORD_QOS, declare, now_s, run_node


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder")
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.runtime.recorder import EpisodeRecorder, Stream, StreamWatch

        self.hw = load_hardware_config(
            declare(self, "hardware", "sim_tabletop", "hardware/NAME.yaml or a path")
        )
        dataset = declare(self, "dataset", "datasets/recording.zarr", "episode store to create or append to")
        fps = declare(self, "fps", 0.0, "dataset fps (0: the control rate)") or self.hw.control_hz
        max_missing = declare(
            self,
            "max_missing_frames",
            5,
            "strict_gaps only: refuse to commit when a stream misses more frames than this",
        )
        strict = declare(
            self,
            "strict_gaps",
            False,
            "refuse episodes with more than max_missing_frames missing in a stream (default: commit "
            "them with the gaps flagged in data/valid and listed in the episode metadata)",
        )
        self.stall_after = declare(
            self,
            "stall_warn_periods",
            10.0,
            "warn (log + /diagnostics) as soon as a stream sends nothing for this many of its periods",
        )
        lookahead = declare(
            self, "lookahead_s", 2.0, "how late (s) a sample may arrive behind the newest one; memory window"
        )
        self.stop_wait = declare(
            self,
            "stop_wait_s",
            5.0,
            "on /recorder/stop, how long (s) to wait for frames captured before the request that are still in flight",
        )
        self.task = declare(self, "task", self.hw.task, "task name stored with each episode")
        self.operator = declare(self, "operator", "", "operator name stored with each episode")
        # Only a simulated world publishes task state; a real robot's recorder does not wait for it.
        record_state = declare(
            self,
            "record_sim_state",
            self.hw.simulated,
            "also record /sim/observation keys when present (default: only for a simulated robot)",
        )
        record_flag = declare(
            self, "record_intervention", False, "record /teleop/intervention (Bool) as key 'intervention'"
        )
        record_arbiter = declare(
            self,
            "record_arbiter",
            False,
            "record the arbiter's per-step /arbiter/step: 'intervention' (the executed action was the "
            "human's) and 'policy_action' (what the policy proposed); replaces record_intervention",
        )
        self.record_transic = declare(
            self,
            "record_transic",
            False,
            "record a TRANSIC policy's per-action decisions (/policy/annotations) beside each executed "
            "action: transic_gate, transic_gate_prob, transic_residual_norm",
        )
        hz = self.hw.control_hz
        state_keys = conv.joint_state_keys(gripper=bool(self.hw.gripper_joint))
        streams = [Stream(conv.JOINT_STATES, state_keys, rate=hz)]
        streams += [
            Stream(conv.color_topic(c.name), [conv.image_key(c.name)], rate=min(c.fps, hz))
            for c in self.hw.cameras
        ]
        if record_state:
            streams.append(Stream(conv.SIM_OBSERVATION, [], rate=hz, required=False))
        # The plan's decisions travel with the command they belong to (same sample, same frame).
        cmd_keys = ["action", *(conv.TRANSIC_KEYS if self.record_transic else ())]
        streams.append(Stream(conv.JOINT_COMMANDS, cmd_keys, rate=hz, mode="next"))
        if record_arbiter:
            # Stamped with the frame each executed step answers: flags and proposals land on
            # exactly their frames (the Bool below is stamped on arrival).
            streams.append(Stream(conv.ARBITER_STEP, ["intervention", "policy_action"], rate=hz))
        elif record_flag:
            # An event stream: false until the teleop says otherwise (Bool has no header, so
            # samples are stamped on arrival).
            no = {"intervention": np.zeros(1, dtype=np.bool_)}
            streams.append(
                Stream(conv.TELEOP_INTERVENTION, ["intervention"], rate=hz, required=False, fill=no)
            )
        specs = {
            conv.JOINT_POS: {"names": list(self.hw.joint_names), "units": "rad"},
            conv.JOINT_VEL: {"names": list(self.hw.joint_names), "units": "rad/s"},
            "action": {"names": self.hw.command_names},
            "policy_action": {"names": self.hw.command_names},
        }
        self.rec = EpisodeRecorder(
            dataset,
            streams,
            conv.JOINT_STATES,
            fps,
            self.hw.name,
            max_missing,
            specs,
            lookahead,
            on_problem=lambda msg: self.get_logger().error(msg),
            strict=strict,
        )
        self.success: bool | None = None
        self.watch = StreamWatch(
            {st.name: st.rate for st in streams if st.fill is None},
            self.stall_after,
            optional={st.name for st in streams if not st.required},
        )
        self.pub_diag = self.create_publisher(DiagnosticArray, conv.DIAGNOSTICS, 10)
        self.create_timer(0.05, self._check_streams)
        self.create_timer(1.0, self._publish_diagnostics)

        self.create_subscription(JointState, conv.JOINT_STATES, self._on_js, RECORD_QOS)
        self.create_subscription(JointState, conv.JOINT_COMMANDS, self._on_cmd, RECORD_QOS)
        self._notes: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        if self.record_transic:
            self.create_subscription(JointTrajectory, conv.POLICY_ANNOTATIONS, self._on_notes, RECORD_QOS)
        if record_state:
            self.create_subscription(JointState, conv.SIM_OBSERVATION, self._on_state, RECORD_QOS)
        if record_arbiter:
            self.create_subscription(JointState, conv.ARBITER_STEP, self._on_arbiter, RECORD_QOS)
        elif record_flag:
            self.create_subscription(Bool, conv.TELEOP_INTERVENTION, self._on_flag, 10)
        for c in self.hw.cameras:
            topic = conv.color_topic(c.name)
            self.create_subscription(
                Image, topic, lambda m, t=topic, n=c.name: self._on_img(m, t, n), RECORD_QOS
            )
        # Services on their own thread: /recorder/stop waits for in-flight samples, which the
        # subscriptions (default group, the executor's other thread) must keep delivering.
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, conv.RECORDER_START, self._srv_start, callback_group=services)
        self.create_service(Trigger, conv.RECORDER_STOP, self._srv_stop, callback_group=services)
        self.create_service(Trigger, conv.RECORDER_DISCARD, self._srv_discard, callback_group=services)
        self.create_service(SetBool, conv.RECORDER_MARK_SUCCESS, self._srv_success, callback_group=services)
        # Labels known only at the end of an episode (an evaluation's verdict, the hidden policy
        # identity, latencies): set ``episode_meta`` to a JSON object before /recorder/stop and it
        # is merged into that episode's metadata (a synchronous, standard parameter service call).
        declare(self, "episode_meta", "", "JSON object merged into the open episode's metadata")
        self.add_on_set_parameters_callback(self._on_set_meta)
        self.get_logger().info(
            f"recorder ready: {dataset} at {fps:g} fps, streams {[s.name for s in streams]}"
        )

    def _on_set_meta(self, params):
        import json

        from rcl_interfaces.msg import SetParametersResult

        for p in params:
            if p.name != "episode_meta" or not p.value:
                continue
            try:
                meta = json.loads(p.value)
            except (TypeError, ValueError) as e:
                return SetParametersResult(successful=False, reason=f"episode_meta is not JSON: {e}")
            if not isinstance(meta, dict):
                return SetParametersResult(successful=False, reason="episode_meta must be a JSON object")
            if not self.rec.recording:
                return SetParametersResult(
                    successful=False, reason="not recording: set episode_meta between start and stop"
                )
            self.rec.update_meta(meta)
        return SetParametersResult(successful=True)

    def _on_js(self, msg: JointState) -> None:
        try:
            vals = convert.joint_state_to_obs(msg, self.hw.joint_names, self.hw.gripper_joint)
        except KeyError as e:
            self.get_logger().error(str(e), throttle_duration_sec=5.0)
            return
        self._add(conv.JOINT_STATES, convert.from_time(msg.header.stamp), vals)

    def _add(self, stream: str, stamp: float, values: dict) -> None:
        self.watch.seen(stream, now_s(self))
        self.rec.add(stream, stamp, values)

    def _check_streams(self) -> None:
        """Tell the operator at once when a stream stops arriving during an episode."""
        if not self.rec.recording:
            return
        for name, silent in self.watch.newly_stalled(now_s(self)):
            self.get_logger().warning(
                f"no sample of '{name}' has arrived for {silent * 1e3:.0f} ms while recording (its "
                "publisher stalled, or this machine is starving the recorder); frames that never "
                "come are flagged in data/valid and listed in the episode's gaps"
            )
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        now = now_s(self)
        stalled = self.watch.stalled(now) if self.rec.recording else {}
        missing = self.rec.missing() if self.rec.recording else {}
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if stalled else DiagnosticStatus.OK,
            name="recorder: streams",
            hardware_id=self.hw.name,
            message=("stalled: " + ", ".join(sorted(stalled))) if stalled else "ok",
        )
        values = {
            "recording": self.rec.recording,
            "frames": self.rec.frames_written,
            **{f"missing {k}": v for k, v in missing.items()},
            **{f"stalled_ms {k}": f"{v * 1e3:.0f}" for k, v in stalled.items()},
            "stalls_total": self.watch.stalls_total,
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.pub_diag.publish(msg)

    def _on_cmd(self, msg: JointState) -> None:
        stamp = convert.from_time(msg.header.stamp)
        values = {"action": np.asarray(msg.position, np.float32)}
        if self.record_transic:
            values.update(self._notes_at(msg.header.frame_id, stamp))
        self._add(conv.JOINT_COMMANDS, stamp, values)

    def _on_notes(self, msg: JointTrajectory) -> None:
        """Keep the last plans' annotations by tag (a plan is in force for well under a second)."""
        names = list(msg.joint_names)
        if sorted(names) != sorted(conv.TRANSIC_KEYS):
            self.get_logger().error(
                f"/policy/annotations names {names}, expected {list(conv.TRANSIC_KEYS)}",
                throttle_duration_sec=5.0,
            )
            return
        order = [names.index(k) for k in conv.TRANSIC_KEYS]
        origin = convert.from_time(msg.header.stamp)
        times = np.array([origin + convert.from_duration(p.time_from_start) for p in msg.points])
        values = np.array([np.asarray(p.positions)[order] for p in msg.points], np.float32).reshape(
            -1, len(order)
        )
        self._notes[msg.header.frame_id] = (times, values)
        while len(self._notes) > 64:
            self._notes.popitem(last=False)

    def _notes_at(self, tag: str, stamp: float) -> dict[str, np.ndarray]:
        """The decisions of the plan tagged ``tag`` for the action executed at ``stamp``; "no
        decision" (gate 0, probability -1) for a step no known plan commanded (a hold, a human)."""
        row = np.array(conv.TRANSIC_NO_DECISION, np.float32)
        plan = self._notes.get(tag) if tag else None
        if plan is not None and len(plan[0]):
            times, values = plan
            i = int(np.argmin(np.abs(times - stamp)))
            dt = 1.0 / self.hw.control_hz
            if abs(times[i] - stamp) <= dt:
                row = values[i]
        return {k: row[j : j + 1].copy() for j, k in enumerate(conv.TRANSIC_KEYS)}

    def _on_state(self, msg: JointState) -> None:
        self._add(conv.SIM_OBSERVATION, convert.from_time(msg.header.stamp), convert.named_vector_to_obs(msg))

    def _on_flag(self, msg: Bool) -> None:
        stamp = self.get_clock().now().nanoseconds * 1e-9
        self.rec.add(conv.TELEOP_INTERVENTION, stamp, {"intervention": np.array([msg.data], dtype=np.bool_)})

    def _on_arbiter(self, msg: JointState) -> None:
        vals = convert.named_vector_to_obs(msg)
        if "intervention" not in vals or "policy_action" not in vals:
            self.get_logger().error(
                "/arbiter/step lacks intervention/policy_action", throttle_duration_sec=5.0
            )
            return
        if not np.isfinite(vals["policy_action"]).all():
            # The arbiter has no plan from the policy yet (it starts before the policy's first
            # chunk). A NaN proposal would make the store refuse the whole episode, so such steps
            # are not recorded: the episode begins at the first frame with a proposal.
            self.get_logger().info(
                "waiting for the policy's first plan before recording arbiter steps",
                throttle_duration_sec=5.0,
            )
            return
        self._add(
            conv.ARBITER_STEP,
            convert.from_time(msg.header.stamp),
            {
                "intervention": vals["intervention"][:1] > 0.5,
                "policy_action": vals["policy_action"].astype(np.float32),
            },
        )

    def _on_img(self, msg: Image, topic: str, cam: str) -> None:
        if self.rec.recording:
            f = convert.image_to_frame(msg, cam)
            self._add(topic, f.stamp, {conv.image_key(cam): f.image})

    def _srv_start(self, req, resp):
        if self.rec.recording:
            resp.success, resp.message = (
                False,
                "already recording; call /recorder/stop or /recorder/discard first",
            )
            return resp
        self.success = None
        self.watch.restart(now_s(self))
        self.rec.start(
            {"task": self.task, "operator": self.operator, "robot": self.hw.name}, t_start=now_s(self)
        )
        resp.success, resp.message = True, f"recording to {self.rec.path}"
        self.get_logger().info(resp.message)
        return resp

    def _srv_stop(self, req, resp):
        from robot_policy.runtime.recorder import RecorderError

        t_end = now_s(self)  # the episode ends now, whatever the recorder has received so far
        try:
            meta = {"success": self.success} if self.success is not None else {}
            idx, report = self.rec.stop(meta, t_end=t_end, wait_s=self.stop_wait)
        except (RecorderError, ValueError) as e:
            resp.success, resp.message = False, f"not committed: {e}"
            self.get_logger().error(resp.message)
            return resp
        resp.success = True
        resp.message = f"episode {idx} committed: {report['frames']} frames, missing {report['missing']}"
        if report["gaps"]:
            resp.message += f", gaps {[(g['stream'], g['frame'], g['frames']) for g in report['gaps']]}"
        if report["late"]:
            resp.message += f", late {report['late']}"
        self.get_logger().info(f"{resp.message} (received {report['received']})")
        return resp

    def _srv_discard(self, req, resp):
        self.rec.discard()
        resp.success, resp.message = True, "episode discarded; nothing written"
        self.get_logger().info(resp.message)
        return resp

    def _srv_success(self, req, resp):
        self.success = bool(req.data)
        resp.success, resp.message = True, f"episode marked success={self.success}"
        return resp


def main() -> int:
    return run_node(RecorderNode, executor="multi")  # commits run beside frame callbacks


if __name__ == "__main__":
    raise SystemExit(main())
