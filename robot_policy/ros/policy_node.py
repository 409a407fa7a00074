"""``policy_node``: the policy on the ROS graph. Loads a checkpoint (or calls a remote policy
server, ``server:=ws://HOST:PORT``, see docs/serving.md), builds observations from the latest
frames and joint states by capture stamp, infers asynchronously and publishes each chunk as a
JointTrajectory (one point per action, ``time_from_start`` on the control grid), dropping actions
whose time has passed. Reports inference latency, observation age and input rates on
``/diagnostics``. Services: ``/policy/reset`` (new episode: forget inputs and plans, start),
``/policy/pause`` (stop publishing; the robot's watchdog then holds position).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_policy import conventions as conv
from robot_policy.inference.scheduler import SchedulerConfig
from robot_policy.inference.serving import EngineConfig, ServingConfig, configure, exposed
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, declare, now_s, run_node

NODE_SERVING = ServingConfig(
    engine=EngineConfig(device="cpu", threads=1), scheduler=SchedulerConfig(mode="async")
)
"""The node's serving defaults: CPU, one torch thread (the control loop needs a core), async."""


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy")
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.policies import load
        from robot_policy.runtime.policy_runner import PolicyRunner

        ckpt = declare(self, "checkpoint", "", "checkpoint folder (model.safetensors + config.json)")
        server = declare(
            self,
            "server",
            "",
            "policy server URL (ws://HOST:PORT, wss:// for TLS; key from ROBOT_POLICY_API_KEY) "
            "instead of a checkpoint; empty: run the checkpoint in this process",
        )
        if not ckpt and not server:
            raise ValueError(
                "policy_node needs a checkpoint (--ros-args -p checkpoint:=runs/NAME) "
                "or a policy server (-p server:=ws://HOST:PORT, see 'robot-policy serve')"
            )
        self.hw = load_hardware_config(
            declare(self, "hardware", "sim_tabletop", "hardware/NAME.yaml or a path")
        )
        max_age = declare(self, "max_obs_age", 0.5, "seconds: older inputs are dropped and reported")
        self.autostart = declare(
            self, "autostart", True, "publish from startup (false: wait for /policy/reset)"
        )
        self.on_intervention = declare(
            self,
            "on_intervention",
            "shadow",
            "while a human intervenes (/teleop/intervention): 'shadow' keeps inferring from the state "
            "they create (the arbiter records the proposals), 'pause' stops publishing",
        )
        if self.on_intervention not in ("shadow", "pause"):
            raise ValueError(
                f"policy_node: on_intervention must be 'shadow' or 'pause', got {self.on_intervention!r}"
            )
        self.intervened = False
        # Engine, warm-start and scheduler parameters: names, types, defaults and help from ServingConfig.
        values = {e.name: declare(self, e.name, e.default, e.doc) for e in exposed(NODE_SERVING, "ros")}
        serving = configure(NODE_SERVING, "ros", values)
        if serving.scheduler.mode == "ensemble":
            # Ensemble mode averages per tick and has no plan to publish as a trajectory.
            raise ValueError("policy_node: scheduler_mode must be 'async' or 'sync', got 'ensemble'")
        # Serve through the engine (CUDA graphs + validated bf16 on GPU, inference_mode on CPU),
        # warmed up here so the first control decision is not slow.
        if server:
            # Waits for the server (its metadata describes inputs and actions). If it goes away
            # later, inference fails fast, nothing is published and the robot's watchdog holds
            # the arm; publishing resumes when it is back. Engine settings are the server's.
            from robot_policy.serving.client import RemotePolicy

            policy = RemotePolicy(server, wait_s=None)
            ckpt = f"{server} ({policy.metadata.get('model', {}).get('name') or 'remote'})"
        else:
            from robot_policy.inference.engine import InferenceEngine, resolve_device

            policy = load(ckpt, device=resolve_device(serving.engine.device))
            if getattr(policy, "transic", None):  # TRANSIC folder: gate + residual over the base
                mode = declare(self, "transic_mode", "", "gated|always|off (empty: the checkpoint's)")
                policy = policy.with_mode(mode or policy.mode)
                policy = policy.served_by(InferenceEngine(policy.base, serving.engine))
            else:
                policy = InferenceEngine(policy, serving.engine)
        if policy.config.action_dim != self.hw.command_dim:
            raise ValueError(
                f"checkpoint {ckpt} outputs {policy.config.action_dim} actions but the robot "
                f"'{self.hw.name}' takes {self.hw.command_dim} ({self.hw.command_names})"
            )
        from robot_policy.config import field_docs
        from robot_policy.inference.trace import StageBudget

        docs = field_docs(StageBudget)
        budget = StageBudget(
            **{
                f.name: float(
                    declare(self, f"budget_{f.name}_ms", 0.0, docs.get(f.name, "") + " (0: default)")
                )
                for f in dataclasses.fields(StageBudget)
            }
        )
        trace_file = declare(
            self, "trace_file", "", "append every chunk's stage timestamps here (JSON lines; empty: none)"
        )
        self._wake = threading.Event()
        self._trace_lock = threading.Lock()
        sched_cfg = self._seed_latency(serving.scheduler_for(policy.config.n_action_steps), policy.config)
        self.runner = PolicyRunner(
            policy,
            num_steps=serving.engine.num_steps or None,
            max_obs_age=max_age,
            sched_cfg=sched_cfg,
            clock=lambda: now_s(self),
            on_ready=self._wake.set,
            use_prior=serving.use_prior,
            budget=budget,
            trace_file=trace_file or None,
        )
        self.active = bool(self.autostart)
        keys = self.runner.keys
        # Image message -> array, per frame: on /diagnostics as image_decode_ms_p50/p90/p99.
        self._decode_ms: deque = deque(maxlen=2000)
        self.pub_traj = self.create_publisher(JointTrajectory, conv.TRAJECTORY, COMMAND_QOS)
        # A policy with per-action decisions (TRANSIC) publishes them beside each plan, under the
        # plan's tag (header frame_id), which the robot echoes on /joint_commands.
        self.pub_notes = None
        if hasattr(self.runner.policy, "annotations"):
            self.pub_notes = self.create_publisher(JointTrajectory, conv.POLICY_ANNOTATIONS, COMMAND_QOS)
        self._plans = 0
        self.pub_diag = self.create_publisher(DiagnosticArray, conv.DIAGNOSTICS, 10)
        self.create_subscription(JointState, conv.JOINT_STATES, self._on_js, SENSOR_QOS)
        cams = {conv.camera_of(k) for k in keys if conv.is_image_key(k)}
        if cams:
            self.runner.stats.stage_ms["image_decode"] = self._decode_ms
        for cam in cams:
            self.create_subscription(
                Image, conv.color_topic(cam), lambda m, c=cam: self._on_img(m, c), SENSOR_QOS
            )
        task_keys = [k for k in keys if k not in conv.JOINT_STATE_KEYS and not conv.is_image_key(k)]
        if task_keys and not self.hw.simulated:
            raise ValueError(
                f"checkpoint {ckpt} needs inputs {task_keys}, which only a simulated robot publishes "
                f"(/sim/observation); robot '{self.hw.name}' (arm: {self.hw.arm}) has joint states and "
                "cameras only: serve a policy trained on those"
            )
        if task_keys:
            self.create_subscription(JointState, conv.SIM_OBSERVATION, self._on_state, SENSOR_QOS)
        # Told when a human takes over or lets go: the arbiter dropped the plan, so drop it here too.
        self.create_subscription(Bool, conv.TELEOP_INTERVENTION, self._on_intervention, COMMAND_QOS)
        # The robot reports when each chunk arrived and first ran: the end of the chunk trace.
        self.create_subscription(JointState, conv.ROBOT_CHUNK_TRACE, self._on_robot_trace, 50)
        self.create_service(Trigger, conv.POLICY_RESET, self._srv_reset)
        self.create_service(Trigger, conv.POLICY_PAUSE, self._srv_pause)
        self.create_timer(1.0, self._publish_diagnostics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        warm = serving.engine.warm_start
        self.get_logger().info(
            f"policy {policy.config.family} from {ckpt}: inputs {keys}, {policy.config.fps:g} Hz, "
            f"horizon {policy.config.horizon}, executes {policy.config.n_action_steps}; "
            f"{serving.scheduler.mode}, "
            + (
                f"warm start last {warm.run_steps} of {warm.schedule_steps or getattr(policy, 'num_steps', '?')} steps"
                if warm.enabled
                else "cold start"
            )
            + (", RTC" if serving.scheduler.rtc else "")
        )

    def _seed_latency(self, sched_cfg, policy_cfg):
        """Start the latency estimate from ``calibration/<setup>/latency.json`` (camera + arm
        latency, ``robot-policy calibrate latency``) when it exists; reported on /diagnostics."""
        from dataclasses import replace

        from robot_policy.inference.latency import seed_for_setup

        folder = declare(
            self,
            "calibration",
            "calibration",
            "calibration folder: <folder>/<setup>/latency.json (calibrate latency) seeds the latency "
            "estimate with the calibrated camera + arm latency until inferences are timed; empty: no seed",
        )
        cams = [conv.camera_of(k) for k in policy_cfg.image_keys]
        seed, self.latency_seed_text = seed_for_setup(folder, self.hw.name, cams)
        self.latency_seed_ms = "none" if seed is None else f"{seed.seconds * 1e3:.1f}"
        self.get_logger().info(f"latency estimate seed: {self.latency_seed_text}")
        return sched_cfg if seed is None else replace(sched_cfg, latency=seed.apply(sched_cfg.latency))

    def _on_js(self, msg):
        try:
            vals = convert.joint_state_to_obs(msg, self.hw.joint_names, self.hw.gripper_joint)
        except KeyError as e:
            self.get_logger().error(str(e), throttle_duration_sec=5.0)
            return
        t = convert.from_time(msg.header.stamp)
        for k, v in vals.items():
            self.runner.buffer.add(k, t, v)
        self._wake.set()  # tick on fresh inputs: inference starts from the newest capture

    def _on_robot_trace(self, msg: JointState) -> None:
        if list(msg.name) != ["robot_arrival", "first_exec"]:
            return
        with self._trace_lock:
            self.runner.traces.robot_report(convert.from_time(msg.header.stamp), *msg.position)

    def _on_state(self, msg):
        t = convert.from_time(msg.header.stamp)
        for k, v in convert.named_vector_to_obs(msg).items():
            self.runner.buffer.add(k, t, v)
        self._wake.set()

    def _on_img(self, msg, cam):
        t0 = time.perf_counter()
        f = convert.image_to_frame(msg, cam)
        # Decoding counts in `transport_in`; reported on its own so an image policy's cost shows.
        self._decode_ms.append((time.perf_counter() - t0) * 1e3)
        self.runner.buffer.add(conv.image_key(cam), f.stamp, f.image)
        self._wake.set()

    def _srv_reset(self, req, resp):
        self.runner.reset()
        self.active = True
        resp.success, resp.message = True, "policy reset: new episode"
        return resp

    def _on_intervention(self, msg: Bool) -> None:
        if bool(msg.data) == self.intervened:
            return
        self.intervened = bool(msg.data)
        self.runner.drop_plan()
        self._wake.set()  # on a handback, plan from the current state now

    def _srv_pause(self, req, resp):
        self.active = False
        resp.success, resp.message = True, "policy paused"
        return resp

    def _loop(self) -> None:
        try:
            self._run()
        except Exception:
            if not self.context.ok() or self._stop.is_set():
                return  # shutting down: publishers are already gone
            import traceback

            self.get_logger().error("policy loop crashed:\n" + traceback.format_exc())
            self.exit_code = 1
            self.context.try_shutdown()

    def _run(self) -> None:
        # Ticks when inputs arrive (inference starts from the newest capture, not up to one
        # period later) and when a chunk is ready (published at once), with a control-rate
        # fallback so stale inputs are still noticed and reported.
        dt = self.runner.dt
        next_t = time.monotonic()
        while not self._stop.is_set():
            if self.active and not (self.intervened and self.on_intervention == "pause"):
                now = now_s(self)
                plan = self.runner.tick(now)
                if plan is not None:
                    trace = self.runner.last_trace
                    msg = convert.chunk_to_trajectory(plan, self.hw.command_names, now, origin=plan.obs_stamp)
                    self._plans += 1
                    msg.header.frame_id = f"{self.get_fully_qualified_name()}:{self._plans}"
                    # Stamped as the call starts: over shared memory the robot can have the
                    # message before publish() returns. The call itself counts as transport.
                    trace.publish = now_s(self)
                    self.pub_traj.publish(msg)
                    with self._trace_lock:
                        self.runner.traces.published(trace)
                    if self.pub_notes is not None:
                        self._publish_annotations(plan, msg)
            if time.monotonic() >= next_t:
                next_t += dt
                if time.monotonic() - next_t > dt:
                    next_t = time.monotonic() + dt  # fell behind: no burst of catch-up ticks
            self._wake.wait(max(0.0, next_t - time.monotonic()))
            self._wake.clear()

    def _publish_annotations(self, plan, traj: JointTrajectory) -> None:
        """The plan's per-action decisions on /policy/annotations, with its header and time grid."""
        # The plan is cut from the chunk answering plan.obs_stamp, which started one period later.
        notes = self.runner.policy.annotations(plan.obs_stamp + self.runner.dt, plan.times())
        msg = JointTrajectory()
        msg.header = traj.header
        msg.joint_names = list(notes)
        values = np.stack([np.asarray(v, np.float64) for v in notes.values()], -1)
        for pt, row in zip(traj.points, values):
            out = JointTrajectoryPoint()
            out.positions = row.tolist()
            out.time_from_start = pt.time_from_start
            msg.points.append(out)
        self.pub_notes.publish(msg)

    def _publish_diagnostics(self) -> None:
        with self._trace_lock:
            values = self.runner.diagnostics(now_s(self))
            over = self.runner.traces.over_budget()
        st = DiagnosticStatus(name="policy: inference", hardware_id=self.hw.name)
        stale = self.runner.stats.stale_skips
        st.level = (
            DiagnosticStatus.WARN
            if values["last_stale"] or values["last_error"] or over
            else DiagnosticStatus.OK
        )
        st.message = "active" if self.active else "paused"
        if stale:
            st.message += f"; {stale} inferences skipped for stale inputs"
        if int(values["nonmonotone_chunks"]):
            st.level = DiagnosticStatus.WARN
            st.message += (
                f"; {values['nonmonotone_chunks']} chunk traces run backwards in time: "
                "are the robot's and this machine's clocks synchronized (chrony/PTP)?"
            )
        if over:
            st.message += "; over budget (p99): " + ", ".join(
                f"{name} {ms:.0f} > {b:.0f} ms" for name, (ms, b) in over.items()
            )
        values["over_budget"] = ",".join(over)
        values["latency_seed_ms"] = self.latency_seed_ms
        values["latency_seed"] = self.latency_seed_text
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=3.0)
        self.runner.traces.close()


def main() -> int:
    return run_node(PolicyNode)


if __name__ == "__main__":
    raise SystemExit(main())
