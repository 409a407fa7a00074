"""Evaluation through the graph on a real robot uses no /sim/* service: the operator resets the
scene and judges the episode. (The simulated path runs end to end in test_ros_e2e.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("std_srvs")

from robot_policy import conventions as conv  # noqa: E402
from robot_policy.hardware.config import load_hardware_config  # noqa: E402
from robot_policy.ros.evaluate import OperatorScene, SimScene, run_episodes, scene_for  # noqa: E402


class Reply:
    def __init__(self, success=True, message=""):
        self.success, self.message = success, message


class FakeClient:
    """Records service calls; answers like the real nodes would."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def subscribe(self, *a, **k):
        pass

    def now(self) -> float:
        return 0.0

    def diagnostics(self, *a, **k):
        return {}

    def call(self, name, srv=None, **fields):
        self.calls.append((name, fields))
        if name.startswith("/sim/"):
            raise AssertionError(f"a real robot has no {name}")
        return Reply(True, "episode 0 committed")


def test_real_robot_episodes_are_reset_and_judged_by_the_operator():
    client = FakeClient()
    assert isinstance(scene_for(load_hardware_config("sim_tabletop"), client), SimScene)
    answers = iter(["", "y", "", "n"])
    prompts = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    scene = scene_for(load_hardware_config("fr3_sim"), client, ask=ask)
    assert isinstance(scene, OperatorScene)
    results = run_episodes(client, 2, max_seconds=0.3, progress=False, scene=scene)
    assert [r.success for r in results] == [True, False] and all(r.seed is None for r in results)
    assert [f["data"] for n, f in client.calls if n == conv.RECORDER_MARK_SUCCESS] == [True, False]
    assert "reset the scene" in prompts[0] and "succeed" in prompts[1]
