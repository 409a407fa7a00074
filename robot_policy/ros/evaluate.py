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
