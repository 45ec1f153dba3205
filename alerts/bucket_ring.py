"""The older part of a check's history (alerts/stats.py): run and failure counts in fixed-width time buckets.

Bucket ``b`` holds the runs that started in [b × width, (b + 1) × width). The ring keeps the newest
``size`` bucket numbers, contiguously (a bucket no run fell in is kept too, with nothing in it): slot
``(b - first) % size``, so no bucket's start or end is stored, and a window finds its buckets by
arithmetic. Each slot holds running sums (runs and failed runs through that bucket, since the check was
first seen) that wrap around: a window's count is the difference of two sums, correct modulo 2**16 while
the ring holds fewer than 2**16 runs (a day of runs every 1.4 s or slower), and once it would hold more,
the sums are widened to 32 bits (no window holds 2**32 runs). The failed runs' sums exist only while a
failure is in the ring (most checks never fail: half the ring's bytes).

Failures by class are packed entries ``bucket << 32 | code << 24 | count``, sorted, so a window's entries
are found by bisecting on its buckets. A check failing all day holds one entry per bucket (8 bytes each).
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator

_WRAP = {"H": 0xFFFF, "I": 0xFFFFFFFF}  # running sums modulo 2**16, or 2**32 once a ring holds more runs
_NARROW = _WRAP["H"]
_COUNT_BITS = 24
_MAX_COUNT = (1 << _COUNT_BITS) - 1  # more failures of one class in one bucket start another entry
# Where a packed entry's class code and count bytes (low, middle, high) sit in its 8 bytes as the array
# stores them (the machine's byte order).
_CODE_AT, _COUNT_AT = (3, (0, 1, 2)) if sys.byteorder == "little" else (4, (7, 6, 5))

# Error classes as small numbers (0: the run succeeded). Error classes are a closed set
# (integration_kit.errors.ErrorClass, plus "unknown"), so the table stays small (codes fit a byte).
CLASS_NAMES: list[str] = [""]
_CLASS_CODES: dict[str, int] = {}


def class_code(error: str) -> int:
    code = _CLASS_CODES.get(error)
    if code is None:
        code = _CLASS_CODES[error] = len(CLASS_NAMES)
        CLASS_NAMES.append(error)
    return code


class BucketRing:
    """Run and failure counts of one check in the newest ``size`` buckets of ``width`` seconds."""

    __slots__ = ("_dropped", "_errors", "_failures", "_first", "_newest", "_totals", "_wrap", "size", "width")

    def __init__(self, width: float, size: int) -> None:
        self.width = width
        self.size = size
        self._first = 0  # bucket number of slot 0 (slot of b: (b - first) % size)
        self._newest = -1  # the newest bucket number kept (-1: none yet)
        self._totals = array("H")  # runs through each kept bucket (running sums, wrapping)
        self._wrap = _WRAP["H"]
        self._errors: array[int] | None = None  # failed runs through each kept bucket; None: none in the ring
        self._dropped = (0, 0)  # the running sums (runs, failed runs) through the bucket before the oldest kept
        self._failures: array[int] | None = None  # packed (bucket, class code, count), sorted; None: empty

    def _slot(self, bucket: int) -> int:
        return (bucket - self._first) % self.size

    @property
    def holds_failures(self) -> bool:
        """Whether a failed run is counted in a kept bucket (the failed runs' sums exist only then)."""
        return self._errors is not None

    @property
    def oldest(self) -> int:
        return self._newest - len(self._totals) + 1

    def add(self, at: float, code: int) -> None:
        """One run that started at ``at`` (``code``: its error class, 0 if it succeeded)."""
        bucket = int(at // self.width)
        if bucket > self._newest:
            self._advance(bucket)
        elif bucket < self._newest - len(self._totals) + 1:
            return  # reported out of order, and older than the ring reaches back
        newest, wrap, totals = self._newest, self._wrap, self._totals
        newest_slot = (newest - self._first) % self.size
        if wrap == _NARROW and (totals[newest_slot] - self._dropped[0]) & wrap == wrap:
            self._widen_sums()  # this run would be the ring's 2**16th
            wrap, totals = self._wrap, self._totals
        # The running sums of its bucket and every later one: normally only the newest.
        slots = [newest_slot] if bucket == newest else [self._slot(b) for b in range(bucket, newest + 1)]
        for slot in slots:
            totals[slot] = (totals[slot] + 1) & wrap
        if code:
            errors = self._errors
            if errors is None:
                errors = self._errors = array(totals.typecode, [self._dropped[1]]) * len(totals)
            for slot in slots:
                errors[slot] = (errors[slot] + 1) & wrap
            self._count_failure(bucket, code)

    def _widen_sums(self) -> None:
        """32-bit running sums from 16-bit ones. Only differences of sums are read, so each becomes the sum
        before the oldest bucket plus the runs since, which are fewer than 2**16: exact from the 16 bits."""
        dropped_total, dropped_errors = self._dropped
        narrow = self._wrap
        self._totals = array("I", [dropped_total + ((v - dropped_total) & narrow) for v in self._totals])
        if self._errors is not None:
            self._errors = array("I", [dropped_errors + ((v - dropped_errors) & narrow) for v in self._errors])
        self._wrap = _WRAP["I"]

    def _advance(self, bucket: int) -> None:
        """Make ``bucket`` the newest: the buckets up to it start empty (carrying the sums), the oldest leave."""
        totals, errors = self._totals, self._errors
        if not totals or bucket - self._newest >= self.size:  # nothing kept stays: the ring starts over
            carried = self._sums_through(self._newest) if totals else self._dropped
            self._first, self._newest = bucket, bucket
            self._totals, self._errors, self._failures = array(totals.typecode, [carried[0]]), None, None
            self._dropped = carried
            return
        carry_total = totals[self._slot(self._newest)]
        carry_errors = errors[self._slot(self._newest)] if errors is not None else self._dropped[1]
        for _ in range(bucket - self._newest):
            self._newest += 1
            if len(totals) < self.size:
                totals.append(carry_total)
                if errors is not None:
                    errors.append(carry_errors)
                continue
            slot = self._slot(self._newest)  # the oldest bucket's, which leaves
            self._dropped = totals[slot], (errors[slot] if errors is not None else self._dropped[1])
            totals[slot] = carry_total
            if errors is not None:
                errors[slot] = carry_errors
        if errors is not None and carry_errors == self._dropped[1]:
            self._errors = None  # the last failure left the ring
        failures = self._failures
        if failures is not None and failures[0] >> 32 < self.oldest:
            del failures[:bisect_left(failures, self.oldest << 32)]
            if not failures:
                self._failures = None

    def _count_failure(self, bucket: int, code: int) -> None:
        failures = self._failures
        if failures is None:
            failures = self._failures = array("Q")
        key = bucket << 32 | code << _COUNT_BITS
        i = bisect_left(failures, key)
        while i < len(failures) and failures[i] >> _COUNT_BITS == key >> _COUNT_BITS:
            if failures[i] & _MAX_COUNT < _MAX_COUNT:
                failures[i] += 1
                return
            i += 1
        failures.insert(bisect_left(failures, key), key | 1)

    def _sums_through(self, bucket: int) -> tuple[int, int]:
        """The running sums (runs, failed runs) through ``bucket`` (from oldest - 1 up to newest)."""
        if bucket < self.oldest:
            return self._dropped
        slot = self._slot(bucket)
        return self._totals[slot], (self._errors[slot] if self._errors is not None else self._dropped[1])

    def window(self, now: float, seconds: float) -> tuple[int, int, int, int]:
        """(lo, hi, runs, failed runs) of the window (now - seconds, now]: the kept buckets lo … hi that end
        after its start and start by ``now`` (so up to one bucket more than the window); none if hi < lo.
        (Written out in one piece: a full evaluation pass asks this of every check three times.)"""
        totals, newest, width, cutoff = self._totals, self._newest, self.width, now - seconds
        oldest = newest - len(totals) + 1
        lo = oldest if cutoff == -math.inf else int(cutoff // width)
        hi = int(now // width)
        if lo < oldest:
            lo = oldest
        if hi > newest:
            hi = newest
        if hi < lo:
            return lo, hi, 0, 0
        errors, first, size, wrap = self._errors, self._first, self.size, self._wrap
        hi_slot = (hi - first) % size
        if lo > oldest:
            lo_slot = (lo - 1 - first) % size
            total_before = totals[lo_slot]
            errors_before = errors[lo_slot] if errors is not None else 0
        else:
            total_before, errors_before = self._dropped
        if errors is None:
            return lo, hi, (totals[hi_slot] - total_before) & wrap, 0
        return lo, hi, (totals[hi_slot] - total_before) & wrap, (errors[hi_slot] - errors_before) & wrap

    def counts(self, bucket: int) -> tuple[int, int]:
        """Runs and failed runs in one kept bucket (a window of no length at its start reaches just it)."""
        _, _, runs, failed = self.window(bucket * self.width, 0.0)
        return runs, failed

    def classes(self, lo: int, hi: int, into: Counter[str]) -> None:
        """Add the failures by class of buckets lo … hi to ``into``."""
        failures = self._failures
        if failures is None:
            return
        start, end = bisect_left(failures, lo << 32), bisect_left(failures, (hi + 1) << 32)
        if start == end:
            return
        # A firing error-rate alert has its long window's classes counted at every full pass: a day of a
        # check failing all day is 480 entries. All of one class, each count below 256 (the usual case),
        # they are summed from their bytes (in C) instead of one by one.
        packed, entries = failures[start:end].tobytes(), end - start
        codes = packed[_CODE_AT::8]
        low, middle, high = _COUNT_AT
        if codes.count(codes[0]) == entries and packed[middle::8].count(0) == packed[high::8].count(0) == entries:
            into[CLASS_NAMES[codes[0]]] += sum(packed[low::8])
            return
        for i in range(start, end):
            entry = failures[i]
            into[CLASS_NAMES[entry >> _COUNT_BITS & 0xFF]] += entry & _MAX_COUNT

    def newest_first(self) -> Iterator[int]:
        """The kept bucket numbers, newest first."""
        return iter(range(self._newest, self.oldest - 1, -1))

    def widened(self, width: float) -> BucketRing:
        """This ring's counts in buckets of ``width`` (wider): each bucket merged into the one holding its
        start. The running sums before the oldest bucket stay as they are."""
        ring = BucketRing(width, self.size)
        ring._dropped, ring._wrap, ring._totals = self._dropped, self._wrap, array(self._totals.typecode)
        if not self._totals:
            return ring
        merged: dict[int, tuple[int, int]] = {}  # new bucket → the sums through the last old one in it
        for bucket in range(self.oldest, self._newest + 1):  # in order
            merged[int(bucket * self.width // width)] = self._sums_through(bucket)
        first, newest = min(merged), max(merged)
        if newest - first >= self.size:  # (only with a width barely wider than this one's)
            first = newest - self.size + 1
            ring._dropped = max((b, sums) for b, sums in merged.items() if b < first)[1]
        carried = ring._dropped
        totals, errors = array(self._totals.typecode), array(self._totals.typecode)
        for bucket in range(first, newest + 1):
            carried = merged.get(bucket, carried)
            totals.append(carried[0])
            errors.append(carried[1])
        ring._first, ring._newest, ring._totals = first, newest, totals
        ring._errors = errors if self._errors is not None else None
        if self._failures is not None:
            by_class: Counter[tuple[int, int]] = Counter()
            for entry in self._failures:
                bucket = int((entry >> 32) * self.width // width)
                if bucket >= first:
                    by_class[bucket, entry >> _COUNT_BITS & 0xFF] += entry & _MAX_COUNT
            packed = array("Q")
            for (bucket, code), count in sorted(by_class.items()):
                for part in range(0, count, _MAX_COUNT):
                    packed.append(bucket << 32 | code << _COUNT_BITS | min(_MAX_COUNT, count - part))
            ring._failures = packed or None
        return ring
