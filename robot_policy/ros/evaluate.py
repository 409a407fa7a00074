"""Evaluation episodes through the ROS 2 graph: policy_node -> JointTrajectory -> sim_node,
recorded by recorder_node. Drives the graph only through its services, as an operator would.

Per episode: pause the policy, reset the scene, ``/policy/reset``, ``/recorder/start``, poll
success until it is reached (+ a short settle) or the time limit, pause the policy,
``/recorder/mark_success``, ``/recorder/stop``. The policy's ``/diagnostics`` give latencies.

The scene: a simulated robot resets with ``/sim/reset`` (seed) and reports ``/sim/success``
(:class:`SimScene`); a real robot has no ``/sim/*`` services, so the operator resets the scene and
judges each episode (:class:`OperatorScene`). :func:`scene_for` picks by the hardware config.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from robot_policy import conventions as conv
from robot_policy.ros.client import GraphClient


class SimScene:
    """A simulated robot's episodes: ``/sim/reset`` (returns the seed), ``/sim/success``."""

    def __init__(self, client: GraphClient):
        self.client = client

    def reset(self) -> int | None:
        return conv.parse_seed(self.client.call(conv.SIM_RESET).message)

    def success(self) -> bool:
        return bool(self.client.call(conv.SIM_SUCCESS).success)

    def verdict(self, seen: bool) -> bool:
        return seen


class OperatorScene:
    """A real robot's episodes: the operator resets the scene and says whether it succeeded
    (``ask`` prints a prompt and returns the answer; default ``input``)."""

    def __init__(self, ask: Callable[[str], str] = input):
        self.ask = ask

    def reset(self) -> int | None:
        self.ask("reset the scene, then press Enter ")
        return None  # no seed: the operator laid the scene out

    def success(self) -> bool:
        return False  # nothing to poll: the episode runs for its time limit

    def verdict(self, seen: bool) -> bool:
        return self.ask("did the episode succeed? [y/N] ").strip().lower().startswith("y")


def scene_for(hw, client: GraphClient, ask: Callable[[str], str] = input) -> SimScene | OperatorScene:
    """:class:`SimScene` for a simulated robot (``hw.simulated``), else :class:`OperatorScene`."""
    return SimScene(client) if hw.simulated else OperatorScene(ask)


@dataclass
class EpisodeResult:
    seed: int | None
    success: bool
    duration_s: float
    recorded: bool
    recorder_message: str
    latency: dict[str, float] = field(default_factory=dict)
    """Policy diagnostics at the end of the episode (ms percentiles over the recent window)."""


def _policy_diag(client: GraphClient, since: float, timeout: float = 3.0) -> dict[str, str]:
    return client.diagnostics("policy: inference", since=since, timeout=timeout) or {}


def wait_for_graph(
    client: GraphClient, timeout: float = 120.0, policy: bool = True, recorder: bool = True
) -> None:
    """Block until the sim (and the policy/recorder services) answer."""
    from sensor_msgs.msg import JointState

    client.subscribe(conv.JOINT_STATES, JointState, keep=2)
    client.latest(conv.JOINT_STATES, timeout=timeout)
    if policy:
        client.call(conv.POLICY_PAUSE, timeout=timeout)
    if recorder:
        client.call(conv.RECORDER_DISCARD, timeout=timeout)


def run_episodes(
    client: GraphClient,
    episodes: int,
    max_seconds: float,
    settle_s: float = 0.5,
    record: bool = True,
    progress: bool = True,
    scene: SimScene | OperatorScene | None = None,
) -> list[EpisodeResult]:
    """Run ``episodes`` evaluation episodes through the graph; returns one result per episode.
    ``scene``: how episodes are reset and judged (default: the simulated robot's services)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import SetBool
    from tqdm import tqdm

    client.subscribe(conv.DIAGNOSTICS, DiagnosticArray, keep=20, sensor=False)
    scene = scene or SimScene(client)
    results: list[EpisodeResult] = []
    bar = tqdm(range(episodes), desc="eval (ROS 2 graph)", unit="ep", disable=not progress)
    for _ in bar:
        client.call(conv.POLICY_PAUSE)
        seed = scene.reset()
        client.call(conv.POLICY_RESET)
        if record:
            client.call(conv.RECORDER_START)
        t0 = time.time()
        success = False
        while time.time() - t0 < max_seconds:
            time.sleep(0.25)
            if scene.success():
                success = True
                time.sleep(settle_s)
                break
        duration = time.time() - t0
        client.call(conv.POLICY_PAUSE)
        success = scene.verdict(success)
        msg, recorded = "", False
        if record:
            client.call(conv.RECORDER_MARK_SUCCESS, SetBool, data=success)
            r = client.call(conv.RECORDER_STOP)
            msg, recorded = r.message, bool(r.success)
        diag = _policy_diag(client, since=client.now() - 1.5)
        lat = {}
        for k in (
            "inference_ms_p50",
            "inference_ms_p90",
            "obs_to_cmd_ms_p50",
            "obs_to_cmd_ms_p90",
            "obs_age_ms_p50",
        ):
            try:
                lat[k] = float(diag[k])
            except (KeyError, ValueError):
                pass
        results.append(EpisodeResult(seed, success, duration, recorded, msg, lat))
        bar.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
    return results


def final_diagnostics(client: GraphClient) -> dict[str, str]:
    """The policy node's diagnostics now (latency percentiles over its whole window)."""
    return _policy_diag(client, since=client.now() - 1.5, timeout=5.0)


