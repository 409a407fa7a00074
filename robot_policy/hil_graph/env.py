"""``GraphEnv``: the tabletop pick task of :mod:`robot_policy.hil.rl.envs` over the ROS 2 graph.

Same contract as :class:`~robot_policy.hil.rl.envs.TabletopPick` (``reset(seed) -> obs``,
``step(action) -> (obs, success, info)``, ``[dx, dy, dz, dyaw, gripper]`` actions in [-1, 1],
``expert_action`` / ``expert_takeover`` / ``expert_release`` / ``progress``), so the RPC actor's
transition source and the simulated human run on it unchanged. What differs is where the arm is:

* the robot is a running ``sim_node`` / ``robot_node`` (``hardware:=sim_tabletop``) behind an
  ``arbiter_node`` (``launch/sim.launch.xml arbiter:=true``); this env is a plain process with a
  :class:`~robot_policy.ros.client.GraphClient`;
* ``reset(seed)``: sets the sim node's ``seed`` parameter, calls ``/sim/reset`` and
  ``/arbiter/reset``, and waits for the robot's first tick of the new scene;
* ``step(action)``: the action goes through the *same* mapping as in process (the parent class's
  ``joint_target``: end-effector delta -> differential IK -> joint targets + gripper) and out as a
  one-point trajectory on the arbiter's policy input (``/policy/joint_trajectory``), stamped with
  the observation it answers and due at the robot's next tick; then the env waits for that tick:
  the command the robot executed (``/joint_commands``, its header ``frame_id`` the arbiter's tag
  ``arbiter:<source>:<n>``), the measured joints (``/joint_states``) and the task state
  (``/sim/observation``: cube pose, end-effector pose) of the same tick;
* the simulated human acts through the arbiter like a teleop device: while the expert drives,
  its joint targets go to ``/teleop/command`` with ``/teleop/intervention`` true (the arbiter
  switches at once); ``expert_release`` sends the flag false (the arbiter hands back,
  rate-limited, to the first policy chunk answering an observation after the release);
* ``info["executed_action"]``: the executed command mapped back to the action space (forward
  kinematics, as the in-process env maps the expert's targets), ``info["source"]`` /
  ``info["intervened"]``: who commanded that tick per its tag (``policy``, ``human``,
  ``handback``, ``hold``; intervened = ``human``). The transition source of the RPC actor
  records these instead of what it passed in: the transition holds what the arm did.

The parent's in-process MuJoCo model stays as the task's *kinematics* (IK, forward kinematics,
the table height and cube size of the scene with the same seed, the scripted expert's plan); its
physics never steps. Its raw observation is rebuilt from the graph on every tick and the
end-effector pose is the measured one (``/sim/observation``), so every helper of the parent
(observation, progress, grasp test, expert) reads the graph's state.

State observations only (the graph's camera frames are not wired in here).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from robot_policy.hil.rl.envs import POS_SCALE, YAW_SCALE, TabletopPick, _grip_command, _wrap

SOURCES = ("policy", "human", "handback", "hold")
"""The arbiter's sources, as they appear in its command tags (``arbiter:<source>:<n>``)."""


def tag_source(tag: str) -> str:
    """``arbiter:human:12`` -> ``human``; ``""`` for a command the arbiter did not tag."""
    parts = tag.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "arbiter" else ""


@dataclass
class GraphEnvConfig:
    """The graph actor's env (``robot-policy hil actor --env graph`` flags ``--graph-*``)."""

    hardware: str = "sim_tabletop"
    """Robot setup of the running graph (hardware/NAME.yaml or a path): joint names, control rate."""
    sim_node: str = "/sim"
    """The simulated robot node: its ``seed`` parameter picks the scene of the next reset."""
    max_steps: int = 120
    """Episode step limit (a time limit, not terminal), as ``--max-steps`` in process."""
    tick_timeout_s: float = 2.0
    """A step waits this long for the robot's next tick before failing (robot gone or e-stopped)."""
    startup_timeout_s: float = 60.0
    """How long the first reset waits for the robot, its services and the arbiter."""


