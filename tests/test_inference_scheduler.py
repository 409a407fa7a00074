"""Chunk scheduler and latency estimator: timing invariants on a simulated clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_policy.inference.latency import LatencyEstimator
from robot_policy.inference.scheduler import ChunkScheduler, SchedulerConfig, rtc_weights
from robot_policy.types import ActionChunk

DT = 0.1


def timed_chunk(start: float, horizon: int = 16, dt: float = DT) -> ActionChunk:
    """A chunk whose action value IS its scheduled time: emitted values reveal staleness."""
    t = start + dt * np.arange(horizon)
    return ActionChunk(np.stack([t, -t], axis=1).astype(np.float64), start_time=start, dt=dt)


def run(sched: ChunkScheduler, latencies, n_ticks: int = 120):
    """Control loop on a simulated clock; inference i takes latencies[i % len] seconds."""
    emitted, k = [], 0
    for tick in range(n_ticks):
        now = tick * DT
        if sched.should_infer(now):
            req = sched.begin_inference(now)
            sched.submit(timed_chunk(req.time), ready_at=now + latencies[k % len(latencies)])
            k += 1
        a = sched.action_at(now)
        emitted.append((now, None if a is None else float(a[0])))
    return emitted, k


def test_estimator_forgets_old_spike_unlike_lifetime_max():
    est = LatencyEstimator(window=8, percentile=90)
    est.add(2.0)  # e.g. the first call after load
    for _ in range(3):
        est.add(0.05)
    assert est.estimate() > 1.0  # the spike is still in the window and is covered
    for _ in range(8):
        est.add(0.05)
    assert est.estimate() == pytest.approx(0.05)
    assert est.steps(DT) == 1
    assert est.summary()["max"] == pytest.approx(0.05)


def test_estimator_percentile_ignores_rare_jitter_and_validates():
    est = LatencyEstimator(window=20, percentile=50, initial=0.3)
    assert est.estimate() == 0.3  # calibration value before any measurement
    for s in [0.1] * 19 + [0.9]:
        est.add(s)
    assert est.estimate() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="finite"):
        est.add(float("nan"))
    with pytest.raises(ValueError, match="window"):
        LatencyEstimator(window=0)


@pytest.mark.parametrize("latencies", [[0.0], [0.17], [0.25, 0.05, 0.42], [0.65]])
def test_async_never_emits_past_actions_and_drops_stale(latencies):
    sched = ChunkScheduler(SchedulerConfig(mode="async", n_action_steps=8), dt=DT)
    emitted, n_inf = run(sched, latencies)
    for now, value in emitted:
        if value is not None:
            assert value >= now - 0.5 * DT - 1e-9, f"emitted action for t={value} at tick {now}"
            assert value <= now + 0.5 * DT + 1e-9
    first = next(i for i, (_, v) in enumerate(emitted) if v is not None)
    # After the first chunk lands, the old chunk covers inference: no hold, ever.
    assert all(v is not None for _, v in emitted[first:])
    assert sched.stats["emitted"] == len(emitted) - first
    if max(latencies) >= DT:
        assert sched.stats["dropped"] > 0  # actions whose time passed during inference
    # Receding horizon: one inference per (n_action_steps - latency ticks), so that the chunk
    # lands exactly when 8 actions of the previous one have been used, not one per tick.
    d = math.ceil(max(latencies) / DT - 1e-9)
    assert n_inf <= len(emitted) / max(1, 8 - d) + 2


def test_queued_plan_is_what_remains_to_execute():
    sched = ChunkScheduler(SchedulerConfig(mode="async", n_action_steps=8), dt=DT)
    sched.add_chunk(timed_chunk(0.0), now=0.3)
    times, actions = sched.queued(0.3)
    assert times[0] == pytest.approx(0.3) and len(times) == 13
    assert np.allclose(actions[:, 0], times)


def test_async_starts_inference_early_by_the_latency_estimate():
    sched = ChunkScheduler(SchedulerConfig(mode="async", n_action_steps=8), dt=DT)
    sched.latency.add(0.3)  # 3 ticks
    sched.begin_inference(0.0)
    sched.add_chunk(timed_chunk(0.0), now=0.0)
    fired = [t for t in np.arange(0, 8) * DT if sched.should_infer(t)]
    assert fired and fired[0] == pytest.approx(0.5)  # 8 - 3 ticks after the chunk start


def test_sync_executes_receding_horizon_and_drops_actions_eaten_by_latency():
    sched = ChunkScheduler(SchedulerConfig(mode="sync", n_action_steps=4), dt=DT)
    emitted, n_inf = run(sched, [0.2], n_ticks=40)
    values = [v for _, v in emitted if v is not None]
    for now, v in emitted:
        if v is not None:
            assert abs(v - now) <= 0.5 * DT + 1e-9
    # Each chunk: 4 actions, the first 2 were in the past when it arrived -> 2 executed.
    assert sched.stats["dropped"] == 2 * sched.stats["chunks"]
    assert len(values) == 2 * sched.stats["chunks"]


def test_sync_with_latency_longer_than_horizon_still_moves():
    sched = ChunkScheduler(SchedulerConfig(mode="sync", n_action_steps=2), dt=DT)
    emitted, _ = run(sched, [0.5], n_ticks=30)
    values = [(now, v) for now, v in emitted if v is not None]
    assert values, "scheduler re-planned forever without executing anything"
    assert all(v >= now - 0.5 * DT - 1e-9 for now, v in values)


def test_ensemble_averages_every_prediction_for_the_tick():
    sched = ChunkScheduler(SchedulerConfig(mode="ensemble", ensemble_decay=0.5), dt=DT)
    a0 = ActionChunk(np.zeros((4, 2)), start_time=0.0, dt=DT)
    a1 = ActionChunk(np.ones((4, 2)), start_time=0.1, dt=DT)
    assert sched.should_infer(0.0)
    sched.add_chunk(a0, now=0.0)
    assert np.allclose(sched.action_at(0.0), 0.0)
    sched.add_chunk(a1, now=0.1)
    w = np.exp(-0.5 * np.arange(2))
    assert np.allclose(sched.action_at(0.1), w[1] / w.sum())  # oldest weighted most (ACT)
    assert np.allclose(sched.action_at(0.4), 1.0)  # only a1 still covers t=0.4
    assert sched.action_at(0.5) is None


def test_rtc_prior_is_the_shifted_plan_with_frozen_prefix():
    sched = ChunkScheduler(SchedulerConfig(mode="async", n_action_steps=8, rtc=True), dt=DT)
    sched.latency.add(0.2)
    sched.begin_inference(0.0)
    sched.add_chunk(timed_chunk(0.0), now=0.2)
    req = sched.begin_inference(0.6)
    p = req.prior
    assert p.actions.shape == (16, 2)
    # Plan shifted by the 6 executed ticks: entry i holds the old action for t = 0.6 + i dt.
    assert np.allclose(p.actions[:10, 0], 0.6 + DT * np.arange(10))
    assert np.allclose(p.actions[10:, 0], 1.5)  # padded with the plan's last action
    assert p.n_known == 10 and p.delay_steps == 2
    assert np.all(p.weights[:2] == 1.0) and np.all(p.weights[10:] == 0.0)
    assert np.all(np.diff(p.weights[2:11]) < 0)


def test_rtc_weights_shape():
    w = rtc_weights(16, 3, 10)
    assert w[:3].tolist() == [1, 1, 1] and w[10:].sum() == 0 and 0 < w[3] < 1


def test_bad_chunks_are_rejected_with_reason():
    sched = ChunkScheduler(SchedulerConfig(), dt=DT)
    with pytest.raises(ValueError, match="NaN"):
        sched.add_chunk(ActionChunk(np.full((4, 2), np.nan), 0.0, DT), now=0.0)
    with pytest.raises(ValueError, match="control period"):
        sched.add_chunk(ActionChunk(np.zeros((4, 2)), 0.0, 0.05), now=0.0)
    with pytest.raises(ValueError, match="mode"):
        ChunkScheduler(SchedulerConfig(mode="fast"), dt=DT)
