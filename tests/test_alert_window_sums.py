"""Window counts by bisection and running sums (alerts/stats.py ``CheckStats.window``) equal a walk over
the runs and buckets one by one (``CheckStats._scan``, what ``window`` did before), on random histories:
runs in order and out of order, failures of several classes, a raw ring that overflows into buckets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=300, deadline=None)
@given(runs=runs, queries=queries, capacity=st.integers(min_value=1, max_value=40),
       bucket_seconds=st.sampled_from([60.0, 180.0]))
def test_window_by_sums_equals_the_walk(runs: list[tuple[float, ErrorClass | None]],
                                        queries: list[tuple[float, float]], capacity: int,
                                        bucket_seconds: float) -> None:
    stats = CheckStats(raw_capacity=capacity, bucket_seconds=bucket_seconds, max_buckets=20)
    at = T0
    for step, error in runs:
        at += step  # a negative step: a run reported after a later one
        stats.add(result(at, error))
        for offset, seconds in queries[:2]:
            now = at + offset
            assert stats.window(now, seconds) == stats._scan(now, seconds)
    for offset, seconds in queries:
        now = at + offset
        assert stats.window(now, seconds) == stats._scan(now, seconds)
