"""Burn rate and projected exhaustion from a short usage history."""

from __future__ import annotations

import pytest

from monitor.quota.burn import BurnTracker


def feed(tracker: BurnTracker, samples: list[tuple[float, float]], *, fixed: bool = True) -> None:
    for at, used in samples:
        tracker.add(at, used, fixed_window=fixed)


def test_steady_climb_projects_time_to_the_limit():
    tracker = BurnTracker()
    feed(tracker, [(0, 100), (15, 130), (30, 160), (45, 190)])  # 2 units per second
    assert tracker.rate() == pytest.approx(2.0)
    assert tracker.exhaustion(used=190, limit=1000, reset_seconds=None, fixed_window=True) == pytest.approx(405)


def test_reset_before_exhaustion_means_no_projection():
    tracker = BurnTracker()
    feed(tracker, [(0, 100), (10, 120)])
    assert tracker.exhaustion(used=120, limit=1000, reset_seconds=60, fixed_window=True) is None
    assert tracker.exhaustion(used=120, limit=1000, reset_seconds=600, fixed_window=True) == pytest.approx(440)
    # A sliding window has no reset that empties it: the projection stands.
    assert tracker.exhaustion(used=120, limit=1000, reset_seconds=60, fixed_window=False) == pytest.approx(440)


@pytest.mark.parametrize("samples", [[(0, 50), (10, 50), (20, 50)], [(0, 50), (10, 40), (20, 30)]])
def test_flat_or_falling_usage_has_no_projection(samples):
    tracker = BurnTracker()
    feed(tracker, samples, fixed=False)
    assert tracker.exhaustion(used=samples[-1][1], limit=100, reset_seconds=None, fixed_window=False) is None


def test_one_sample_is_not_a_rate():
    tracker = BurnTracker()
    feed(tracker, [(0, 10)])
    assert tracker.rate() is None
    assert tracker.exhaustion(used=10, limit=100, reset_seconds=None, fixed_window=True) is None


def test_at_or_over_the_limit_is_exhausted_now():
    tracker = BurnTracker()
    feed(tracker, [(0, 120)])
    assert tracker.exhaustion(used=120, limit=100, reset_seconds=30, fixed_window=True) == 0.0


def test_a_new_fixed_window_starts_the_history_again():
    tracker = BurnTracker()
    feed(tracker, [(0, 800), (10, 900), (20, 5), (30, 15)])  # rolled over at t=20: 1 unit/s since
    assert tracker.rate() == pytest.approx(1.0)


def test_sliding_window_decay_stays_in_the_net_rate():
    tracker = BurnTracker()
    feed(tracker, [(0, 100), (10, 90), (20, 120), (30, 130)], fixed=False)
    assert tracker.rate() == pytest.approx(1.2)


def test_old_samples_leave_the_horizon():
    tracker = BurnTracker(horizon=60)
    feed(tracker, [(0, 0), (10, 100), (100, 110), (110, 120)])  # the fast start is forgotten
    assert tracker.rate() == pytest.approx(1.0)


def test_unknown_limit_or_usage_has_no_projection():
    tracker = BurnTracker()
    feed(tracker, [(0, 1), (10, 2)])
    assert tracker.exhaustion(used=2, limit=None, reset_seconds=None, fixed_window=True) is None
    assert tracker.exhaustion(used=None, limit=10, reset_seconds=None, fixed_window=True) is None
