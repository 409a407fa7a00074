"""Policy server core (no ROS): observations by capture stamp, stale inputs, async chunks;
trajectory execution timing; message conversion from bytes."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from robot_policy.hardware.trajectory import TrajectoryExecutor
from robot_policy.runtime.policy_runner import ObservationBuffer, PolicyRunner, StaleObservation
from robot_policy.types import ActionChunk


class FakePolicy:
    """Returns a chunk whose actions encode the observation they were computed from."""

    def __init__(self, delay=0.0):
        self.config = SimpleNamespace(
            obs_keys=["joint_pos"],
            image_keys=["cam_rgb"],
            n_obs_steps=2,
            fps=10.0,
            n_action_steps=4,
            horizon=8,
        )
        self.delay = delay
        self.seen = []
        self.release = threading.Event()
        self.release.set()

    def reset(self):
        pass

    def predict(self, obs, prior=None, start_time=0.0, num_steps=None):
        self.release.wait(5)
        self.seen.append({k: v.copy() for k, v in obs.items()})
        base = obs["joint_pos"][-1, 0]
        return ActionChunk(
            np.full((7, 2), base, np.float32) + np.arange(7)[:, None], start_time=start_time, dt=0.1
        )


def test_history_by_capture_stamp_and_stale_inputs():
    buf = ObservationBuffer(["a", "b"])
    for k, t in enumerate([1.0, 1.1, 1.2, 1.3]):
        buf.add("a", t, np.array([k], np.float32))
    buf.add("b", 1.25, np.array([25.0]))
    buf.add("b", 1.05, np.array([5.0]))  # arrives late, captured earlier: ordered by stamp
    obs, ref = buf.history(2, 0.1, now=1.3, max_age=0.5)
    assert ref == pytest.approx(1.25)  # newest instant every key covers
    np.testing.assert_array_equal(obs["a"][:, 0], [1, 2])  # captures at 1.1 and 1.2 (<= grid)
    np.testing.assert_array_equal(obs["b"][:, 0], [5, 25])
    with pytest.raises(StaleObservation, match=r"b \(650 ms old\)"):
        buf.history(2, 0.1, now=1.9, max_age=0.5)
    with pytest.raises(StaleObservation, match="never received"):
        ObservationBuffer(["a", "c"]).history(2, 0.1, now=0.0, max_age=0.5)


def _feed(runner, t):
    runner.buffer.add("joint_pos", t, np.array([t, 0.0], np.float32))
    runner.buffer.add("cam_rgb", t, np.zeros((2, 2, 3), np.uint8))


def test_runner_infers_async_and_drops_late_actions():
    policy = FakePolicy()
    policy.release.clear()  # hold the first inference to simulate latency
    r = PolicyRunner(policy, max_obs_age=0.5, clock=lambda: 0.0)
    _feed(r, 10.0)
    _feed(r, 10.1)
    assert r.tick(10.1) is None  # inference started in the background: nothing to publish yet
    assert r.stats.inferences == 1
    assert r.tick(10.2) is None  # execution is never blocked by the running inference
    policy.release.set()
    r._worker.join(5)
    plan = r.tick(10.35)
    times, actions, t_obs = plan.times(), plan.actions, plan.obs_stamp
    assert t_obs == pytest.approx(10.1)
    # The chunk starts one period after the capture (10.2); at 10.35 the action for 10.2 is
    # late (tolerance: half a period) and dropped, the plan starts with the one for 10.3.
    assert times[0] == pytest.approx(10.3)
    assert actions[0, 0] == pytest.approx(10.1 + 1)
    assert r.stats.dropped_late_actions >= 1
    np.testing.assert_array_equal(policy.seen[0]["joint_pos"][:, 0], np.float32([10.0, 10.1]))
    diag = r.diagnostics(10.35)
    assert int(diag["inferences"]) >= 1 and float(diag["obs_to_cmd_ms_p50"]) == pytest.approx(250, abs=1)


def test_runner_reports_stale_inputs_instead_of_inferring():
    r = PolicyRunner(FakePolicy(), max_obs_age=0.2, clock=lambda: 0.0)
    _feed(r, 5.0)
    assert r.tick(6.0) is None
    assert r.stats.inferences == 0 and r.stats.stale_skips == 1 and "ms old" in r.stats.last_stale


def test_trajectory_executor_times_and_late_points():
    ex = TrajectoryExecutor()
    late = ex.set(
        start=10.0,
        time_from_start=np.array([0.1, 0.2, 0.3]),
        points=np.array([[1.0], [2.0], [3.0]]),
        now=10.15,
        current=np.array([0.0]),
    )
    assert late == 1  # the point at 10.1 had passed
    # From the current command at 'now' to the next point: no jump to the dropped one.
    assert ex.sample(10.15)[0] == pytest.approx(0.0)
    assert ex.sample(10.175)[0] == pytest.approx(1.0)
    assert ex.sample(10.25)[0] == pytest.approx(2.5)
    assert ex.sample(11.0)[0] == 3.0  # holds the last point
    ex.set(
        start=0.0,
        time_from_start=np.array([1.0]),
        points=np.array([[5.0]]),
        now=20.0,
        current=np.array([3.0]),
    )
    assert ex.sample(20.5)[0] == pytest.approx(4.0)  # stamp 0 = start now, from the current command
    with pytest.raises(ValueError, match="increasing"):
        ex.set(0.0, np.array([0.2, 0.1]), np.zeros((2, 1)), 0.0, np.zeros(1))


def test_image_conversion_uses_bytes_and_round_trips():
    rclpy = pytest.importorskip("rclpy")  # noqa: F841
    from robot_policy.ros.convert import frame_to_image, image_to_frame
    from robot_policy.types import Frame

    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    msg = frame_to_image(Frame(img, 12.25, "agentview"))
    assert (msg.encoding, msg.step, msg.height, msg.width) == ("rgb8", 192, 48, 64)
    back = image_to_frame(msg, "agentview")
    np.testing.assert_array_equal(back.image, img)
    assert back.stamp == pytest.approx(12.25)
    depth = frame_to_image(Frame(np.arange(12, dtype=np.uint16).reshape(3, 4), 1.0, "d"))
    assert depth.encoding == "16UC1" and image_to_frame(depth).image[2, 3] == 11
    big = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    big_msg = frame_to_image(Frame(big, 0.0))
    assert (big_msg.height, big_msg.width, big_msg.step) == (480, 640, 1920)
    np.testing.assert_array_equal(image_to_frame(big_msg).image, big)


def _engine_runner(warm_k: int, rtc: bool = False, use_prior: bool = True):
    """A PolicyRunner over a real InferenceEngine wrapping a tiny flow policy (4 Euler steps)."""
    import torch

    from robot_policy.config import from_dict
    from robot_policy.inference import SchedulerConfig
    from robot_policy.inference.engine import EngineConfig, InferenceEngine
    from robot_policy.inference.warmstart import WarmStartConfig
    from robot_policy.policies import POLICIES, PolicyConfig

    cfg = {
        "family": "flow",
        "obs_keys": ["joint_pos"],
        "obs_shapes": {"joint_pos": [2]},
        "action_dim": 2,
        "horizon": 8,
        "n_obs_steps": 2,
        "n_action_steps": 4,
        "fps": 10.0,
        "down_dims": [16, 32],
        "obs_mlp_dims": [32],
        "step_embed_dim": 16,
    }
    stats = {
        k: {"min": -np.ones(2), "max": np.ones(2), "mean": np.zeros(2), "std": np.ones(2)}
        for k in ("joint_pos", "action")
    }
    torch.manual_seed(0)
    policy = POLICIES.get("flow")(from_dict(PolicyConfig, cfg), stats)
    warm = WarmStartConfig(schedule_steps=4, run_steps=warm_k)
    eng = InferenceEngine(
        policy, EngineConfig(device="cpu", precision="fp32", num_steps=4, warmup=1, seed=0, warm_start=warm)
    )
    calls = []  # one entry per predict: (prior, denoiser forwards, chunk)
    forwards = []
    policy.model.register_forward_hook(lambda *_: forwards.append(1))
    predict = eng.predict

    def spy(obs, prior=None, **kw):
        n0 = len(forwards)
        chunk = predict(obs, prior=prior, **kw)
        calls.append((prior, len(forwards) - n0, chunk))
        return chunk

    eng.predict = spy
    sched = SchedulerConfig(mode="async", n_action_steps=4, rtc=rtc)
    runner = PolicyRunner(eng, sched_cfg=sched, clock=lambda: 0.0, use_prior=use_prior)
    return runner, calls


def _drive(runner, ticks: int = 12) -> list:
    """Feed a joint state every tick (10 Hz) and tick; each inference finishes before the next tick."""
    plans = []
    for i in range(ticks):
        t = round(0.1 * i, 6)
        runner.buffer.add("joint_pos", t, np.array([np.sin(t), np.cos(t)], np.float32))
        plan = runner.tick(t)
        if plan is not None:
            plans.append(plan)
        if runner._worker is not None:
            runner._worker.join(30)
    assert runner.stats.errors == 0, runner.stats.last_error
    return plans


def test_runner_warm_start_passes_scheduled_plan_and_runs_last_k_steps():
    runner, calls = _engine_runner(warm_k=1)
    plans = _drive(runner)
    assert len(calls) >= 3 and len(plans) >= 3
    prior0, forwards0, chunk0 = calls[0]
    assert prior0 is None and forwards0 == 4  # first call of an episode: full cold sample
    for (_, _, prev), (prior, forwards, chunk) in zip(calls, calls[1:]):
        assert forwards == 1  # warm: only the last 1 of 4 Euler steps
        # The prior is the plan already scheduled, on the new chunk's grid (capture + one period).
        assert prior.start_time == pytest.approx(chunk.start_time)
        shift = int(round((chunk.start_time - prev.start_time) / runner.dt))
        assert 0 < shift < len(prev)
        np.testing.assert_allclose(prior.actions[: len(prev) - shift], prev.actions[shift:], atol=1e-6)
        assert not np.any(prior.weights)  # RTC off: no pinned prefix
    # A new episode starts cold again.
    runner.reset()
    n = len(calls)
    _drive(runner, ticks=2)
    assert calls[n][0] is None and calls[n][1] == 4


def test_runner_without_warm_start_is_unchanged():
    runner, calls = _engine_runner(warm_k=0)
    plans = _drive(runner)
    assert len(calls) >= 3 and all(f == 4 for _, f, _ in calls)  # every call: full schedule
    # The prior is handed over but unused: same noise (seeded engine), same published plans as
    # a runner that never passes one.
    ref, ref_calls = _engine_runner(warm_k=0, use_prior=False)
    ref_plans = _drive(ref)
    assert all(p is None for p, _, _ in ref_calls) and any(p is not None for p, _, _ in calls)
    assert len(plans) == len(ref_plans)
    for p, rp in zip(plans, ref_plans):
        np.testing.assert_array_equal(p.times(), rp.times())
        np.testing.assert_array_equal(p.actions, rp.actions)
        assert p.obs_stamp == rp.obs_stamp


def test_runner_rtc_pins_the_prefix_that_runs_before_the_chunk_lands():
    runner, calls = _engine_runner(warm_k=1, rtc=True)
    _drive(runner)
    assert len(calls) >= 3
    for prior, forwards, chunk in calls[1:]:
        d = prior.delay_steps
        # Latency is one tick here: the chunk lands when its first action is due, which the
        # tolerance counts as already executing from the old plan.
        assert d >= 1 and np.all(prior.weights[:d] == 1.0) and prior.weights[d] < 1.0
        np.testing.assert_allclose(chunk.actions[:d], prior.actions[:d], atol=1e-4)
        assert forwards == 1


def test_drop_plan_replans_from_the_current_state_and_ignores_inference_in_flight():
    """What policy_node does when the arbiter hands control to a human or back."""

    def planned():
        policy = FakePolicy()
        r = PolicyRunner(policy, max_obs_age=0.5, clock=lambda: 0.0)
        _feed(r, 10.0)
        _feed(r, 10.1)
        r.tick(10.1)
        r._worker.join(5)
        assert r.tick(10.15) is not None  # a plan for 10.2 ... is scheduled
        _feed(r, 10.2)
        return policy, r

    _, keep = planned()
    keep.tick(10.2)
    assert keep.stats.inferences == 1  # the plan still runs: no new inference yet
    policy, r = planned()
    r.drop_plan()
    r.tick(10.2)
    assert r.stats.inferences == 2  # dropped: infer at once from the newest state
    r._worker.join(5)
    plan = r.tick(10.25)
    assert plan is not None and plan.obs_stamp == pytest.approx(10.2)
    # An inference in flight when the plan is dropped answered an older state: never published.
    policy.release.clear()
    r.drop_plan()
    _feed(r, 10.3)
    r.tick(10.3)
    assert r.stats.inferences == 3
    r.drop_plan()
    policy.release.set()
    r._worker.join(5)
    assert r.tick(10.32) is None
