"""Evaluation sessions through the ROS 2 graph, on a simulated or a real robot.

The graph of a session: the robot's own nodes (``sim_node``, or ``robot_node`` + ``camera_node``
from the hardware config: ``launch/sim.launch.xml`` / ``launch/real.launch.xml`` without a
policy), the ``recorder_node``, and **one ``policy_node`` per policy** (a checkpoint folder, or a
remote policy server ``ws://HOST:PORT`` through the node's ``server`` parameter), all paused.
Policy ``i`` answers on ``/eval/policy_<i>/reset`` and ``/eval/policy_<i>/pause`` (remapped
``/policy/*``), so exactly one drives the robot at a time and the operator sees only A/B.

:class:`GraphRunner` is the session's ``Runner``. One episode:

1. simulated robot: ``/sim`` parameter ``seed`` := the trial's seed, ``/sim/reset`` (both
   policies of an A/B trial start from the same scene); a real robot is reset by the operator
   (the labeller's ``ready`` hook) before this;
2. ``/recorder/start``, then the policy's ``reset`` (it starts publishing chunks);
3. until the time limit, the oracle's success (``/sim/success``, plus a settle time), or the
   operator's "end" (the labeller's ``end_requested``); then the policy's ``pause``;
4. after the label (``finish``): the verdict, the hidden label, the policy's identity, the
   latencies and the media paths go into the episode's metadata (recorder parameter
   ``episode_meta``), ``/recorder/mark_success``, ``/recorder/stop``: every stream of the
   episode is in the episode store with its labels.

Latencies per episode: every chunk's observation-capture -> arrival-at-the-arm time, from the
robot's ``/robot/chunk_trace``, and the policy node's inference percentiles (``/diagnostics``).
Media: every n-th camera frame while the policy runs -> a thumbnail strip and a short video.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from robot_policy import conventions as conv
from robot_policy.evaluation.labels import SessionError

POLICY_PREFIX = "/eval/policy_{i}"
"""Namespace of policy ``i``'s reset/pause services in a session graph."""


def policy_services(i: int) -> tuple[str, str]:
    """``(reset, pause)`` service names of session policy ``i``."""
    base = POLICY_PREFIX.format(i=i)
    return f"{base}/reset", f"{base}/pause"


def is_server(source: str) -> bool:
    return source.startswith(("ws://", "wss://"))


def policy_node_spec(i: int, source: str, hardware: str, num_inference_steps: int = 0):
    """The ``policy_node`` of session policy ``i`` (paused until its reset service is called)."""
    from robot_policy.ros.launch_file import NodeSpec

    if source == "expert" or source.startswith("expert:"):
        raise SessionError(
            f"policy {source!r}: the scripted expert runs only in the in-process simulation (drop --ros); "
            "through the graph give checkpoint folders or policy servers (ws://HOST:PORT)"
        )
    params = {"hardware": hardware, "autostart": "false", "num_inference_steps": str(num_inference_steps)}
    if is_server(source):
        params["server"] = source
    elif Path(source).is_dir():
        params["checkpoint"] = str(Path(source).resolve())
    else:
        raise SessionError(f"policy {source!r}: not a checkpoint folder nor a ws:// policy server URL")
    reset, pause = policy_services(i)
    return NodeSpec(
        pkg="robot_policy",
        executable="policy_node",
        name=f"eval_policy_{i}",
        params=params,
        remaps=[(conv.POLICY_RESET, reset), (conv.POLICY_PAUSE, pause)],
    )


def session_launch(
    sources: list[str],
    hardware: str,
    launch_world: bool = True,
    record: bool = True,
    dataset: str = "",
    operator: str = "",
    randomization: str | None = None,
    seed: int = 0,
    num_inference_steps: int = 0,
):
    """The session's nodes: the robot world (unless attaching to a running one) + a policy node each."""
    from robot_policy import resources
    from robot_policy.hardware.config import load_hardware_config
    from robot_policy.ros.launch_file import LaunchDescription, parse_launch_file

    hw = load_hardware_config(hardware)
    if launch_world:
        args = {"hardware": hardware, "record": str(record).lower(), "operator": operator}
        if dataset:
            args["dataset"] = str(Path(dataset).resolve())
        if hw.simulated:
            args["seed"] = str(seed)
        from robot_policy.policies.transic.checkpoint import is_transic_checkpoint

        if any(is_transic_checkpoint(src) for src in sources):  # its gate decisions, per step
            args["record_transic"] = "true"
        name = "launch/sim.launch.xml" if hw.simulated else "launch/real.launch.xml"
        desc = parse_launch_file(resources.shipped_file(name), args)
        for node in desc.nodes:
            if node.executable in ("sim_node", "robot_node") and randomization and hw.simulated:
                node.params["randomization"] = randomization
    else:
        desc = LaunchDescription(nodes=[], env={}, args={}, arg_docs={})
    for i, src in enumerate(sources):
        desc.nodes.append(policy_node_spec(i, src, hardware, num_inference_steps))
    return desc


