"""``teleop_node``: keyboard teleoperation or the scripted sim expert, through the robot's
command interface (``/forward_position_controller/commands``), with an intervention flag
(``/teleop/intervention``, std_msgs/Bool) for human-in-the-loop work.

``mode:=scripted`` records ``episodes`` episodes by itself: ``/sim/reset`` -> ``/recorder/start``
-> expert actions at the control rate -> ``/recorder/mark_success`` -> ``/recorder/stop``.
``mode:=keyboard`` needs a terminal (run it in its own: ``teleop_node --ros-args -p mode:=keyboard``).
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from robot_policy import conventions as conv
from robot_policy.ros import convert
from robot_policy.ros._node import COMMAND_QOS, SENSOR_QOS, call_service, declare, run_node


class TeleopNode(Node):
    def __init__(self):
        super().__init__("teleop")
        from robot_policy.hardware.config import load_hardware_config

        self.hw = load_hardware_config(
            declare(self, "hardware", "sim_tabletop", "hardware/NAME.yaml or a path")
        )
        self.mode = declare(self, "mode", "scripted", "scripted (sim expert) or keyboard")
        self.episodes = declare(self, "episodes", 5, "scripted: episodes to run, then exit (0: forever)")
        self.record = declare(self, "record", True, "call the /recorder services around each episode")
        self.settle = declare(
            self, "settle_steps", 10, "scripted: steps recorded after success is first seen"
        )
        if self.mode not in ("scripted", "keyboard"):
            raise ValueError(f"teleop mode must be 'scripted' or 'keyboard', got {self.mode!r}")
        if self.mode == "scripted" and not self.hw.simulated:
            raise ValueError(
                f"teleop mode 'scripted' runs the sim expert, but robot '{self.hw.name}' is a real "
                f"arm (arm: {self.hw.arm}); use mode:=keyboard"
            )
        self.pub_cmd = self.create_publisher(Float64MultiArray, conv.FORWARD_COMMANDS, COMMAND_QOS)
        self.pub_flag = self.create_publisher(Bool, conv.TELEOP_INTERVENTION, 10)
        self.obs: dict[str, np.ndarray] = {}
        self.obs_stamp = 0.0
        self.new_obs = threading.Condition()
        self.create_subscription(JointState, conv.JOINT_STATES, self._on_js, SENSOR_QOS)
        if self.hw.simulated:  # task state exists only in a simulated world
            self.create_subscription(JointState, conv.SIM_OBSERVATION, self._on_state, SENSOR_QOS)
        self._srv_clients = {}
        self._stop = threading.Event()
        target = self._scripted if self.mode == "scripted" else self._keyboard
        self._thread = threading.Thread(target=self._guard, args=(target,), daemon=True)
        self._thread.start()

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

    def _wait_obs(self, after: float, timeout: float = 5.0) -> dict:
        with self.new_obs:
            if not self.new_obs.wait_for(lambda: self.obs_stamp > after or self._stop.is_set(), timeout):
                raise TimeoutError(
                    "no /joint_states from the robot; is sim_node (or the arm driver) running?"
                )
            return {k: v.copy() for k, v in self.obs.items()}

    def _call(self, name: str, srv=Trigger, timeout: float = 10.0, **fields):
        return call_service(self, self._srv_clients, name, srv, timeout, **fields)

    def _send(self, cmd: np.ndarray, intervening: bool = True) -> None:
        self.pub_cmd.publish(Float64MultiArray(data=np.asarray(cmd, dtype=np.float64).tolist()))
        self.pub_flag.publish(Bool(data=intervening))

    # -- sources --------------------------------------------------------------------------
    def _guard(self, fn) -> None:
        try:
            fn()
            self.exit_code = 0
        except Exception as e:
            if not self._stop.is_set():
                self.get_logger().error(f"teleop failed: {type(e).__name__}: {e}")
                self.exit_code = 1
        if not self._stop.is_set():
            self.context.try_shutdown()

    def _scripted(self) -> None:
        from robot_policy.runtime.teleop import ScriptedSource

        src = ScriptedSource(self.hw.task)
        results = []
        k = 0
        while not self._stop.is_set() and (self.episodes <= 0 or k < self.episodes):
            seed = conv.parse_seed(self._call(conv.SIM_RESET).message)
            src.reset(seed)
            obs = self._wait_obs(convert.from_time(self.get_clock().now().to_msg()))
            if self.record:
                self._call(conv.RECORDER_START)
            success, after = False, -1
            for step in range(src.max_steps):
                if self._stop.is_set():
                    return
                self._send(src.act(obs))
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

    def _keyboard(self) -> None:
        import select
        import termios
        import tty

        from robot_policy.runtime.teleop import KEY_HELP, KeyboardJogger

        if not sys.stdin.isatty():
            raise RuntimeError(
                "keyboard teleop needs a terminal: run `teleop_node --ros-args -p mode:=keyboard` in its own terminal"
            )
        jog = KeyboardJogger(len(self.hw.joint_names))
        print(KEY_HELP, flush=True)
        actions = {
            "n": self._kb_new,
            "m": self._kb_commit,
            "b": lambda: self._call(conv.RECORDER_DISCARD),
            "x": lambda: self._call(conv.ESTOP),
            "z": lambda: self._call(conv.ESTOP_RESET),
        }
        old = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin.fileno())
        try:
            last_key = 0.0
            while not self._stop.is_set():
                if jog.target is None and self.obs:
                    jog.sync(self.obs[conv.JOINT_POS])
                ready, _, _ = select.select([sys.stdin], [], [], 1.0 / self.hw.control_hz)
                if ready:
                    ch = sys.stdin.read(1)
                    if ch in actions:
                        actions[ch]()
                        jog.target = None  # resync after a reset / e-stop
                    elif jog.key(ch):
                        last_key = time.monotonic()
                cmd = jog.command()
                if cmd is not None and time.monotonic() - last_key < self.hw.watchdog_timeout:
                    self._send(cmd, intervening=True)
                else:
                    self.pub_flag.publish(Bool(data=False))
        finally:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)

    def _kb_new(self) -> None:
        if self.hw.simulated:  # a real scene is reset by the operator's hands
            self._call(conv.SIM_RESET)
        if self.record:
            self._call(conv.RECORDER_START)

    def _kb_commit(self) -> None:
        if self.record:
            self._call(conv.RECORDER_MARK_SUCCESS, SetBool, data=True)
            print(self._call(conv.RECORDER_STOP, timeout=30.0).message, flush=True)

    def close(self) -> None:
        self._stop.set()
        with self.new_obs:
            self.new_obs.notify_all()
        self._thread.join(timeout=3.0)


def main() -> int:
    return run_node(TeleopNode)


if __name__ == "__main__":
    raise SystemExit(main())
