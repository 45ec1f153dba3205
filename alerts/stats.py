"""Window statistics fed from CheckResults: what the (pure) rules read.

Memory is bounded per check: a ring of the last ``raw_capacity`` runs (exact windows, latency quantiles,
the last failing request) plus a ring of fixed-width time buckets (run and error counts per class) for
windows longer than the raw ring covers — the day-long burn-rate windows. ``on_result`` is O(1). The
buckets are sized for the longest configured window; a reload that configures a longer one widens them,
merging what they hold (``Stats.resize``), so that window is not silently judged on a truncated history.

A window answers with what is known: after a restart the rings are empty, and rules see too few samples
and leave their alerts as they are (rather than resolving them for lack of data).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from integration_kit.results import CheckResult

RAW_CAPACITY = 720  # 6 h of a 30 s probe, 2 h of a 10 s one
MAX_BUCKETS = 480


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowCounts:
    total: int
    errors: int
    classes: Mapping[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.errors / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaReading:
    """One quota as the alert rules see it (what the quota reader's snapshot provides)."""

    integration: str
    quota: str
    source: str  # redis / headers
    used: float
    limit: float | None  # None only when nothing is used and no limit is known (no limiter key yet): ratio 0
    reset_seconds: float | None = None
    exhaustion_seconds: float | None = None  # projected time to 100 %; None when not rising
    observed_at: float = 0.0

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit else 0.0


class _Bucket:
    __slots__ = ("classes", "errors", "start", "total")

    def __init__(self, start: float) -> None:
        self.start = start
        self.total = 0
        self.errors = 0
        self.classes: Counter[str] | None = None


class CheckStats:
    """Statistics of one check. Timestamps are the runs' ``started_at`` (epoch seconds)."""

    __slots__ = (
        "_bucket_seconds",
        "_buckets",
        "_evicted_until",
        "_raw",
        "consecutive_failures",
        "first_at",
        "first_failure_at",
        "last_failure",
        "last_result",
        "succeeded_since_start",
        "tls_expiry",
    )

    def __init__(self, *, raw_capacity: int = RAW_CAPACITY, bucket_seconds: float = 60.0,
                 max_buckets: int = MAX_BUCKETS) -> None:
        # (started_at, ok, error class or None, latency or None when no response arrived)
        self._raw: deque[tuple[float, bool, str | None, float | None]] = deque(maxlen=raw_capacity)
        self._evicted_until = -math.inf  # newest timestamp pushed out of the raw ring
        self._bucket_seconds = bucket_seconds
        self._buckets: deque[_Bucket] = deque(maxlen=max_buckets)
        self.first_at: float | None = None  # the oldest run seen: how far back the statistics reach
        self.consecutive_failures = 0
        # False while every run since the monitor started failed: the streak may be longer than we saw.
        self.succeeded_since_start = False
        self.first_failure_at: float | None = None  # first failing run of the current failure streak
        self.last_result: CheckResult | None = None
        self.last_failure: CheckResult | None = None
        self.tls_expiry: float | None = None

    def add(self, result: CheckResult) -> None:
        at = result.started_at
        error = None if result.ok or result.error_class is None else str(result.error_class)
        if not result.ok and error is None:
            error = "unknown"
        latency = result.duration if result.status_code is not None else None
        raw = self._raw
        if raw.maxlen is not None and len(raw) == raw.maxlen:
            self._evicted_until = max(self._evicted_until, raw[0][0])
        raw.append((at, result.ok, error, latency))

        start = at - at % self._bucket_seconds
        if not self._buckets or self._buckets[-1].start < start:
            self._buckets.append(_Bucket(start))
        bucket = self._buckets[-1] if self._buckets[-1].start <= start else self._find_bucket(start)
        if bucket is not None:
            bucket.total += 1
            if error is not None:
                bucket.errors += 1
                if bucket.classes is None:
                    bucket.classes = Counter()
                bucket.classes[error] += 1

        self.last_result = result
        if self.first_at is None or at < self.first_at:
            self.first_at = at
        if result.ok:
            self.succeeded_since_start = True
            self.consecutive_failures = 0
            self.first_failure_at = None
        else:
            self.consecutive_failures += 1
            self.last_failure = result
            if self.first_failure_at is None:
                self.first_failure_at = at
        if result.tls_expiry is not None:
            self.tls_expiry = result.tls_expiry

    def rebucket(self, bucket_seconds: float) -> None:
        """Wider buckets (a longer window was configured): the counts so far are merged into buckets of the
        new width, each old bucket into the new one holding its start, so history is kept, now reaching
        ``MAX_BUCKETS`` wider buckets back."""
        merged: deque[_Bucket] = deque(maxlen=self._buckets.maxlen)
        for old in self._buckets:  # in order of start
            start = old.start - old.start % bucket_seconds
            if not merged or merged[-1].start < start:
                merged.append(_Bucket(start))
            bucket = merged[-1]
            bucket.total += old.total
            bucket.errors += old.errors
            if old.classes:
                if bucket.classes is None:
                    bucket.classes = Counter()
                bucket.classes.update(old.classes)
        self._buckets = merged
        self._bucket_seconds = bucket_seconds

    def _find_bucket(self, start: float) -> _Bucket | None:
        # A run reported out of order (a slow run finishing after a later one): rare, search backwards.
        for bucket in reversed(self._buckets):
            if bucket.start == start:
                return bucket
            if bucket.start < start:
                break
        return None

    def covers(self, now: float, seconds: float) -> bool:
        """Whether runs were seen for at least ``seconds`` before ``now`` (a window can be judged)."""
        return self.first_at is not None and now - self.first_at >= seconds

    def window(self, now: float, seconds: float) -> WindowCounts:
        """Runs that started in (now - seconds, now]. Exact while the raw ring reaches back that far,
        otherwise from buckets (which may include up to one bucket width more)."""
        cutoff = now - seconds
        classes: Counter[str] = Counter()
        total = errors = 0
        if self._evicted_until <= cutoff:
            for at, _ok, error, _latency in self._iter_raw_since(cutoff):
                if at > now:
                    continue
                total += 1
                if error is not None:
                    errors += 1
                    classes[error] += 1
        else:
            for bucket in reversed(self._buckets):
                if bucket.start + self._bucket_seconds <= cutoff:
                    break
                if bucket.start > now:
                    continue
                total += bucket.total
                errors += bucket.errors
                if bucket.classes:
                    classes.update(bucket.classes)
        return WindowCounts(total=total, errors=errors, classes=dict(classes))

    def _iter_raw_since(self, cutoff: float) -> Iterator[tuple[float, bool, str | None, float | None]]:
        for sample in reversed(self._raw):
            if sample[0] <= cutoff:
                return
            yield sample

    def latency_quantile(self, now: float, seconds: float, q: float) -> tuple[float | None, int]:
        """(quantile of latencies of runs that got a response in the window, how many there were).
        Nearest-rank method; only the raw ring is used (it holds the individual latencies)."""
        values = sorted(
            latency for at, _ok, _e, latency in self._iter_raw_since(now - seconds)
            if latency is not None and at <= now
        )
        if not values:
            return None, 0
        rank = max(1, math.ceil(q * len(values)))
        return values[rank - 1], len(values)


class Stats:
    """All window statistics of the monitor, keyed by (integration, check)."""

    def __init__(self, *, max_window: float = 86400.0, raw_capacity: int = RAW_CAPACITY) -> None:
        self.bucket_seconds = _bucket_seconds(max_window)
        self.raw_capacity = raw_capacity
        self.checks: dict[tuple[str, str], CheckStats] = {}

    def resize(self, max_window: float) -> bool:
        """Make the buckets reach back ``max_window`` (a reload configured a longer window): widen them,
        merging the counts kept so far (``CheckStats.rebucket``). A shorter window keeps the width: the
        finer counts of the past cannot be recovered, and wider ones still answer. True if widened."""
        width = _bucket_seconds(max_window)
        if width <= self.bucket_seconds:
            return False
        self.bucket_seconds = width
        for stats in self.checks.values():
            stats.rebucket(width)
        return True

    def check(self, integration: str, check: str) -> CheckStats | None:
        return self.checks.get((integration, check))

    def add(self, result: CheckResult) -> None:
        """Record one run. (Quotas announced in its headers are the quota service's business.)"""
        key = (result.integration, result.check)
        stats = self.checks.get(key)
        if stats is None:
            stats = self.checks[key] = CheckStats(raw_capacity=self.raw_capacity,
                                                 bucket_seconds=self.bucket_seconds)
        stats.add(result)

    def retain(self, checks: set[tuple[str, str]]) -> None:
        """Drop statistics of checks no longer configured (config reload)."""
        for key in [k for k in self.checks if k not in checks]:
            del self.checks[key]


def _bucket_seconds(max_window: float) -> float:
    """The bucket width whose ``MAX_BUCKETS`` buckets reach back ``max_window`` (at least a minute)."""
    return max(60.0, math.ceil(max_window / MAX_BUCKETS))
