"""``sim_node``: the simulated robot, looking to the graph like ros2_control + realsense2_camera.

Publishes ``/joint_states`` (arm joints + gripper opening) at the control rate,
``/<camera>/color/image_raw`` + ``camera_info`` (sensor-data QoS), ``/sim/observation`` (other
low-dim task state, e.g. object pose, as a JointState whose names are ``key/i``),
``/joint_commands`` (target actually sent after the safety layer) and ``/diagnostics``.
Accepts ``/joint_trajectory_controller/joint_trajectory`` and
``/forward_position_controller/commands``. Services: ``/sim/reset``, ``/sim/success``,
``/estop``, ``/estop_reset`` (std_srvs/Trigger). All names remappable.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import traceback

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from robot_policy import conventions as conv
from robot_policy.hardware.pacing import PacingStats, TickPacer
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, declare, now_s, run_node
from robot_policy.types import Frame
from robot_policy.types import JointState as CoreJointState


class SimNode(Node):
    def __init__(self):
        super().__init__("sim")
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.hardware.sim_robot import SimRobot

        hw_name = declare(self, "hardware", "sim_tabletop", "hardware/NAME.yaml or a path")
        task = declare(self, "task", "auto", "sim task (auto: the hardware config's task)")
        task = "" if task == "auto" else task
        seed = declare(self, "seed", 0, "seed of the first reset; each /sim/reset uses the next")
        self.realtime = declare(
            self, "realtime", True, "pace ticks at control_hz (false: as fast as possible)"
        )
        self.max_catch_up = declare(
            self,
            "max_catch_up_s",
            0.5,
            "a late control loop runs missed ticks at once up to this far behind; beyond it the "
            "ticks are skipped and reported as a stall",
        )
        self.pacing = PacingStats()
        self.hw = load_hardware_config(hw_name)
        self._make_robot = lambda: SimRobot(self.hw, task=task or None, seed=seed)
        self.robot = None  # built in the control thread: the GL context is bound to one thread
        self.ready = threading.Event()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.cmd_latency: collections.deque = collections.deque(maxlen=2000)
        self.error: BaseException | None = None
        self.dt = 1.0 / self.hw.control_hz
        self.names = self.hw.command_names
        self.lock = threading.Lock()

        self.pub_js = self.create_publisher(JointState, conv.JOINT_STATES, SENSOR_QOS)
        self.pub_cmd = self.create_publisher(JointState, conv.JOINT_COMMANDS, SENSOR_QOS)
        self.pub_obs = self.create_publisher(JointState, conv.SIM_OBSERVATION, SENSOR_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, conv.DIAGNOSTICS, 10)
        self.pub_img, self.pub_info, self.cam_every, self.fovy = {}, {}, {}, {}
        for c in self.hw.cameras:
            self.pub_img[c.name] = self.create_publisher(Image, conv.color_topic(c.name), SENSOR_QOS)
            self.pub_info[c.name] = self.create_publisher(
                CameraInfo, conv.color_info_topic(c.name), SENSOR_QOS
            )
            self.cam_every[c.name] = max(1, round(self.hw.control_hz / c.fps))
            if c.depth:
                self.pub_img[f"{c.name}/depth"] = self.create_publisher(
                    Image, conv.depth_topic(c.name), SENSOR_QOS
                )
                self.pub_info[f"{c.name}/depth"] = self.create_publisher(
                    CameraInfo, conv.depth_info_topic(c.name), SENSOR_QOS
                )
        self.create_subscription(JointTrajectory, conv.TRAJECTORY, self._on_traj, COMMAND_QOS)
        self.create_subscription(Float64MultiArray, conv.FORWARD_COMMANDS, self._on_fwd, COMMAND_QOS)
        self.create_service(Trigger, conv.SIM_RESET, self._srv_reset)
        self.create_service(Trigger, conv.SIM_SUCCESS, self._srv_success)
        self.create_service(Trigger, conv.ESTOP, self._srv_estop)
        self.create_service(Trigger, conv.ESTOP_RESET, self._srv_estop_reset)
        self.create_timer(1.0, self._publish_diagnostics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.ready.wait()
        if self.error is not None:
            raise RuntimeError(f"could not build the simulated robot: {self.error}") from self.error
        self.get_logger().info(
            f"sim robot '{self.hw.name}' task '{self.robot.task}' at {self.hw.control_hz:g} Hz, "
            f"cameras {[c.name for c in self.hw.cameras]}"
        )

    # -- commands -----------------------------------------------------------------------
    def _on_traj(self, msg: JointTrajectory) -> None:
        now = now_s(self)
        stamp = convert.from_time(msg.header.stamp)
        if stamp > 0:
            # Senders stamp chunks with the capture time of the observation they answer:
            # observation-to-command latency through the whole graph.
            self.cmd_latency.append(now - stamp)
        try:
            start, tfs, pts = convert.trajectory_to_arrays(msg, self.names)
        except ValueError as e:
            with self.lock:
                self.robot.safety.reject(str(e))
            return
        with self.lock:
            self.robot.trajectory(start, tfs, pts, now)

    def _on_fwd(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.robot.command(np.asarray(msg.data, dtype=np.float64), now_s(self))

    # -- services -----------------------------------------------------------------------
    def _in_loop(self, fn, timeout: float = 10.0):
        """Run ``fn`` in the control thread (MuJoCo rendering is bound to it) and wait."""
        done, box = threading.Event(), {}

        def job():
            try:
                box["value"] = fn()
            except Exception as e:
                box["error"] = e
            done.set()

        self._jobs.put(job)
        if not done.wait(timeout):
            raise TimeoutError("the control loop did not run the request in time")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _srv_reset(self, req, resp):
        self._in_loop(self.robot.reset)
        resp.success, resp.message = True, conv.format_seed(self.robot.episode_seed)
        return resp

    def _srv_success(self, req, resp):
        with self.lock:
            resp.success = bool(self.robot.episode_success)
            seed = conv.format_seed(self.robot.episode_seed)
            resp.message = f"{seed} steps={self.robot.steps} success_now={resp.success}"
        return resp

    def _srv_estop(self, req, resp):
        with self.lock:
            self.robot.estop()
        resp.success, resp.message = True, "e-stop latched: holding position until /estop_reset"
        return resp

    def _srv_estop_reset(self, req, resp):
        with self.lock:
            self.robot.reset_estop()
        resp.success, resp.message = True, "e-stop released; the arm moves on the next command"
        return resp

    # -- control loop -------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self.robot = self._make_robot()
        except BaseException as e:  # reported by __init__
            self.error = e
            return
        finally:
            self.ready.set()
        try:
            self._run()
        except Exception:
            if not self.context.ok() or self._stop.is_set():
                return  # shutting down (Ctrl-C): publishers are already gone
            # A dead control loop must not leave a node that looks alive: exit non-zero.
            self.get_logger().error("control loop crashed:\n" + traceback.format_exc())
            self.exit_code = 1
            self.context.try_shutdown()
        finally:
            self.robot.close()

    def _run(self) -> None:
        # Ticks sit on a fixed grid; a late tick runs at once and keeps its due time as its
        # stamp, so a hiccup of the process never leaves a hole in the published streams (a
        # re-anchored schedule dropped ticks: the recorder counted missing frames and refused
        # demonstrations). Only a stall longer than max_catch_up_s gives up ticks, reported.
        pacer = TickPacer(self.dt, self.max_catch_up, stop=self._stop, on_stall=self._on_stall)
        self.pacing = pacer.stats
        k = 0
        while not self._stop.is_set():
            if self.realtime:
                tick = pacer.wait()
                # The grid time on the graph's clock: same offset for command and capture.
                t_cmd = now_s(self) - (time.monotonic() - tick.due)
            else:
                t_cmd = now_s(self)
            while not self._jobs.empty():
                self._jobs.get_nowait()()
            t0 = time.monotonic()
            with self.lock:
                res = self.robot.tick(t_cmd)
            # Capture stamp: after the physics step, when the observation exists (its compute
            # time after the command, capped at a quarter period so a slow tick cannot push it
            # toward the next command's stamp, which would make the pairing ambiguous). The
            # command keeps the time it was applied, so the recorder pairs each observation with
            # the command that followed it.
            res.stamp = t_cmd + min(time.monotonic() - t0, 0.25 * self.dt)
            self._publish(res, k, t_cmd)
            k += 1

    def _on_stall(self, stall) -> None:
        # Told at once, not at the end of the episode: the streams have a hole now.
        self.get_logger().warning(
            f"control loop stalled {stall.seconds * 1e3:.0f} ms: {stall.skipped} ticks skipped "
            f"(more than max_catch_up_s={self.max_catch_up:g} behind); recordings flag the gap"
        )
        self._publish_diagnostics()

    def _publish(self, res, k: int, t_cmd: float) -> None:
        obs, stamp = res.obs, res.stamp
        pos, vel = obs[conv.JOINT_POS], obs[conv.JOINT_VEL]
        if self.hw.gripper_joint:
            pos, vel = np.append(pos, obs[conv.GRIPPER][0]), np.append(vel, 0.0)
        js = CoreJointState(position=pos, stamp=stamp, velocity=vel, names=tuple(self.names))
        self.pub_js.publish(convert.joint_state_to_msg(js))
        cmd = CoreJointState(position=res.command, stamp=t_cmd, names=tuple(self.names))
        self.pub_cmd.publish(convert.joint_state_to_msg(cmd))
        extra = convert.obs_to_named_vector(obs, stamp, skip=conv.JOINT_STATE_KEYS)
        self.pub_obs.publish(extra)
        depth = self.robot.render_depth() if any(c.depth for c in self.hw.cameras) else {}
        for c in self.hw.cameras:
            if k % self.cam_every[c.name]:
                continue
            if c.name not in self.fovy:
                self.fovy[c.name] = self.robot.camera_fovy(c.name)
            fovy = self.fovy[c.name]
            img = convert.frame_to_image(Frame(obs[conv.image_key(c.name)], stamp, c.name))
            self.pub_img[c.name].publish(img)
            info = convert.camera_info(c.width, c.height, stamp, fovy, frame_id=img.header.frame_id)
            self.pub_info[c.name].publish(info)
            if c.name in depth:
                # Rendered from the colour camera: already aligned, same intrinsics.
                dimg = convert.frame_to_image(Frame(depth[c.name], stamp, c.name), img.header.frame_id)
                self.pub_img[f"{c.name}/depth"].publish(dimg)
                self.pub_info[f"{c.name}/depth"].publish(info)

    def _publish_diagnostics(self) -> None:
        with self.lock:
            st = self.robot.safety.status
            values = {
                "accepted": st.accepted,
                "rejected": st.rejected,
                "clamped": st.clamped,
                "last_rejection": st.last_rejection,
                "watchdog_tripped": st.watchdog_tripped,
                "estopped": st.estopped,
                "late_trajectory_points": self.robot.late_points,
                "episode_seed": self.robot.episode_seed,
                "cmd_latency_n": len(self.cmd_latency),
                **{
                    f"cmd_latency_ms_p{q}": f"{np.percentile(self.cmd_latency, q) * 1e3:.1f}"
                    if self.cmd_latency
                    else "nan"
                    for q in (50, 90, 99)
                },
                "steps": self.robot.steps,
            }
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        level = (
            DiagnosticStatus.ERROR
            if st.estopped
            else DiagnosticStatus.WARN
            if st.watchdog_tripped
            else DiagnosticStatus.OK
        )
        status = DiagnosticStatus(level=level, name="sim: safety", hardware_id=self.hw.name)
        status.message = "e-stop latched" if st.estopped else "watchdog hold" if st.watchdog_tripped else "ok"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg.status = [status, self._loop_status()]
        self.pub_diag.publish(msg)

    def _loop_status(self) -> DiagnosticStatus:
        """The control loop's own timeline: what the publisher did, to compare with what a
        subscriber received (``robot-policy bench record``)."""
        pc = self.pacing
        last = pc.stalls[-1] if pc.stalls else None
        recent = last is not None and time.monotonic() - last.resumed < 10.0
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if recent else DiagnosticStatus.OK,
            name="sim: control loop",
            hardware_id=self.hw.name,
            message=(
                f"stalled {last.seconds * 1e3:.0f} ms, {last.skipped} ticks skipped" if recent else "on time"
            ),
        )
        values = {
            "ticks": pc.ticks,
            "late_ticks": pc.late_ticks,
            "max_lateness_ms": f"{pc.max_lateness * 1e3:.1f}",
            "stalls": len(pc.stalls),
            "skipped_ticks": pc.skipped_ticks,
            "max_catch_up_s": self.max_catch_up,
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def main() -> int:
    return run_node(SimNode)


if __name__ == "__main__":
    raise SystemExit(main())
