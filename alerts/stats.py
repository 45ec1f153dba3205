"""Window statistics fed from CheckResults: what the (pure) rules read.

Memory is bounded per check: a ring of the last ``raw_capacity`` runs (exact windows, latency quantiles,
the last failing request) plus a ring of fixed-width time buckets (run and error counts per class) for
windows longer than the raw ring covers — the day-long burn-rate windows. ``on_result`` is O(1). The
buckets are sized for the longest configured window; a reload that configures a longer one widens them,
merging what they hold (``Stats.resize``), so that window is not silently judged on a truncated history.

A window is counted without walking it (an evaluation asks every check for six windows, each up to 720
runs or 480 buckets deep: that walk was 90 % of an evaluation): runs are found by bisecting their start
times, errors by bisecting the start times of the failed runs, and buckets carry running sums. Only a
window with errors in it is walked, for its error classes. A run reported out of order (a slow run
finishing after a later one) makes the ring unsorted; while it is in the ring, windows are walked
(``_scan``), which gives the same answer.

A window answers with what is known: after a restart the rings are empty, and rules see too few samples
and leave their alerts as they are (rather than resolving them for lack of data).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
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


# Error classes as small numbers in the rings (0: the run succeeded). Error classes are a closed set
# (integration_kit.errors.ErrorClass, plus "unknown"), so the table stays small.
_CLASS_NAMES: list[str] = [""]
_CLASS_CODES: dict[str, int] = {}
_NO_LATENCY = math.nan  # a run that got no response


def _class_code(error: str) -> int:
    code = _CLASS_CODES.get(error)
    if code is None:
        code = _CLASS_CODES[error] = len(_CLASS_NAMES)
        _CLASS_NAMES.append(error)
    return code


class CheckStats:
    """Statistics of one check. Timestamps are the runs' ``started_at`` (epoch seconds).

    Both rings are kept in flat arrays (18 bytes a run, 32 a bucket, instead of a tuple and three
    Python objects each): 10,000 checks with a full day of history in a few hundred MB rather than
    gigabytes. The oldest entry leaves by ``del a[0]`` (a memmove of a few kB).
    """

    __slots__ = (
        "_added",
        "_at",
        "_bucket_classes",
        "_bucket_end",
        "_bucket_errors_through",
        "_bucket_seconds",
        "_bucket_start",
        "_bucket_total_through",
        "_dropped",
        "_error",
        "_error_at",
        "_evicted_until",
        "_latency",
        "_max_buckets",
        "_raw_capacity",
        "_unsorted_at",
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
        # The raw ring, one entry per run: started_at, error class code (0: ok), latency (NaN: no response).
        self._raw_capacity = raw_capacity
        self._at = array("d")
        self._error = array("H")
        self._latency = array("d")
        self._error_at = array("d")  # started_at of the failed runs in the raw ring, in ring order
        self._added = 0  # runs ever added (the ring holds the last len(_at) of them)
        self._unsorted_at = -1  # number of the latest run that started before the run added just before it
        self._evicted_until = -math.inf  # newest timestamp pushed out of the raw ring
        # The bucket ring, one entry per bucket: its start and end (start + width, as a window's cut-off
        # compares it) and running sums of runs and failed runs over every bucket up to and including it
        # (since the check was first seen); the error classes of the buckets that have failures, by start.
        self._bucket_seconds = bucket_seconds
        self._max_buckets = max_buckets
        self._bucket_start = array("d")
        self._bucket_end = array("d")
        self._bucket_total_through = array("q")
        self._bucket_errors_through = array("q")
        self._bucket_classes: dict[float, Counter[str]] = {}
        self._dropped = (0, 0)  # the running sums through the newest bucket the ring dropped
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
        self._add_raw(at, error, result.duration if result.status_code is not None else None)
        self._add_to_bucket(at, error)

        if self.first_at is None or at < self.first_at:
            self.first_at = at
        if self.last_result is not None and at < self.last_result.started_at:
            # A run that arrives after a later one (a replica's flush sent again after a Redis outage) counts
            # in the windows, but is no news about the check's state: it must not reset or extend the streak.
            return
        self.last_result = result
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

    def _add_raw(self, at: float, error: str | None, latency: float | None) -> None:
        ats = self._at
        if len(ats) == self._raw_capacity:
            self._evicted_until = max(self._evicted_until, ats[0])
            if self._error[0]:
                del self._error_at[0]
            del ats[0], self._error[0], self._latency[0]
        if ats and at < ats[-1]:
            self._unsorted_at = self._added
        ats.append(at)
        self._error.append(0 if error is None else _class_code(error))
        self._latency.append(_NO_LATENCY if latency is None else latency)
        if error is not None:
            self._error_at.append(at)
        self._added += 1

    def _add_to_bucket(self, at: float, error: str | None) -> None:
        starts = self._bucket_start
        start = at - at % self._bucket_seconds
        if not starts or starts[-1] < start:
            through, errors_through = self._bucket_total_through, self._bucket_errors_through
            if len(starts) == self._max_buckets:
                self._dropped = through[0], errors_through[0]
                self._bucket_classes.pop(starts[0], None)
                del starts[0], self._bucket_end[0], through[0], errors_through[0]
            through.append(through[-1] if through else self._dropped[0])
            errors_through.append(errors_through[-1] if errors_through else self._dropped[1])
            starts.append(start)
            self._bucket_end.append(start + self._bucket_seconds)
            index = len(starts) - 1
        else:
            # A run reported out of order (a slow run finishing after a later one): its bucket, if kept.
            index = bisect_left(starts, start)
            if index == len(starts) or starts[index] != start:
                return
        for later in range(index, len(starts)):  # normally only the last
            self._bucket_total_through[later] += 1
            if error is not None:
                self._bucket_errors_through[later] += 1
        if error is not None:
            self._bucket_classes.setdefault(start, Counter())[error] += 1

    def rebucket(self, bucket_seconds: float) -> None:
        """Wider buckets (a longer window was configured): the counts so far are merged into buckets of the
        new width, each old bucket into the new one holding its start, so history is kept, now reaching
        ``MAX_BUCKETS`` wider buckets back. (The running sums before the oldest bucket stay as they are.)"""
        starts = self._bucket_start
        merged_start, merged_end, total_through, errors_through = array("d"), array("d"), array("q"), array("q")
        classes: dict[float, Counter[str]] = {}
        for i in range(len(starts)):  # in order of start
            start = starts[i] - starts[i] % bucket_seconds
            if not merged_start or merged_start[-1] < start:
                merged_start.append(start)
                merged_end.append(start + bucket_seconds)
                total_through.append(0)
                errors_through.append(0)
            # Running sums through the last old bucket merged in are the new bucket's.
            total_through[-1] = self._bucket_total_through[i]
            errors_through[-1] = self._bucket_errors_through[i]
            if (counted := self._bucket_classes.get(starts[i])) is not None:
                classes.setdefault(start, Counter()).update(counted)
        self._bucket_start, self._bucket_end = merged_start, merged_end
        self._bucket_total_through, self._bucket_errors_through = total_through, errors_through
        self._bucket_classes = classes
        self._bucket_seconds = bucket_seconds

    def covers(self, now: float, seconds: float) -> bool:
        """Whether runs were seen for at least ``seconds`` before ``now`` (a window can be judged)."""
        return self.first_at is not None and now - self.first_at >= seconds

    def window(self, now: float, seconds: float) -> WindowCounts:
        """Runs that started in (now - seconds, now]. Exact while the raw ring reaches back that far,
        otherwise from buckets (which may include up to one bucket width more)."""
        cutoff = now - seconds
        if self._unsorted_at >= self._added - len(self._at):
            return self._scan(now, seconds)
        if self._evicted_until <= cutoff:
            ats, error_at = self._at, self._error_at
            lo = bisect_right(ats, cutoff)
            hi = len(ats) if not ats or ats[-1] <= now else bisect_right(ats, now)
            errors = max(0, bisect_right(error_at, now) - bisect_right(error_at, cutoff)) if error_at else 0
            if not errors or hi <= lo:
                return WindowCounts(total=max(0, hi - lo), errors=0, classes={})
            codes, classes = self._error, Counter[str]()
            for i in range(hi - 1, lo - 1, -1):
                if codes[i]:
                    classes[_CLASS_NAMES[codes[i]]] += 1
            return WindowCounts(total=hi - lo, errors=errors, classes=dict(classes))
        lo = bisect_right(self._bucket_end, cutoff)
        hi = bisect_right(self._bucket_start, now)
        if hi <= lo:
            return WindowCounts(total=0, errors=0, classes={})
        total, errors = self._bucket_sums(lo, hi)
        if not errors:
            return WindowCounts(total=total, errors=0, classes={})
        classes = Counter[str]()
        for i in range(hi - 1, lo - 1, -1):
            if (counted := self._bucket_classes.get(self._bucket_start[i])) is not None:
                classes.update(counted)
        return WindowCounts(total=total, errors=errors, classes=dict(classes))

    def _bucket_sums(self, lo: int, hi: int) -> tuple[int, int]:
        """Runs and failed runs in buckets lo … hi-1."""
        total_before, errors_before = (
            (self._bucket_total_through[lo - 1], self._bucket_errors_through[lo - 1]) if lo > 0 else self._dropped
        )
        return self._bucket_total_through[hi - 1] - total_before, self._bucket_errors_through[hi - 1] - errors_before

    def _scan(self, now: float, seconds: float) -> WindowCounts:
        """``window`` by walking the runs or buckets one by one (the ring is out of order)."""
        cutoff = now - seconds
        classes: Counter[str] = Counter()
        total = errors = 0
        if self._evicted_until <= cutoff:
            for i in self._raw_since(cutoff):
                if self._at[i] > now:
                    continue
                total += 1
                if code := self._error[i]:
                    errors += 1
                    classes[_CLASS_NAMES[code]] += 1
        else:
            starts = self._bucket_start
            for i in range(len(starts) - 1, -1, -1):
                if starts[i] + self._bucket_seconds <= cutoff:
                    break
                if starts[i] > now:
                    continue
                runs, failed = self._bucket_sums(i, i + 1)
                total += runs
                errors += failed
                if (counted := self._bucket_classes.get(starts[i])) is not None:
                    classes.update(counted)
        return WindowCounts(total=total, errors=errors, classes=dict(classes))

    def _raw_since(self, cutoff: float) -> Iterator[int]:
        """Indices of the raw ring from the newest back to the first run that started at or before ``cutoff``."""
        ats = self._at
        for i in range(len(ats) - 1, -1, -1):
            if ats[i] <= cutoff:
                return
            yield i

    def latency_quantile(self, now: float, seconds: float, q: float) -> tuple[float | None, int]:
        """(quantile of latencies of runs that got a response in the window, how many there were).
        Nearest-rank method; only the raw ring is used (it holds the individual latencies)."""
        ats, latencies = self._at, self._latency
        values = sorted(
            latency for i in self._raw_since(now - seconds)
            if (latency := latencies[i]) == latency and ats[i] <= now  # NaN: no response
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
        # (integration, check) → runs that started before this are ignored (``judged_until`` of forget_check,
        # judged_elsewhere)
        self._not_before: dict[tuple[str, str], float] = {}

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
        if self._not_before and result.started_at < self._not_before.get(key, -math.inf):
            return  # older than a verdict handed here (forget_check): it would judge the incident anew
        stats = self.checks.get(key)
        if stats is None:
            stats = self.checks[key] = CheckStats(raw_capacity=self.raw_capacity,
                                                 bucket_seconds=self.bucket_seconds)
        stats.add(result)

    def retain(self, checks: set[tuple[str, str]]) -> None:
        """Drop statistics of checks no longer configured (config reload)."""
        for key in [k for k in self.checks if k not in checks]:
            del self.checks[key]
        for key in [k for k in self._not_before if k not in checks]:
            del self._not_before[key]

    def forget_check(self, integration: str, check: str, *, judged_until: float | None = None) -> None:
        """Drop a check's statistics: what is here is stale (another replica judged it meanwhile).

        ``judged_until``: that replica's verdict took every run that started before this into account,
        so such runs are ignored from now on. One that arrives late (sent before a Redis outage, its
        flush confirmed only after the handover) would otherwise be the first and only run here: a
        success from before the incident began would resolve it while the check is still failing, and
        the next failures would post it again as a new incident."""
        key = (integration, check)
        self.checks.pop(key, None)
        if judged_until is None:
            self._not_before.pop(key, None)
        else:
            self._not_before[key] = judged_until

    def judged_elsewhere(self, integration: str, check: str, until: float) -> None:
        """Another replica's verdict on this check took every run that started before ``until`` into
        account (the previous owner of an integration taken over): such runs are ignored from now on, as
        for ``forget_check``. What was counted here since already stays, unless some of it is older: the
        windows keep counts, not runs, so a stale run cannot be taken out on its own."""
        key = (integration, check)
        stats = self.checks.get(key)
        if stats is not None and stats.first_at is not None and stats.first_at < until:
            del self.checks[key]
        self._not_before[key] = max(until, self._not_before.get(key, -math.inf))

    def forget(self, integrations: Iterable[str]) -> None:
        """Drop statistics of these integrations' checks (they became another replica's and back: what is
        here is stale)."""
        gone = set(integrations)
        for key in [k for k in self.checks if k[0] in gone]:
            del self.checks[key]
        for key in [k for k in self._not_before if k[0] in gone]:
            del self._not_before[key]


def _bucket_seconds(max_window: float) -> float:
    """The bucket width whose ``MAX_BUCKETS`` buckets reach back ``max_window`` (at least a minute)."""
    return max(60.0, math.ceil(max_window / MAX_BUCKETS))
