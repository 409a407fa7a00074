"""``teleop_node``: any teleop device of the ``TELEOPS`` registry (``mode:=keyboard|gamepad|
spacemouse|leader|scripted``) through the robot's command interface
(``/forward_position_controller/commands``, remapped to ``/teleop/command`` when an arbiter runs),
with the intervention flag on ``/teleop/intervention`` (std_msgs/Bool).

It ticks on every ``/joint_states`` (the control rate): reads the device with the latest
observation, publishes the target while the human intervenes and the flag every tick, and
turns the device's episode events into service calls (new episode, success / failure + commit,
discard, e-stop). A device that disappears: one last command holds the arm where it is, the
error names the device, and the node exits non-zero (with an arbiter, its silence keeps the
arm holding; without one, the robot's watchdog does).

``mode:=scripted`` (the sim expert) drives ``episodes`` episodes by itself: ``/sim/reset`` ->
(``/policy/reset``, ``/arbiter/reset`` when they exist) -> ``/recorder/start`` -> the expert at
the control rate -> ``/recorder/mark_success`` -> ``/recorder/stop``. With ``options:=intervene=disagree``
the expert corrects a running policy instead of driving (HG-DAgger in simulation).
``drive_episodes:=false`` only acts; ``/teleop/reset`` then starts a new episode for the device.

``mode:=keyboard`` needs a terminal: run ``robot-policy teleop keyboard`` in its own terminal
attached to the running graph.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from robot_policy import conventions as conv
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, call_service, declare, run_node


def parse_options(text: str) -> dict:
    """Device options: ``key=value[,key=value...]`` inline (values read as YAML), or a YAML file.

    Not an inline YAML mapping: ROS parses every parameter value as YAML, so ``{a: 1}`` would
    arrive as a mapping, which a parameter cannot hold."""
    from robot_policy.teleop import load_options

    text = (text or "").strip()
    if "=" not in text:
        return load_options(text)
    import yaml

    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"teleop options {text!r}: expected key=value[,key=value...], got {item!r}")
        out[key.strip()] = yaml.safe_load(value.strip())
    return out


class TeleopNode(Node):
    def __init__(self):
        super().__init__("teleop")
        from robot_policy.config import field_docs
        from robot_policy.hardware.config import load_hardware_config
        from robot_policy.teleop import TeleopSession, make_teleop
        from robot_policy.teleop.cartesian import CartesianConfig

        self.hw = load_hardware_config(
            declare(self, "hardware", "sim_tabletop", "hardware/NAME.yaml or a path")
        )
        self.mode = declare(
            self, "mode", "scripted", "teleop device: keyboard, gamepad, spacemouse, leader, scripted"
        )
        options = declare(
            self, "options", "", "device options: a YAML file or an inline mapping '{key: value}'"
        )
        self.episodes = declare(self, "episodes", 5, "scripted: episodes to run, then exit (0: forever)")
        self.record = declare(self, "record", True, "call the /recorder services around each episode")
        self.settle = declare(
            self, "settle_steps", 10, "scripted: steps recorded after success is first seen"
        )
        self.max_steps = declare(self, "max_steps", 0, "scripted: steps per episode (0: the task's limit)")
        self.drive = declare(
            self,
            "drive_episodes",
            True,
            "scripted: reset, record and judge episodes itself (false: only act)",
        )
        docs = field_docs(CartesianConfig)
        defaults = dataclasses.asdict(CartesianConfig())
        cart = {name: declare(self, name, value, docs.get(name, "")) for name, value in defaults.items()}
        self.device = make_teleop(self.mode, self.hw, parse_options(options))
        if self.device.needs_sim and not self.hw.simulated:
            raise ValueError(
                f"teleop mode '{self.mode}' runs the sim expert, but robot '{self.hw.name}' is a real arm "
                f"(arm: {self.hw.arm}); use mode:=keyboard, gamepad, spacemouse or leader"
            )
        self.session = TeleopSession(self.device, self.hw, CartesianConfig(**cart))
        self.pub_cmd = self.create_publisher(Float64MultiArray, conv.FORWARD_COMMANDS, COMMAND_QOS)
        self.pub_flag = self.create_publisher(Bool, conv.TELEOP_INTERVENTION, COMMAND_QOS)
        self.obs: dict[str, np.ndarray] = {}
        self.obs_stamp = 0.0
        self.task_stamp = -1.0  # stamp of the newest /sim/observation (-1: none yet)
        self.new_obs = threading.Condition()
        self.plan = None  # the policy's latest chunk (a corrector reads its proposal)
        self.create_subscription(JointState, conv.JOINT_STATES, self._on_js, SENSOR_QOS)
        if self.hw.simulated:  # task state exists only in a simulated world
            self.create_subscription(JointState, conv.SIM_OBSERVATION, self._on_state, SENSOR_QOS)
        if self.device.needs_policy:
            self.create_subscription(JointTrajectory, conv.POLICY_TRAJECTORY, self._on_plan, COMMAND_QOS)
        self.create_service(Trigger, conv.TELEOP_RESET, self._srv_reset)
        self._srv_clients: dict = {}
        self._optional: dict[str, bool] = {}
        self._stop = threading.Event()
        self._reset_request = threading.Event()
        self.device.connect()  # a missing device or SDK ends the node here, with the fix in the message
        if self.device.help:
            print(self.device.help, flush=True)
        loop = self._episodes if (self.device.needs_sim and self.drive) else self._operate
        self._thread = threading.Thread(target=self._guard, args=(loop,), daemon=True)
        self._thread.start()
        self.get_logger().info(f"teleop '{self.mode}' on robot '{self.hw.name}'")

    # -- inputs -------------------------------------------------------------------------
    def _on_js(self, msg):
        vals = convert.joint_state_to_obs(msg, self.hw.joint_names, self.hw.gripper_joint)
        with self.new_obs:
            self.obs.update(vals)
            self.obs_stamp = convert.from_time(msg.header.stamp)
            self.new_obs.notify_all()

    def _on_state(self, msg):
        vals = convert.named_vector_to_obs(msg)
        with self.new_obs:
            self.obs.update(vals)
            self.task_stamp = convert.from_time(msg.header.stamp)
            self.new_obs.notify_all()

    def _on_plan(self, msg):
        from robot_policy.teleop.arbiter import Plan

        try:
            start, tfs, pts = convert.trajectory_to_arrays(msg, self.hw.command_names)
        except ValueError as e:
            self.get_logger().error(f"policy chunk ignored: {e}", throttle_duration_sec=5.0)
            return
        self.plan = Plan(start + tfs, pts, start)

    def _wait_obs(self, after: float, timeout: float = 5.0) -> dict:
        with self.new_obs:
            if not self.new_obs.wait_for(lambda: self.obs_stamp > after or self._stop.is_set(), timeout):
                raise TimeoutError(
                    "no /joint_states from the robot; is sim_node (or the arm driver) running?"
                )
            if self.device.needs_sim:
                # The expert reads the task state (object pose): that of the same tick, which the
                # robot publishes right after the joint state (a lost one: the newest there is).
                self.new_obs.wait_for(
                    lambda: self.task_stamp >= self.obs_stamp or self._stop.is_set(), 2.0 / self.hw.control_hz
                )
                if not self.new_obs.wait_for(lambda: self.task_stamp >= 0 or self._stop.is_set(), timeout):
                    raise TimeoutError(
                        f"no {conv.SIM_OBSERVATION} from the simulated robot (the expert needs the task "
                        "state); is sim_node running?"
                    )
            obs = {k: v.copy() for k, v in self.obs.items()}
        if self.device.needs_policy:
            from robot_policy.teleop.scripted.device import POLICY_ACTION

            plan, dt = self.plan, 1.0 / self.hw.control_hz
            # The policy's proposal for the step this observation answers (executed one period later).
            obs[POLICY_ACTION] = plan.sample(self.obs_stamp + dt) if plan is not None else None
        return obs

    def _srv_reset(self, req, resp):
        self._reset_request.set()
        resp.success, resp.message = True, f"teleop '{self.mode}': new episode"
        return resp

    # -- outputs ------------------------------------------------------------------------
    def _call(self, name: str, srv=Trigger, timeout: float = 10.0, **fields):
        return call_service(self, self._srv_clients, name, srv, timeout, **fields)

    def _call_optional(self, name: str) -> None:
        """Call a Trigger service if some node offers it (the policy, the arbiter)."""
        if name not in self._optional:
            cli = self._srv_clients.setdefault((name, Trigger), self.create_client(Trigger, name))
            self._optional[name] = cli.wait_for_service(timeout_sec=2.0)
        if self._optional[name]:
            self._call(name)

    def _publish(self, target, intervening: bool) -> None:
        # Command first, then the flag: an arbiter switching on the flag finds the fresh command.
        if target is not None:
            self.pub_cmd.publish(Float64MultiArray(data=np.asarray(target, dtype=np.float64).tolist()))
        self.pub_flag.publish(Bool(data=bool(intervening)))

    # -- loops --------------------------------------------------------------------------
    def _guard(self, fn) -> None:
        from robot_policy.teleop import DeviceDisconnected

        try:
            fn()
            self.exit_code = 0
        except DeviceDisconnected as e:
            self._hold()
            self.get_logger().error(str(e))
            self.exit_code = 1
        except Exception as e:
            if not self._stop.is_set():
                self.get_logger().error(f"teleop failed: {type(e).__name__}: {e}")
                self.exit_code = 1
        if not self._stop.is_set():
            self.context.try_shutdown()

    def _hold(self) -> None:
        """The device is gone: one last command stops the arm where it is."""
        with self.new_obs:
            obs = {k: v.copy() for k, v in self.obs.items()}
        hold = self.session.hold(obs)
        if hold is not None and self.session.intervening:
            self._publish(hold, True)

    def _step(self, obs: dict) -> bool:
        """One tick: read the device, handle its events, publish. Returns the flag."""
        out = self.session.step(obs)
        for ev in out.events:
            self._event(ev)
        self._publish(out.target, out.intervening)
        return out.intervening

    def _operate(self) -> None:
        """A person's device: tick on every joint state until the node stops."""
        while not self._stop.is_set():
            obs = self._wait_obs(self.obs_stamp, timeout=10.0)
            if self._reset_request.is_set():
                self._reset_request.clear()
                self.session.reset(None)
            self._step(obs)

    def _episodes(self) -> None:
        """The sim expert drives (or corrects) whole episodes and records them."""
        results = []
        k = 0
        limit = self.max_steps or self.device.max_steps
        while not self._stop.is_set() and (self.episodes <= 0 or k < self.episodes):
            seed = conv.parse_seed(self._call(conv.SIM_RESET).message)
            self.session.reset(seed)
            self._call_optional(conv.POLICY_RESET)
            self._call_optional(conv.ARBITER_RESET)
            obs = self._wait_obs(convert.from_time(self.get_clock().now().to_msg()))
            if self.record:
                self._call(conv.RECORDER_START)
            success, after = False, -1
            for step in range(limit):
                if self._stop.is_set():
                    return
                self._step(obs)
                obs = self._wait_obs(self.obs_stamp)
                if step % 5 == 4 and not success:
                    success = self._call(conv.SIM_SUCCESS).success
                    after = step
                if success and step - after >= self.settle:
                    break
            self.pub_flag.publish(Bool(data=False))
            if self.record:
                self._call(conv.RECORDER_MARK_SUCCESS, SetBool, data=bool(success))
                r = self._call(conv.RECORDER_STOP, timeout=30.0)  # waits for in-flight frames
                self.get_logger().info(f"episode {k} seed {seed}: success={success}; recorder: {r.message}")
            results.append(success)
            k += 1
        self.get_logger().info(f"scripted teleop done: {sum(results)}/{len(results)} successful")

    # -- episode events (from the device's buttons / keys) ----------------------------------
    def _event(self, ev) -> None:
        from robot_policy.teleop import TeleopEvent

        actions = {
            TeleopEvent.START: self._ev_start,
            TeleopEvent.STOP: lambda: self._ev_commit(None),
            TeleopEvent.SUCCESS: lambda: self._ev_commit(True),
            TeleopEvent.FAILURE: lambda: self._ev_commit(False),
            TeleopEvent.DISCARD: self._ev_discard,
            TeleopEvent.ESTOP: lambda: self._say(self._call(conv.ESTOP).message),
            TeleopEvent.ESTOP_RESET: lambda: self._say(self._call(conv.ESTOP_RESET).message),
        }
        try:
            actions[ev]()
        except TimeoutError as e:  # a missing service must not end a person's session
            self._say(f"{ev.value}: {e}")

    def _say(self, text: str) -> None:
        self.get_logger().info(text)

    def _ev_start(self) -> None:
        seed = None
        if self.hw.simulated:  # a real scene is reset by the operator's hands
            seed = conv.parse_seed(self._call(conv.SIM_RESET).message)
        self.session.reset(seed)
        self._call_optional(conv.POLICY_RESET)
        self._call_optional(conv.ARBITER_RESET)
        if self.record:
            self._say(self._call(conv.RECORDER_START).message)

    def _ev_commit(self, success: bool | None) -> None:
        if not self.record:
            return
        if success is not None:
            self._call(conv.RECORDER_MARK_SUCCESS, SetBool, data=success)
        self._say(self._call(conv.RECORDER_STOP, timeout=30.0).message)

    def _ev_discard(self) -> None:
        if self.record:
            self._say(self._call(conv.RECORDER_DISCARD).message)

    def close(self) -> None:
        self._stop.set()
        with self.new_obs:
            self.new_obs.notify_all()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=3.0)
        device = getattr(self, "device", None)
        if device is not None:
            device.disconnect()


def main() -> int:
    return run_node(TeleopNode, executor="multi")  # handlers call services


if __name__ == "__main__":
    raise SystemExit(main())