def set_parameter(client, node: str, name: str, value) -> None:
    """Set parameter ``name`` of ``node`` (e.g. ``/sim``) through its standard parameter service."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    resp = client.call(
        f"{node}/set_parameters", SetParameters, parameters=[Parameter(name, value=value).to_parameter_msg()]
    )
    if not resp.results or not resp.results[0].successful:
        reason = resp.results[0].reason if resp.results else "no result"
        raise SessionError(f"{node}: setting parameter {name} failed: {reason}")


@dataclass
class GraphRunnerConfig:
    """How :class:`GraphRunner` runs and records episodes."""

    episode_s: float = 10.0
    """Time limit of one episode (s)."""
    settle_s: float = 0.5
    """After the oracle reports success, keep running this long (the recording shows the result)."""
    poll_s: float = 0.2
    """How often success and the operator's "end" are polled while a policy runs (s)."""
    record: bool = True
    """Record every episode through ``recorder_node`` (its labels in the episode's metadata)."""
    dataset: str = ""
    """The recorder's episode store, when readable here: a resumed session adopts episodes it
    finds there that a killed session had committed but not yet saved."""
    media_fps: float = 5.0
    """Frames per second kept from each camera for the episode's video (0: no media)."""
    recorder_node: str = "/recorder"
    """Name of the recorder node (its ``episode_meta`` parameter)."""
    sim_node: str = "/sim"
    """Name of the simulated robot's node (its ``seed`` parameter)."""


