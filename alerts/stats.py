"""Window statistics fed from CheckResults: what the (pure) rules read.

Memory is bounded per check: a raw ring of the runs one by one (exact windows, latency quantiles) and a
ring of fixed-width time buckets (run and error counts per class, ``alerts/bucket_ring.py``) for the
windows longer than the raw ring reaches. The raw ring keeps the runs as far back as the windows that
must be exact reach (``Stats.exact_window``: the latency window, and the error-rate windows shorter than
``EXACT_BELOW_BUCKETS`` buckets; 1 h with the default rules), at most ``raw_capacity`` of them. So with
the defaults the 5 m, 30 m and 1 h windows are exact, and the 2 h, 6 h and 1 d windows are counted from
buckets of 3 minutes, which may count up to one bucket more at their old end (≤ 2.5 % of the window).
``on_result`` is O(1). The buckets are sized for the longest configured window; a reload that configures
a longer one widens them, merging what they hold (``Stats.resize``), so that window is not silently judged
on a truncated history.

A window is counted without walking it (an evaluation asks every check for six windows, each hundreds of
runs or 480 buckets deep: that walk was 90 % of an evaluation): runs are found by bisecting their start
times, errors by bisecting the start times of the failed runs, and buckets carry running sums. Only a
window with errors in it is walked, for its error classes. A run reported out of order (a slow run
finishing after a later one) makes the raw ring unsorted; while it is in the ring, windows of the raw
ring are walked (``_scan``), which gives the same answer (the buckets' sums take such a run in as it comes).

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
from types import MappingProxyType

from alerts.bucket_ring import CLASS_NAMES, BucketRing, class_code
from integration_kit.results import CheckResult

RAW_CAPACITY = 720  # 6 h of a 30 s probe, 2 h of a 10 s one
MAX_BUCKETS = 480
# A window at least this many buckets long is counted from buckets (at most 1/40 more than the window);
# shorter ones from the runs themselves (alerts/engine.py keeps them as far back as those reach).
EXACT_BELOW_BUCKETS = 40


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
    # A header quota's labels the vendor's last response announced, this one's and its other policies',
    # whatever it said of their usage (alerts/rules/quota.py: the alert of a label not among them is over)
    announced: frozenset[str] = frozenset()

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit else 0.0


# Latencies in whole microseconds (4 bytes instead of 8; longer than 71 minutes reads as 71 minutes): a
# latency rule's verdict differs from the exact one only for a quantile within half a microsecond of its
# threshold, and the text shows milliseconds. This value: the run got no response.
_NO_LATENCY = 0xFFFFFFFF
_MAX_LATENCY_US = _NO_LATENCY - 1


# A window without failures, the usual answer, is shared by its number of runs (WindowCounts is frozen, its
# classes an immutable empty mapping): building one was half of what a healthy check's windows cost in a
# full pass. Numbers of runs below the bound are kept (a few thousand answers at most).
_NO_CLASSES: Mapping[str, int] = MappingProxyType({})
_WITHOUT_FAILURES: dict[int, WindowCounts] = {}
_SHARED_BELOW = 8192


def _without_failures(total: int) -> WindowCounts:
    counts = _WITHOUT_FAILURES.get(total)
    if counts is None:
        counts = WindowCounts(total=total, errors=0, classes=_NO_CLASSES)
        if total < _SHARED_BELOW:
            _WITHOUT_FAILURES[total] = counts
    return counts


class CheckStats:
    """Statistics of one check. Timestamps are the runs' ``started_at`` (epoch seconds).

    The raw ring is kept in flat arrays (13 bytes a run: start 8, class code 1, latency in microseconds
    4; plus 8 bytes a failed run), the buckets in a ``BucketRing``. The oldest runs leave by ``del a[:n]``
    (a memmove of a few hundred bytes).
    """

    __slots__ = (
        "_added",
        "_at",
        "_buckets",
        "_classes",
        "_error",
        "_error_at",
        "_evicted_until",
        "_latency",
        "_raw_capacity",
        "_unsorted_at",
        "consecutive_failures",
        "first_at",
        "first_failure_at",
        "last_failure",
        "last_result",
        "raw_seconds",
        "succeeded_since_start",
        "tls_expiry",
    )

    def __init__(self, *, raw_capacity: int = RAW_CAPACITY, raw_seconds: float = math.inf,
                 bucket_seconds: float = 60.0, max_buckets: int = MAX_BUCKETS) -> None:
        # The raw ring, one entry per run: started_at, error class code (0: ok), latency (µs; _NO_LATENCY: no response).
        # It keeps the runs of the last ``raw_seconds`` before the newest run, at most ``raw_capacity``.
        self._raw_capacity = raw_capacity
        self.raw_seconds = raw_seconds
        self._at = array("d")
        self._error = array("B")
        self._latency = array("I")
        self._error_at = array("d")  # started_at of the failed runs in the raw ring, in ring order
        self._added = 0  # runs ever added (the ring holds the last len(_at) of them)
        self._unsorted_at = -1  # number of the latest run that started before the run added just before it
        self._evicted_until = -math.inf  # newest timestamp pushed out of the raw ring
        self._buckets = BucketRing(bucket_seconds, max_buckets)
        self._classes: tuple[int, BucketRing, dict[tuple[object, ...], WindowCounts]] | None = None  # _classified
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
        code = 0 if error is None else class_code(error)
        self._add_raw(at, code, result.duration if result.status_code is not None else None)
        self._buckets.add(at, code)

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

    def _add_raw(self, at: float, code: int, latency: float | None) -> None:
        ats = self._at
        leaving = max(0, len(ats) + 1 - self._raw_capacity)
        too_old = at - self.raw_seconds
        while leaving < len(ats) and ats[leaving] <= too_old:
            leaving += 1
        if leaving == 1:  # the usual case: one run in, one out
            self._evicted_until = max(self._evicted_until, ats[0])
            if self._error[0]:
                del self._error_at[0]
            del ats[0], self._error[0], self._latency[0]
        elif leaving:
            self._evicted_until = max(self._evicted_until, *ats[:leaving])
            if failed := leaving - self._error[:leaving].count(0):
                del self._error_at[:failed]
            del ats[:leaving], self._error[:leaving], self._latency[:leaving]
        if ats and at < ats[-1]:
            self._unsorted_at = self._added
        ats.append(at)
        self._error.append(code)
        self._latency.append(_NO_LATENCY if latency is None else min(_MAX_LATENCY_US, max(0, round(latency * 1e6))))
        if code:
            self._error_at.append(at)
        self._added += 1

    def rebucket(self, bucket_seconds: float) -> None:
        """Wider buckets (a longer window was configured): the counts so far are merged into buckets of the
        new width, each old bucket into the new one holding its start, so history is kept, now reaching
        ``MAX_BUCKETS`` wider buckets back. (The running sums before the oldest bucket stay as they are.)"""
        self._buckets = self._buckets.widened(bucket_seconds)

    def holds_failures(self) -> bool:
        """Whether a failed run is in the raw ring or the buckets: no window counts an error otherwise."""
        return bool(self._error_at) or self._buckets.holds_failures

    def covers(self, now: float, seconds: float) -> bool:
        """Whether runs were seen for at least ``seconds`` before ``now`` (a window can be judged)."""
        return self.first_at is not None and now - self.first_at >= seconds

    def nests(self, now: float, inner: float, outer: float) -> bool:
        """Whether ``window(now, outer)`` counts every run ``window(now, inner)`` counts: a longer window
        counted the same way (both from the raw ring, or both from buckets). A raw window and a bucket
        window are two different counts, not one inside the other: a run reported out of order older than
        the buckets reach, or one from before a pause longer than they reach (they start over), may be in
        the raw ring only."""
        evicted = self._evicted_until
        return inner <= outer and (evicted <= now - outer or evicted > now - inner)

    def window(self, now: float, seconds: float, *, counts_only: bool = False) -> WindowCounts:
        """Runs that started in (now - seconds, now]. Exact while the raw ring reaches back that far,
        otherwise from buckets (which may include up to one bucket width more). ``counts_only``: the
        error classes may be left empty (finding them walks the window; counting does not)."""
        cutoff = now - seconds
        if self._evicted_until <= cutoff:
            if self._unsorted_at >= self._added - len(self._at):
                return self._scan(now, seconds)
            ats, error_at = self._at, self._error_at
            lo = bisect_right(ats, cutoff)
            hi = len(ats) if not ats or ats[-1] <= now else bisect_right(ats, now)
            errors = max(0, bisect_right(error_at, now) - bisect_right(error_at, cutoff)) if error_at else 0
            if not errors or hi <= lo:
                return _without_failures(max(0, hi - lo))
            if counts_only:
                return WindowCounts(total=hi - lo, errors=errors, classes=_NO_CLASSES)
            known = self._classified()
            counts = known.get((True, lo, hi, errors))
            if counts is not None:
                return counts
            # (Asked at every full pass of a firing alert's window.) Failures of one class, the usual case,
            # are counted from the codes' bytes, in C; several are walked run by run, newest first.
            failed = self._error[lo:hi].tobytes().replace(b"\0", b"")
            if failed and failed.count(failed[0]) == len(failed):
                counts = WindowCounts(total=hi - lo, errors=errors, classes={CLASS_NAMES[failed[0]]: len(failed)})
            else:
                codes, classes = self._error, Counter[str]()
                for i in range(hi - 1, lo - 1, -1):
                    if codes[i]:
                        classes[CLASS_NAMES[codes[i]]] += 1
                counts = WindowCounts(total=hi - lo, errors=errors, classes=dict(classes))
            known[True, lo, hi, errors] = counts
            return counts
        lo, hi, total, errors = self._buckets.window(now, seconds)
        if not errors:
            return _without_failures(total)
        if counts_only:
            return WindowCounts(total=total, errors=errors, classes=_NO_CLASSES)
        known = self._classified()
        counts = known.get((False, lo, hi, total, errors))
        if counts is None:
            classes = Counter[str]()
            self._buckets.classes(lo, hi, classes)
            counts = known[False, lo, hi, total, errors] = WindowCounts(total=total, errors=errors,
                                                                         classes=dict(classes))
        return counts

    def _classified(self) -> dict[tuple[object, ...], WindowCounts]:
        """The windows counted with their classes since the last run came (by their runs or buckets in the
        ring: the same ones hold the same counts until a run is added or the buckets widened). A firing
        alert's windows are asked at every full pass, three or four of them between two runs of its check,
        and finding the classes of a day of failures is most of what such a window costs."""
        known = self._classes
        if known is None or known[0] != self._added or known[1] is not self._buckets or len(known[2]) >= 16:
            known = self._classes = (self._added, self._buckets, {})  # (16: a check whose runs stopped coming)
        return known[2]

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
                    classes[CLASS_NAMES[code]] += 1
        else:
            buckets = self._buckets
            for bucket in buckets.newest_first():
                if (bucket + 1) * buckets.width <= cutoff:
                    break
                if bucket * buckets.width > now:
                    continue
                runs, failed = buckets.counts(bucket)
                total += runs
                errors += failed
                buckets.classes(bucket, bucket, classes)
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
        ats, latencies, cutoff = self._at, self._latency, now - seconds
        if self._unsorted_at >= self._added - len(ats):  # (out of order: walked, as ``_scan`` does)
            values = sorted(
                latency for i in self._raw_since(cutoff) if (latency := latencies[i]) != _NO_LATENCY and ats[i] <= now
            )
        else:
            # The window's runs found by bisecting, their latencies sorted in C; runs without a response
            # (the largest value) cut off the end.
            lo = bisect_right(ats, cutoff)
            values = sorted(latencies[lo:len(ats) if not ats or ats[-1] <= now else bisect_right(ats, now)])
            if values and values[-1] == _NO_LATENCY:
                del values[bisect_left(values, _NO_LATENCY):]
        if not values:
            return None, 0
        rank = max(1, math.ceil(q * len(values)))
        return values[rank - 1] / 1e6, len(values)


class Stats:
    """All window statistics of the monitor, keyed by (integration, check)."""

    def __init__(self, *, max_window: float = 86400.0, exact_window: float = math.inf,
                 raw_capacity: int = RAW_CAPACITY) -> None:
        self.bucket_seconds = _bucket_seconds(max_window)
        self.exact_window = exact_window  # how far back the raw ring keeps runs (at most raw_capacity of them)
        self.raw_capacity = raw_capacity
        self.checks: dict[tuple[str, str], CheckStats] = {}
        # Checks a reload pointed at another endpoint (``retarget``) whose new certificate no run has shown
        # yet: the certificate their tls_expiry alert was about is no longer theirs.
        self.tls_unknown: set[tuple[str, str]] = set()
        # (integration, check) → runs that started before this are ignored (``judged_until`` of forget_check,
        # judged_elsewhere)
        self._not_before: dict[tuple[str, str], float] = {}
        # (integration, check) → failed runs in a row a previous owner counted (``continue_streak``), for a
        # check with no run here yet: its first run continues them
        self._carried: dict[tuple[str, str], int] = {}

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

    def keep_exact(self, seconds: float) -> None:
        """Keep runs one by one for ``seconds`` (a reload changed the windows that need exact runs). A longer
        span fills as runs arrive: meanwhile the windows beyond the runs kept are counted from buckets."""
        self.exact_window = seconds
        for stats in self.checks.values():
            stats.raw_seconds = seconds

    def check(self, integration: str, check: str) -> CheckStats | None:
        return self.checks.get((integration, check))

    def add(self, result: CheckResult) -> None:
        """Record one run. (Quotas announced in its headers are the quota service's business.)"""
        key = (result.integration, result.check)
        if self._not_before and result.started_at < self._not_before.get(key, -math.inf):
            return  # older than a verdict handed here (forget_check): it would judge the incident anew
        stats = self.checks.get(key)
        if stats is None:
            stats = self.checks[key] = CheckStats(raw_capacity=self.raw_capacity, raw_seconds=self.exact_window,
                                                 bucket_seconds=self.bucket_seconds)
        carried = self._carried.pop(key, 0) if self._carried else 0
        stats.add(result)
        if carried and not result.ok and stats.last_result is result:
            stats.consecutive_failures += carried
        if self.tls_unknown and result.tls_expiry is not None:
            self.tls_unknown.discard(key)

    def continue_streak(self, integration: str, check: str, count: int) -> None:
        """``count``: the check's failed runs in a row, as the integration's previous owner counted them plus
        those recorded here since it came (monitor/cluster/streaks.py). Its count goes on from there, as
        ``integration_probe_consecutive_failures`` does: a handover neither resolves ``probe_down`` nor makes
        it wait for N more failed runs. A success recorded here since ends the streak: nothing to continue."""
        key = (integration, check)
        stats = self.checks.get(key)
        if stats is None or stats.last_result is None:
            self._carried[key] = count  # the next run continues it (or ends it)
        elif not stats.last_result.ok:
            stats.consecutive_failures = count

    def retain(self, checks: set[tuple[str, str]]) -> None:
        """Drop statistics of checks no longer configured (config reload)."""
        for key in [k for k in self.checks if k not in checks]:
            del self.checks[key]
        self._carried = {k: v for k, v in self._carried.items() if k in checks}
        self.tls_unknown &= checks
        for key in [k for k in self._not_before if k not in checks]:
            del self._not_before[key]

    def retarget(self, checks: Iterable[tuple[str, str]]) -> None:
        """These checks' requests go elsewhere now (a reload changed their URLs or kind): the certificate
        expiry seen so far is another endpoint's. Forgotten, and the checks are ``tls_unknown`` until a run
        shows the new one."""
        for key in checks:
            stats = self.checks.get(key)
            if stats is not None and stats.tls_expiry is not None:
                stats.tls_expiry = None
                self.tls_unknown.add(key)

    def forget_check(self, integration: str, check: str, *, judged_until: float | None = None) -> None:
        """Drop a check's statistics: what is here is stale (another replica judged it meanwhile).

        ``judged_until``: that replica's verdict took every run that started before this into account,
        so such runs are ignored from now on. One that arrives late (sent before a Redis outage, its
        flush confirmed only after the handover) would otherwise be the first and only run here: a
        success from before the incident began would resolve it while the check is still failing, and
        the next failures would post it again as a new incident."""
        key = (integration, check)
        self.checks.pop(key, None)
        self._carried.pop(key, None)
        self.tls_unknown.discard(key)  # (what was seen here is stale: the owner's verdict stands)
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
        self._carried = {k: v for k, v in self._carried.items() if k[0] not in gone}
        self.tls_unknown = {k for k in self.tls_unknown if k[0] not in gone}
        for key in [k for k in self._not_before if k[0] in gone]:
            del self._not_before[key]


def _bucket_seconds(max_window: float) -> float:
    """The bucket width whose ``MAX_BUCKETS`` buckets reach back ``max_window`` (at least a minute)."""
    return max(60.0, math.ceil(max_window / MAX_BUCKETS))
