"""Window counts by bisection and running sums (alerts/stats.py ``CheckStats.window``) on random
histories: equal to a walk over the runs and buckets one by one (``CheckStats._scan``, the way taken
while runs are out of order), and, for runs in order, to counting the runs themselves — failures of
several classes, a raw ring that overflows into buckets (by its number of runs or by their age), a bucket
ring that drops its oldest, buckets widened by a reload; a window that ``nests`` another counts every
run of it; and a bucket ring's failures by class are its packed entries summed."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.bucket_ring import CLASS_NAMES, BucketRing, class_code
from alerts.stats import CheckStats
from integration_kit.errors import ErrorClass
from integration_kit.results import CheckResult

T0 = 1_800_000_000.0
CLASSES = [None, None, None, ErrorClass.HTTP_5XX, ErrorClass.TIMEOUT, ErrorClass.AUTH]

runs = st.lists(
    st.tuples(st.floats(min_value=-90, max_value=200, allow_nan=False), st.sampled_from(CLASSES)),
    min_size=0, max_size=120,
)
queries = st.lists(st.tuples(st.floats(min_value=-300, max_value=30_000, allow_nan=False),
                             st.sampled_from([1.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0])),
                   min_size=1, max_size=8)


def result(at: float, error: ErrorClass | None) -> CheckResult:
    return CheckResult(integration="acme", check="api", kind="http", ok=error is None, error_class=error,
                       detail="", started_at=at, duration=0.1, total_duration=0.1, status_code=200)


raw_ages = st.sampled_from([math.inf, 60.0, 300.0, 1800.0])


@settings(max_examples=300, deadline=None)
@given(runs=runs, queries=queries, capacity=st.integers(min_value=1, max_value=40), raw_seconds=raw_ages,
       bucket_seconds=st.sampled_from([60.0, 180.0]), widen_at=st.integers(min_value=0, max_value=150))
def test_window_by_sums_equals_the_walk(runs: list[tuple[float, ErrorClass | None]],
                                        queries: list[tuple[float, float]], capacity: int, raw_seconds: float,
                                        bucket_seconds: float, widen_at: int) -> None:
    stats = CheckStats(raw_capacity=capacity, raw_seconds=raw_seconds, bucket_seconds=bucket_seconds,
                       max_buckets=20)
    at = T0
    for n, (step, error) in enumerate(runs):
        if n == widen_at:
            stats.rebucket(bucket_seconds * 3)  # a reload configured a longer window (Stats.resize)
        at += step  # a negative step: a run reported after a later one
        stats.add(result(at, error))
        for offset, seconds in queries[:2]:
            now = at + offset
            assert stats.window(now, seconds) == stats._scan(now, seconds)
    for offset, seconds in queries:
        now = at + offset
        assert stats.window(now, seconds) == stats._scan(now, seconds)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(min_value=0, max_value=200, allow_nan=False), st.sampled_from(CLASSES)),
                      max_size=80),
       queries=queries, capacity=st.integers(min_value=1, max_value=30), raw_seconds=raw_ages,
       max_buckets=st.integers(1, 12))
def test_window_counts_the_runs_in_it(steps: list[tuple[float, ErrorClass | None]],
                                      queries: list[tuple[float, float]], capacity: int, raw_seconds: float,
                                      max_buckets: int) -> None:
    """Runs in order: a window inside the raw ring (the last ``capacity`` runs, of those that started
    less than ``raw_seconds`` before the newest) holds exactly the runs that started in (now - seconds,
    now]; beyond it, the runs of the kept buckets (the newest ``max_buckets`` bucket numbers, empty ones
    included) that end after now - seconds and start by now."""
    width = 60.0
    stats = CheckStats(raw_capacity=capacity, raw_seconds=raw_seconds, bucket_seconds=width, max_buckets=max_buckets)
    runs, at = [], T0
    for step, error in steps:
        at += step
        stats.add(result(at, error))
        runs.append((at, error))
    newest = runs[-1][0] - runs[-1][0] % width if runs else 0.0
    starts = [newest - k * width for k in range(max_buckets)]
    evicted = [started for n, (started, _) in enumerate(runs)
               if n < len(runs) - capacity or started <= at - raw_seconds]
    evicted_until = max(evicted, default=float("-inf"))
    for offset, seconds in queries:
        now = at + offset
        cutoff = now - seconds
        if evicted_until <= cutoff:
            inside = [error for started, error in runs if cutoff < started <= now]
        else:
            kept = {start for start in starts if start + width > cutoff and start <= now}
            inside = [error for started, error in runs if started - started % width in kept]
        failed = [str(error) for error in inside if error is not None]
        counts = stats.window(now, seconds)
        assert (counts.total, counts.errors) == (len(inside), len(failed))
        assert counts.classes == {name: failed.count(name) for name in set(failed)}


def test_a_run_that_arrives_after_a_later_one_counts_in_windows_but_not_in_the_streak() -> None:
    # A replica's flush sent again after a Redis outage delivers a run after later ones: a success from
    # before an outage must not end the streak of failures that followed it (nor a stale failure extend
    # a streak a later success ended).
    stats = CheckStats()
    for at in (10.0, 20.0, 30.0):
        stats.add(result(T0 + at, ErrorClass.HTTP_5XX))
    stats.add(result(T0 + 5.0, None))  # arrives last, started first
    assert stats.consecutive_failures == 3
    assert stats.last_result is not None and stats.last_result.started_at == T0 + 30.0
    assert stats.window(T0 + 40.0, 60.0).total == 4  # the windows count it

    stats.add(result(T0 + 40.0, None))
    stats.add(result(T0 + 35.0, ErrorClass.TIMEOUT))  # a stale failure after a newer success
    assert stats.consecutive_failures == 0
    assert stats.last_result is not None and stats.last_result.ok


def test_bucket_sums_wrap_around_without_a_wrong_count() -> None:
    # The running sums are 16 bits while the ring holds fewer than 2**16 runs: a check that has seen more
    # wraps, and a window, a difference of two sums, still counts right.
    ring = BucketRing(60.0, 10)
    ring._dropped = (2**16 - 3, 2**16 - 2)  # as if 65,533 runs had left the ring
    code = class_code(str(ErrorClass.TIMEOUT))
    for k in range(12):
        ring.add(T0 + k * 30.0, code if k % 3 == 0 else 0)
    assert ring.window(T0 + 12 * 30.0, 6 * 60.0)[2:] == (12, 4)
    lo, hi, runs, failed = ring.window(T0 + 11 * 30.0 + 1, 60.0)  # the last two buckets (the start falls in one)
    assert hi - lo == 1 and (runs, failed) == (4, 1)


def test_a_ring_of_more_than_65535_runs_counts_them_all() -> None:
    # More runs than 16-bit sums can tell apart in one ring (a day of runs every second): the sums widen.
    ring = BucketRing(180.0, 480)
    code = class_code(str(ErrorClass.HTTP_5XX))
    at = T0
    for k in range(70_000):
        at = T0 + k * 1.0
        ring.add(at, code if k % 1000 == 0 else 0)
    assert ring.window(at, 86400.0)[2:] == (70_000, 70)
    lo, hi, runs, failed = ring.window(at, 3600.0)  # the last 20 buckets and the one the window's start falls in
    assert (runs, failed) == (int(at) % 180 + 1 + 20 * 180, 3)  # from run 66,240: 67,000 to 69,000 failed
    classes: Counter[str] = Counter()
    ring.classes(lo, hi, classes)
    assert classes == {"http_5xx": 3}


@settings(max_examples=300, deadline=None)
@given(runs=runs, far=st.dictionaries(st.integers(min_value=0, max_value=119),
                                      st.sampled_from([600.0, 2_000.0, 5_000.0]), max_size=3),
       capacity=st.integers(min_value=1, max_value=40), raw_seconds=raw_ages, widen_at=st.integers(0, 150),
       gap_at=st.integers(0, 150),
       pairs=st.lists(st.tuples(st.floats(min_value=-6_000, max_value=30_000, allow_nan=False),
                                st.sampled_from([1.0, 60.0, 300.0, 1800.0, 3600.0, 7200.0]),
                                st.sampled_from([60.0, 300.0, 1800.0, 3600.0, 7200.0, 86400.0])),
                      min_size=1, max_size=6))
def test_a_window_that_nests_another_counts_every_run_of_it(
    runs: list[tuple[float, ErrorClass | None]], far: dict[int, float], capacity: int, raw_seconds: float,
    widen_at: int, gap_at: int, pairs: list[tuple[float, float, float]],
) -> None:
    """``nests(now, inner, outer)``: the outer window counts every run the inner one counts (so at least as
    many runs, and failures of each class), for runs out of order, some reported older than the buckets
    reach (in the raw ring only), a pause longer than the buckets reach (they start over; the raw ring
    keeps its last runs if young enough), a raw ring overflowing into buckets, buckets widened."""
    stats = CheckStats(raw_capacity=capacity, raw_seconds=raw_seconds, bucket_seconds=60.0, max_buckets=20)
    at = T0
    for n, (step, error) in enumerate(runs):
        if n == widen_at:
            stats.rebucket(180.0)
        at += step + (3_000.0 if n == gap_at else 0.0)
        stats.add(result(at - far.get(n, 0.0), error))
        for offset, inner, outer in pairs:
            now = at + offset
            if stats.nests(now, inner, outer):
                small, big = stats.window(now, inner), stats.window(now, outer)
                assert small.total <= big.total
                assert small.errors <= big.errors
                assert all(count <= big.classes.get(name, 0) for name, count in small.classes.items())


def test_a_raw_window_does_not_nest_in_a_longer_bucket_window() -> None:
    """Why ``nests`` asks that both windows be counted the same way: after a pause longer than the buckets
    reach, they start over, while the raw ring keeps its last runs (here its three): a window of the raw
    ring holds them, and a slightly longer one, counted from buckets, only the run after the pause."""
    start = T0 - T0 % 60
    stats = CheckStats(raw_capacity=3, bucket_seconds=60.0, max_buckets=3)
    for at in (start, start + 10, start + 20, start + 1000):
        stats.add(result(at, None))
    now = start + 1000
    small, big = stats.window(now, 995.0), stats.window(now, 1005.0)
    assert (small.total, big.total) == (3, 1)
    assert not stats.nests(now, 995.0, 1005.0)


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(st.tuples(st.floats(min_value=-400, max_value=200, allow_nan=False),
                               st.sampled_from(CLASSES[2:]), st.sampled_from([1, 1, 1, 3, 300])),
                     min_size=1, max_size=60),
       widen_at=st.integers(0, 80),
       windows=st.lists(st.tuples(st.floats(min_value=-600, max_value=2_000, allow_nan=False),
                                  st.sampled_from([0.0, 60.0, 300.0, 1800.0, 86400.0])), min_size=1, max_size=5))
def test_failures_by_class_of_buckets_are_their_entries_summed(
    runs: list[tuple[float, ErrorClass | None, int]], widen_at: int, windows: list[tuple[float, float]],
) -> None:
    """``BucketRing.classes`` (one class and counts below 256 summed from the entries' bytes, others one by
    one) equals the sum of the packed entries of the buckets asked, entry by entry: runs out of order,
    older than the ring reaches, bursts of hundreds of failures in one bucket, one class or several, the
    ring widened."""
    ring, at = BucketRing(60.0, 20), T0
    for n, (step, error, times) in enumerate(runs):
        if n == widen_at:
            ring = ring.widened(180.0)
        at += step
        for _ in range(times):
            ring.add(at, 0 if error is None else class_code(str(error)))
        for offset, seconds in windows:
            lo, hi, _, failed = ring.window(at + offset, seconds)
            got: Counter[str] = Counter()
            ring.classes(lo, hi, got)
            expected: Counter[str] = Counter()
            for entry in ring._failures or ():
                if lo <= entry >> 32 <= hi:
                    expected[CLASS_NAMES[entry >> 24 & 0xFF]] += entry & 0xFFFFFF
            assert got == expected
            assert list(got) == list(expected)  # (in the same order)
            assert sum(got.values()) == failed