def to_dicts(results: list[EpisodeResult]) -> list[dict]:
    return [asdict(r) for r in results]


# -- the operator's UI as a ROS client ---------------------------------------------------------

LABEL_SERVICES = ("start", "end", "success", "failure", "abort", "prefer_a", "prefer_b", "tie")
"""``/evaluate/<name>`` (std_srvs/Trigger) services of :class:`ServiceOperator`."""


class ServiceOperator:
    """Labels from ROS services, for an operator's UI (a web page, a tablet, ``ros2 service call``).

    Services (std_srvs/Trigger) under ``prefix`` (default ``/evaluate``): ``start`` (the scene is
    reset: run the episode), ``end`` (end it now), ``success`` / ``failure`` / ``abort`` (label the
    episode; while it runs they also end it), ``prefer_a`` / ``prefer_b`` / ``tie`` (after both
    episodes of an A/B trial). A call that does not fit the moment is refused with a message
    saying what the session waits for. Before a label, the parameters ``partial`` (0-100; < 0:
    100 for success, 0 for failure) and ``note`` of the evaluator's node add a partial score and
    a note (``ros2 param set /evaluator note "slow grasp"``); they are cleared after each label.
    What the session waits for is published on ``<prefix>/prompt`` (std_msgs/String, latched).
    """

    def __init__(self, client: GraphClient, prefix: str = "/evaluate", say: Callable[[str], None] = print):
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.node, self.say, self.prefix = client.node, say, prefix.rstrip("/")
        from rcl_interfaces.msg import ParameterDescriptor

        # Dynamically typed: `ros2 param set /evaluator partial 60` sends an integer.
        self.node.declare_parameter("partial", -1.0, ParameterDescriptor(dynamic_typing=True))
        self.node.declare_parameter("note", "", ParameterDescriptor(dynamic_typing=True))
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_prompt = self.node.create_publisher(String, f"{self.prefix}/prompt", latched)
        self._cv = threading.Condition()
        self._expect: set[str] = set()
        self._got: tuple[str, float, str] | None = None
        self.prompt = ""
        for name in LABEL_SERVICES:
            self.node.create_service(
                Trigger, f"{self.prefix}/{name}", lambda req, resp, n=name: self._on_call(n, resp)
            )

    def _on_call(self, name: str, resp):
        from rclpy.parameter import Parameter

        with self._cv:
            if name not in self._expect:
                resp.success = False
                resp.message = f"not now: {self.prompt or 'the session is not waiting for the operator'}"
                return resp
            partial = float(self.node.get_parameter("partial").value)
            note = str(self.node.get_parameter("note").value)
            self.node.set_parameters([Parameter("partial", value=-1.0), Parameter("note", value="")])
            self._got = (name, partial, note)
            self._expect = set()
            self._cv.notify_all()
        resp.success, resp.message = True, f"{name}: accepted"
        return resp

    def _open(self, expect: set[str], prompt: str) -> None:
        from std_msgs.msg import String

        with self._cv:
            self._expect, self.prompt = set(expect), prompt
        self.pub_prompt.publish(String(data=prompt))
        self.say(prompt)

    def _wait(self, expect: set[str], prompt: str) -> tuple[str, float, str]:
        self._open(expect, prompt)
        with self._cv:
            while self._got is None:
                self._cv.wait(0.5)
            got, self._got = self._got, None
        return got

    def ready(self, trial, label, seed) -> None:
        with self._cv:
            self._got = None
        self._wait(
            {"start"},
            f"trial {trial}, policy {label}: reset the scene (seed {seed}), then {self.prefix}/start",
        )
        self._open(
            {"end", "success", "failure", "abort"},
            f"trial {trial}, policy {label} running: {self.prefix}/end, success, failure or abort",
        )

    def end_requested(self) -> bool:
        with self._cv:
            return self._got is not None

    def label(self, trial, label, seed, result):
        from robot_policy.evaluation.labels import EpisodeLabel

        with self._cv:
            got, self._got = self._got, None
        if got is None or got[0] == "end":
            got = self._wait(
                {"success", "failure", "abort"},
                f"trial {trial}, policy {label} done: {self.prefix}/success, failure or abort "
                "(parameters partial, note first)",
            )
        with self._cv:
            self._expect = set()
        name, partial, note = got
        if name == "abort":
            return EpisodeLabel(aborted=True, note=note)
        ok = name == "success"
        return EpisodeLabel(success=ok, partial=(100.0 if ok else 0.0) if partial < 0 else partial, note=note)

    def prefer(self, trial, labels, results):
        from robot_policy.evaluation.labels import Preference

        name, _, note = self._wait(
            {"prefer_a", "prefer_b", "tie"},
            f"trial {trial}: which was better? {self.prefix}/prefer_a, prefer_b or tie",
        )
        return Preference({"prefer_a": "A", "prefer_b": "B", "tie": "tie"}[name], note=note)