class GraphEnv(TabletopPick):
    """:class:`TabletopPick` whose arm is the ROS 2 graph's (see the module docstring)."""

    def __init__(self, config: GraphEnvConfig | None = None, client=None):
        from robot_policy.hardware.config import load_hardware_config

        self.cfg = config or GraphEnvConfig()
        super().__init__(obs_mode="state", max_steps=self.cfg.max_steps)
        self.graph_hw = load_hardware_config(self.cfg.hardware)
        if list(self.graph_hw.joint_names) != list(self.hw.joint_names) or not self.graph_hw.gripper_joint:
            raise ValueError(
                f"hardware '{self.graph_hw.name}' has joints {self.graph_hw.joint_names} (gripper "
                f"{self.graph_hw.gripper_joint!r}); the graph actor runs the tabletop arm "
                f"({self.hw.joint_names} with a gripper): use hardware:=sim_tabletop or a copy of it"
            )
        self.n_arm = len(self.graph_hw.joint_names)
        self.period = 1.0 / float(self.graph_hw.control_hz)
        # Capture the expert's joint targets: on the graph they, not their action-space image,
        # are what the human sends the arbiter.
        self._expert_q: np.ndarray | None = None
        inner_act = self.expert.act

        def act(obs):
            q = inner_act(obs)
            self._expert_q = np.asarray(q, dtype=np.float64)
            return q

        self.expert.act = act
        self._own_client = client is None
        if client is None:
            from robot_policy.ros.client import GraphClient

            client = GraphClient("hil_graph_actor")
        self.client = client
        self._cv = threading.Condition()
        self._states: OrderedDict[float, object] = OrderedDict()
        self._task: OrderedDict[float, object] = OrderedDict()
        self._commands: deque = deque(maxlen=64)
        self._subscribe()
        self._pubs = self._advertise()
        self._flagged = False
        self._started = False
        self._expert_live = False
        self.tick: tuple[float, float, str] | None = None
        """(command stamp, state stamp, tag) of the tick the current observation comes from."""
        self.skipped_ticks = 0
        """Robot ticks that passed unseen between two steps (a slow actor), this env's lifetime."""

    # ------------------------------------------------------------------ graph I/O
    def _subscribe(self) -> None:
        from sensor_msgs.msg import JointState

        from robot_policy import conventions as conv
        from robot_policy.ros.convert import from_time

        def keep(store):
            def cb(msg, _t):
                with self._cv:
                    store[from_time(msg.header.stamp)] = msg
                    while len(store) > 64:
                        store.popitem(last=False)
                    self._cv.notify_all()

            return cb

        def on_command(msg, _t):
            with self._cv:
                self._commands.append((from_time(msg.header.stamp), msg))
                self._cv.notify_all()

        self.client.subscribe(conv.JOINT_STATES, JointState, keep=2, callback=keep(self._states))
        self.client.subscribe(conv.SIM_OBSERVATION, JointState, keep=2, callback=keep(self._task))
        self.client.subscribe(conv.JOINT_COMMANDS, JointState, keep=2, callback=on_command)

    def _advertise(self) -> dict:
        """The arbiter's three inputs, advertised now: :meth:`reset` waits until the arbiter
        matched them (a message published before the match is lost, not queued)."""
        from std_msgs.msg import Bool, Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from robot_policy import conventions as conv
        from robot_policy.ros._node import COMMAND_QOS

        kinds = {
            conv.POLICY_TRAJECTORY: JointTrajectory,
            conv.TELEOP_COMMAND: Float64MultiArray,
            conv.TELEOP_INTERVENTION: Bool,
        }
        return {t: self.client.node.create_publisher(k, t, COMMAND_QOS) for t, k in kinds.items()}

    def _wait_matched(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for topic, pub in self._pubs.items():
            while pub.get_subscription_count() < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"nothing subscribes to {topic} within {timeout:g} s: the graph actor needs the "
                        "intervention arbiter (robot-policy launch launch/sim.launch.xml arbiter:=true "
                        "record:=false; the same ROS_DOMAIN_ID)"
                    )
                time.sleep(0.02)

    def _complete_ticks(self, after: float) -> list[tuple[float, object, float, object, object]]:
        """Ticks whose command is stamped after ``after`` and whose joint state and task state
        arrived: ``(command stamp, command, state stamp, state, task state)``, oldest first.
        A tick's state is stamped at its command time plus the step's compute time, at most a
        quarter period later (``robots/sim/world.py``): the pairing window is half a period."""
        out = []
        for c, cmd in self._commands:
            if c <= after:
                continue
            for s, js in self._states.items():
                if c <= s <= c + 0.5 * self.period and s in self._task:
                    out.append((c, cmd, s, js, self._task[s]))
                    break
        return out

    def _wait_tick(self, after: float, timeout: float):
        """The newest complete tick after ``after`` (waits for one); counts the skipped ones."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._complete_ticks(after), timeout):
                raise TimeoutError(
                    f"no robot tick within {timeout:g} s (a /joint_commands + /joint_states + "
                    "/sim/observation of one control tick): is the graph running "
                    "(robot-policy launch launch/sim.launch.xml arbiter:=true record:=false), "
                    "and is the arm e-stopped (/estop_reset)?"
                )
            ticks = self._complete_ticks(after)
        self.skipped_ticks += len(ticks) - 1
        return ticks[-1]

    def _publish_policy(self, target: np.ndarray) -> None:
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from robot_policy import conventions as conv
        from robot_policy.ros.convert import to_duration, to_time

        msg = JointTrajectory(joint_names=list(self.graph_hw.command_names))
        # Stamped with the observation it answers (the arbiter's handback waits for a chunk
        # answering an observation after the release), due at the robot's next tick.
        msg.header.stamp = to_time(self.tick[1])
        due = self.tick[0] + self.period - self.tick[1]
        msg.points.append(
            JointTrajectoryPoint(positions=[float(v) for v in target], time_from_start=to_duration(due))
        )
        self._pubs[conv.POLICY_TRAJECTORY].publish(msg)

    def _publish_human(self, target: np.ndarray | None, intervening: bool) -> None:
        from std_msgs.msg import Bool

        from robot_policy import conventions as conv
        from robot_policy.ros.convert import forward_msg

        # Command before flag: at a takeover the arbiter forwards a command at most
        # fresh_command_s old the moment the flag arrives.
        if target is not None:
            self._pubs[conv.TELEOP_COMMAND].publish(forward_msg(target, "hil_graph:expert"))
        self._pubs[conv.TELEOP_INTERVENTION].publish(Bool(data=bool(intervening)))
        self._flagged = intervening

    def _raw(self, js, task) -> dict[str, np.ndarray]:
        from robot_policy.ros.convert import joint_state_to_obs, named_vector_to_obs

        raw = joint_state_to_obs(js, list(self.graph_hw.joint_names), self.graph_hw.gripper_joint)
        raw.update(named_vector_to_obs(task))
        for key in ("object", "ee_pos", "ee_quat"):
            if key not in raw:
                raise RuntimeError(
                    f"/sim/observation carries no '{key}' (keys {sorted(raw)}): the graph actor needs "
                    "the tabletop task's state (a sim_node with task tabletop)"
                )
        return raw

    # ------------------------------------------------------------------ the RL contract
    def tcp(self) -> tuple[np.ndarray, float]:
        """The measured end-effector pose of the current tick (``/sim/observation``)."""
        from robot_policy.sim.ik import quat_to_mat

        mat = quat_to_mat(np.asarray(self.raw["ee_quat"], dtype=np.float64))
        return np.asarray(self.raw["ee_pos"], dtype=np.float64), self._yaw_of(mat)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        from robot_policy import conventions as conv
        from robot_policy.ros.convert import msg_to_joint_state
        from robot_policy.ros.evaluate_graph import set_parameter

        names = list(self.graph_hw.command_names)

        timeout = self.cfg.startup_timeout_s if not self._started else max(10.0, self.cfg.tick_timeout_s)
        if self._flagged or self._expert_live:
            self._publish_human(None, False)  # a human still in control from the last episode lets go
        self._expert_live = False
        try:
            self.client.call(conv.ARBITER_RESET, timeout=timeout)  # also: the arbiter is up
        except TimeoutError as e:
            raise TimeoutError(
                f"{e}: the graph actor needs the intervention arbiter between it and the robot; "
                "launch the graph with it (robot-policy launch launch/sim.launch.xml arbiter:=true "
                "record:=false) and check ROS_DOMAIN_ID matches"
            ) from e
        set_parameter(self.client, self.cfg.sim_node, "seed", int(seed))
        reply = self.client.call(conv.SIM_RESET, timeout=timeout)
        self.seed = conv.parse_seed(reply.message)
        self.env.reset(seed=self.seed)  # the kinematic model: the same scene's table and cube size
        self.expert.reset(self.seed)
        self._wait_matched(timeout)
        c, cmd, s, js, task = self._wait_tick(self.client.now(), timeout)
        self.tick = (c, s, cmd.header.frame_id)
        # After the scene reset the robot holds on its own (an untagged command). Hand the
        # holding arm to the arbiter before the episode's first step, so every step's command
        # is the arbiter's (and the path policy -> arbiter -> robot is known to be live).
        deadline = time.monotonic() + timeout
        while not tag_source(cmd.header.frame_id):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the arbiter forwarded no command within {timeout:g} s (the robot executes "
                    f"{cmd.header.frame_id!r}): is the robot's command input remapped away from the arbiter?"
                )
            self._publish_policy(msg_to_joint_state(cmd, names).position)
            c, cmd, s, js, task = self._wait_tick(c, self.cfg.tick_timeout_s)
            self.tick = (c, s, cmd.header.frame_id)
        self._started = True
        self.raw = self._raw(js, task)
        self.grip = 1.0 if msg_to_joint_state(cmd, names).position[-1] > 0 else -1.0
        self.t = 0
        self.table_z = float(self.u.table_height())
        self.cube_start = np.asarray(self.raw["object"][:3], dtype=np.float64).copy()
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool, dict]:
        from robot_policy.ros.convert import msg_to_joint_state

        if self.tick is None:
            raise RuntimeError("GraphEnv.step before reset(seed)")
        if self._expert_live:
            if self._expert_q is None:  # the caller did not ask the expert this step: ask now
                self.expert_action()
            self._publish_human(self._expert_q, True)
            self._expert_q = None
        else:
            self._publish_policy(self.joint_target(action))
        c, cmd, s, js, task = self._wait_tick(self.tick[0], self.cfg.tick_timeout_s)
        executed = msg_to_joint_state(cmd, list(self.graph_hw.command_names)).position
        executed_action = self.executed_to_action(executed)  # relative to the observation acted on
        tag = cmd.header.frame_id
        source = tag_source(tag)
        self.tick = (c, s, tag)
        self.raw = self._raw(js, task)
        self.grip = 1.0 if executed[-1] > 0 else -1.0
        self.t += 1
        success = self._success()
        info = {
            "success": success,
            "timeout": self.t >= self.max_steps,
            "executed_action": executed_action,
            "source": source,
            "tag": tag,
            "intervened": source == "human",
        }
        return self._obs(), success, info

    def executed_to_action(self, executed: np.ndarray) -> np.ndarray:
        """An executed command (joints + gripper, command order) -> the action space, relative to
        the current observation (forward kinematics; the in-process env maps the expert's
        targets the same way)."""
        pos, mat = self.u.ik.fk(np.asarray(executed[: self.n_arm], dtype=np.float64))
        tcp, yaw = self.tcp()
        a = np.zeros(self.action_dim)
        a[:3] = (pos - tcp) / POS_SCALE
        a[3] = _wrap(self._yaw_of(mat) - yaw) / YAW_SCALE
        a[4] = _grip_command(float(executed[-1]) > 0, self.grip)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def _success(self) -> bool:
        """The sim's word (``/sim/success``), asked only once the cube is near the lift height."""
        from robot_policy import conventions as conv
        from robot_policy.sim.tabletop import LIFT_SUCCESS

        bottom = float(self.raw["object"][2]) - float(self.u.object_half_sizes[0][2])
        if bottom < self.table_z + 0.8 * LIFT_SUCCESS:
            return False
        reply = self.client.call(conv.SIM_SUCCESS, timeout=max(5.0, self.cfg.tick_timeout_s))
        return "success_now=True" in reply.message

    # ------------------------------------------------------------------ the human, via the arbiter
    def expert_takeover(self) -> None:
        super().expert_takeover()  # re-synchronised with the arm; the flag goes out with its first command
        self._expert_q = None

    def expert_release(self) -> None:
        super().expert_release()
        self._expert_q = None
        self._publish_human(None, False)

    def close(self) -> None:
        try:
            if self._flagged:
                self._publish_human(None, False)
        finally:
            if self._own_client:
                self.client.close()
            super().close()
