"""Chunk stage traces (no ROS): every published chunk carries monotone, complete stage stamps; the
budget check names exactly the stage that was slowed; the trace file round-trips and plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_runtime_policy import FakePolicy

from robot_policy.inference.trace import (
    STAGES,
    ChunkTrace,
    StageBudget,
    TraceLog,
    load,
    plot_stages,
    stage_table,
)
from robot_policy.runtime.policy_runner import PolicyRunner


class Clock:
    """A graph clock the test moves by hand (and the fake predictor moves while it 'computes')."""

    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


class SlowPolicy(FakePolicy):
    def __init__(self, clock: Clock, compute_s: float):
        super().__init__()
        self.clock, self.compute_s = clock, compute_s

    def predict(self, obs, **kw):
        self.clock.t += self.compute_s  # inference takes compute_s of graph time
        return super().predict(obs, **kw)


def _run(compute_s: float, chunks: int = 12, tmp_path=None):
    """Drive a runner like policy_node does: samples arrive 5 ms after capture at 10 Hz, the
    loop ticks every 10 ms, each published chunk reaches the robot 2 ms later and runs at its next
    20 ms tick. Returns the runner (its TraceLog holds the finished traces)."""
    clock = Clock()
    policy = SlowPolicy(clock, compute_s)
    runner = PolicyRunner(
        policy, max_obs_age=2.0, clock=clock, trace_file=str(tmp_path / "trace.jsonl") if tmp_path else None
    )
    next_capture = clock.t
    while len(runner.traces.finished) < chunks:
        while clock.t >= next_capture + 0.005:  # arrival 5 ms after capture
            arrival = next_capture + 0.005
            runner.buffer.add("joint_pos", next_capture, np.array([next_capture, 0.0], np.float32), arrival)
            runner.buffer.add("cam_rgb", next_capture, np.zeros((2, 2, 3), np.uint8), arrival)
            next_capture += 0.1
        plan = runner.tick(clock.t)
        if runner._worker is not None:
            runner._worker.join(5)  # the fake predictor moved the clock by compute_s
        if plan is not None:
            trace = runner.last_trace
            clock.t += 0.001
            trace.publish = clock.t
            runner.traces.published(trace)
            arrival = clock.t + 0.002
            first = math.ceil(arrival / 0.02) * 0.02
            assert runner.traces.robot_report(plan.obs_stamp, arrival, first)
        clock.t += 0.01
    runner.traces.close()
    return runner


def test_every_published_chunk_has_monotone_complete_stages_and_a_slowed_stage_is_named(tmp_path):
    fast = _run(compute_s=0.02)
    assert len(fast.traces.finished) == 12
    for t in fast.traces.finished:
        assert t.complete() and t.monotone(), t
        assert t.stages_ms()["inference"] == pytest.approx(20.0, abs=1e-6)
        assert t.stages_ms()["transport_in"] == pytest.approx(5.0, abs=1e-6)
    # Budgets derived from the 10 Hz control rate: nothing over.
    assert fast.traces.over_budget() == {}
    assert fast.diagnostics()["stage_ms/inference_p99"] == "20.0"

    slow = _run(compute_s=0.25)  # inference slower than a control period (100 ms budget)
    over = slow.traces.over_budget()
    assert list(over) == ["inference"]
    assert over["inference"] == (pytest.approx(250.0), pytest.approx(100.0))
    # A configured budget replaces the derived one.
    slow.traces.budget = StageBudget(inference=300.0)
    assert slow.traces.over_budget() == {}


def test_trace_file_round_trips_and_plots(tmp_path):
    runner = _run(compute_s=0.03, chunks=6, tmp_path=tmp_path)
    back = load(tmp_path / "trace.jsonl")
    assert back == list(runner.traces.finished)
    rows = {r["stage"]: r for r in stage_table(back, StageBudget().resolved(0.1))}
    assert set(STAGES) <= set(rows) and rows["inference"]["p50_ms"] == pytest.approx(30.0)
    assert rows["total"]["n"] == 6 and rows["inference"]["budget_ms"] == 100.0
    png = plot_stages(back, tmp_path / "stages.png")
    assert png.stat().st_size > 10_000
    (tmp_path / "bad.jsonl").write_text('{"capture": 1.0, "shutter": 2.0}\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load(tmp_path / "bad.jsonl")


def test_a_chunk_the_robot_never_ran_is_counted_not_lost():
    log = TraceLog(dt=0.05)
    for k in range(3):
        log.published(ChunkTrace(capture=float(k), arrival=k + 0.01, publish=k + 0.02))
    assert log.robot_report(0.0, 0.03, float("nan"))  # superseded before a tick used it
    assert log.robot_report(2.0, 2.03, 2.05)
    assert not log.robot_report(7.0, 7.0, 7.0)  # unknown chunk
    assert log.incomplete == 1 and len(log.finished) == 2
    for k in range(100):  # the robot never answers: bounded, and counted
        log.published(ChunkTrace(capture=10.0 + k))
    assert log.incomplete == 1 + 100 + 1 - 64