class GraphRunner:
    """Runs session episodes through the graph (see the module docstring); one client, one robot."""

    def __init__(
        self,
        client,
        hw,
        names: list[str],
        cfg: GraphRunnerConfig | None = None,
        media_dir: str | Path | None = None,
        end_requested=None,
    ):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image, JointState

        self.client, self.hw, self.cfg = client, hw, cfg or GraphRunnerConfig()
        self.names = list(names)
        self.services = {n: policy_services(i) for i, n in enumerate(self.names)}
        self.media_dir = Path(media_dir) if media_dir else None
        self.end_requested = end_requested
        self.simulated = bool(hw.simulated)
        self._lock = threading.Lock()
        self._capturing = False
        self._traces: list[float] = []
        self._frames: dict[str, list] = {}
        self._counts: dict[str, int] = {}
        self._episode_start = 0.0
        client.subscribe(conv.DIAGNOSTICS, DiagnosticArray, keep=100, sensor=False)
        client.subscribe(conv.ROBOT_CHUNK_TRACE, JointState, keep=1, sensor=False, callback=self._on_trace)
        client.subscribe(conv.JOINT_STATES, JointState, keep=2)
        self._every = {}
        if self.media_dir is not None and self.cfg.media_fps > 0:
            for cam in hw.cameras:
                self._every[cam.name] = max(1, round(min(cam.fps, hw.control_hz) / self.cfg.media_fps))
                client.subscribe(
                    conv.color_topic(cam.name),
                    Image,
                    keep=1,
                    callback=lambda m, t, c=cam.name: self._on_image(c, m),
                )

    # -- inputs (the client's executor thread) -------------------------------------------------
    def _on_trace(self, msg, _t) -> None:
        from robot_policy.ros import convert

        if list(msg.name) != ["robot_arrival", "first_exec"] or not self._capturing:
            return
        stamp = convert.from_time(msg.header.stamp)
        if stamp >= self._episode_start:
            with self._lock:
                self._traces.append((msg.position[0] - stamp) * 1e3)

    def _on_image(self, cam: str, msg) -> None:
        if not self._capturing:
            return
        with self._lock:
            n = self._counts.get(cam, 0)
            self._counts[cam] = n + 1
            if n % self._every[cam] == 0:
                self._frames.setdefault(cam, []).append(msg)

    # -- set-up ----------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 180.0, alive=None) -> None:
        """Block until the robot, the recorder and every policy node answer (policies paused).
        ``alive()`` -> name of a node that died, or None: fail at once instead of timing out."""
        needed = [pause for _, pause in self.services.values()]
        if self.cfg.record:
            needed.append(conv.RECORDER_DISCARD)  # also drops an episode a killed session left open
        if self.simulated:
            needed.append(conv.SIM_SUCCESS)
        deadline = time.time() + timeout
        for name in needed:
            while True:
                dead = alive() if alive is not None else None
                if dead:
                    raise SessionError(f"node '{dead}' exited while the session graph started (see its log)")
                try:
                    self.client.call(name, timeout=2.0)
                    break
                except TimeoutError:
                    if time.time() > deadline:
                        raise SessionError(
                            f"service {name} did not come up within {timeout:.0f} s: is the graph running?"
                        ) from None
        self.client.latest(conv.JOINT_STATES, timeout=max(1.0, deadline - time.time()))

    # -- one episode ---------------------------------------------------------------------------
    def _policy_diag(self, since: float) -> dict[str, float]:
        for msg in reversed(self.client.messages(conv.DIAGNOSTICS)):
            if msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec < since:
                continue
            for st in msg.status:
                if st.name == "policy: inference" and st.message.startswith("active"):
                    vals = {kv.key: kv.value for kv in st.values}
                    out = {}
                    for k in (
                        "inference_ms_p50",
                        "inference_ms_p90",
                        "obs_to_cmd_ms_p50",
                        "obs_to_cmd_ms_p90",
                    ):
                        try:
                            out[k] = float(vals[k])
                        except (KeyError, ValueError):
                            pass
                    return out
        return {}

    def run(self, policy: str, seed: int) -> dict:
        from std_srvs.srv import SetBool  # noqa: F401 - fail here, not mid-episode, without std_srvs

        reset, pause = self.services[policy]
        for _, other in self.services.values():
            self.client.call(other)
        if self.simulated:
            set_parameter(self.client, self.cfg.sim_node, "seed", int(seed))
            got = conv.parse_seed(self.client.call(conv.SIM_RESET).message)
            if got != int(seed):
                raise SessionError(f"/sim/reset used seed {got}, the trial needs {seed}")
        if self.cfg.record:
            r = self.client.call(conv.RECORDER_START)
            if not r.success:  # an episode left open (an operator's manual start): drop it, retry
                self.client.call(conv.RECORDER_DISCARD)
                r = self.client.call(conv.RECORDER_START)
                if not r.success:
                    raise SessionError(f"/recorder/start refused: {r.message}")
        with self._lock:
            self._traces, self._frames, self._counts = [], {}, {}
        self._episode_start = self.client.now()
        self._capturing = True
        self.client.call(reset)
        t0 = time.time()
        success, ended_by = False, "time limit"
        while time.time() - t0 < self.cfg.episode_s:
            time.sleep(self.cfg.poll_s)
            if self.simulated and self.client.call(conv.SIM_SUCCESS).success:
                success, ended_by = True, "success"
                time.sleep(self.cfg.settle_s)
                break
            if self.end_requested is not None and self.end_requested():
                ended_by = "operator"
                break
        diag = self._policy_diag(self._episode_start)
        self.client.call(pause)
        episode_s = time.time() - t0
        self._capturing = False
        if self.simulated and not success:
            success = bool(self.client.call(conv.SIM_SUCCESS).success)
        with self._lock:
            lat = list(self._traces)
        return {
            "success": success if self.simulated else None,
            "steps": int(round(episode_s * self.hw.control_hz)),
            "latency_ms": lat,
            "latency_kind": "observation capture -> arm, per chunk (ms)",
            "episode_s": episode_s,
            "inference_ms": diag,
            "ended_by": ended_by,
        }

    def _media(self, record: dict) -> dict:
        if self.media_dir is None:
            return {}
        from robot_policy.evaluation.media import write_episode_media
        from robot_policy.ros import convert

        with self._lock:
            msgs, self._frames = self._frames, {}
        frames = {cam: [convert.image_to_frame(m, cam).image for m in ms] for cam, ms in msgs.items()}
        stem = f"t{record['trial']:03d}_{record['label']}"
        return write_episode_media(
            frames, self.media_dir, stem, self.cfg.media_fps, root=self.media_dir.parent
        )

    def finish(self, record: dict, aborted: bool) -> dict:
        """Write the media, then commit the recording with the labels in its metadata."""
        from std_srvs.srv import SetBool

        out: dict = {}
        media = {} if aborted else self._media(record)
        if media:
            out["media"] = media
        if not self.cfg.record:
            return out
        meta = {"evaluation": {**record, **out, "aborted": bool(aborted)}}
        set_parameter(self.client, self.cfg.recorder_node, "episode_meta", json.dumps(meta))
        self.client.call(conv.RECORDER_MARK_SUCCESS, SetBool, data=bool(record["success"]))
        r = self.client.call(conv.RECORDER_STOP, timeout=60.0)
        out["recorded"] = bool(r.success)
        out["recorder"] = r.message
        if r.success and r.message.startswith("episode "):
            out["dataset_episode"] = int(r.message.split()[1])
        return out

    def recover(self, state: dict) -> list[dict]:
        """Labelled episodes of this session in the episode store (committed by a session that was
        killed before it saved them): they are adopted instead of re-run."""
        path = Path(self.cfg.dataset) if self.cfg.dataset else None
        if not self.cfg.record or path is None or not path.exists():
            return []
        from robot_policy.data import EpisodeStore

        out = []
        store = EpisodeStore.open(path)
        try:
            for i, meta in enumerate(store.episodes_meta()):
                ev = meta.get("evaluation")
                if isinstance(ev, dict) and ev.get("session") == state["id"] and not ev.get("aborted"):
                    rec = {k: v for k, v in ev.items() if k != "aborted"}
                    rec.update(recorded=True, dataset_episode=i, recovered=True)
                    out.append(rec)
        finally:
            store.close()
        return out
