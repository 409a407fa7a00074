"""Fixed-grid pacing on a fake clock: late ticks keep their due times, long stalls are reported."""

from __future__ import annotations

import pytest

from robot_policy.hardware.pacing import TickPacer


class FakeTime:
    """A clock that only moves when the loop sleeps or 'works'."""

    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:  # stands in for threading.Event.wait
        self.t += seconds
        return False


def make(period=0.05, max_catch_up=0.5):
    ft = FakeTime()
    stalls = []
    pacer = TickPacer(period, max_catch_up, clock=ft, on_stall=stalls.append)
    pacer.stop = ft  # sleeping advances the fake clock
    return ft, pacer, stalls


def test_on_time_ticks_sit_on_the_grid():
    ft, pacer, _ = make()
    dues = []
    for _ in range(5):
        tick = pacer.wait()
        dues.append(tick.due)
        ft.t += 0.01  # 10 ms of work per tick
    assert dues == pytest.approx([100.0 + 0.05 * k for k in range(5)])
    assert pacer.stats.late_ticks == 0 and pacer.stats.skipped_ticks == 0


def test_a_late_tick_is_caught_up_without_a_hole_in_the_grid():
    ft, pacer, stalls = make()
    dues = []
    for k in range(6):
        tick = pacer.wait()
        dues.append(tick.due)
        ft.t += 0.17 if k == 2 else 0.01  # one tick overruns by more than three periods
    # Every due time exists: the stream a loop publishes with these stamps has no gap.
    assert dues == pytest.approx([100.0 + 0.05 * k for k in range(6)])
    assert pacer.stats.late_ticks >= 2 and not stalls
    assert pacer.stats.max_lateness == pytest.approx(0.12)  # tick 3 due 100.15, started 100.27


def test_a_stall_beyond_max_catch_up_is_reported_and_skipped():
    ft, pacer, stalls = make(max_catch_up=0.5)
    pacer.wait()
    ft.t += 1.0  # the process froze for a second
    tick = pacer.wait()
    # Ticks due at 100.05 ... 100.95 never ran; the loop resumes on the grid at 101.0.
    assert len(stalls) == 1 and stalls[0].skipped == 19
    assert stalls[0].seconds == pytest.approx(0.95)
    assert tick.due == pytest.approx(101.0) and pacer.stats.skipped_ticks == 19


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="period must be > 0"):
        TickPacer(0.0)
    with pytest.raises(ValueError, match="at least one period"):
        TickPacer(0.05, max_catch_up=0.01)
