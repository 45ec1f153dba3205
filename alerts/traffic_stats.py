"""Window statistics of an integration's real traffic: calls and errors per class in the fixed time
buckets the integration services write (README, "The integration kit"), as the error-rate rule reads
them. The monitor's traffic reader adds what it reads (a bucket read again adds only what is new).

Memory is bounded: buckets older than ``max_window`` are dropped. A window sums the buckets that start
inside it, so it is exact to the bucket width (10 s).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping

from alerts.stats import WindowCounts


class TrafficStats:
    """Calls of one integration by bucket start (epoch seconds)."""

    __slots__ = ("_buckets", "_starts", "max_window")

    def __init__(self, *, max_window: float) -> None:
        self.max_window = max_window
        self._starts: list[float] = []  # sorted
        self._buckets: dict[float, tuple[int, Counter[str]]] = {}  # start → (calls, errors by class)

    def add(self, start: float, calls: int, errors: Mapping[str, int]) -> None:
        """Add calls (and the errors among them, by class) to the bucket starting at ``start``."""
        bucket = self._buckets.get(start)
        if bucket is None:
            bisect.insort(self._starts, start)
            bucket = (0, Counter())
        classes = bucket[1]
        classes.update({c: n for c, n in errors.items() if n})
        self._buckets[start] = (bucket[0] + calls, classes)
        self._trim(self._starts[-1])

    def _trim(self, newest: float) -> None:
        cut = bisect.bisect_left(self._starts, newest - self.max_window)
        for start in self._starts[:cut]:
            del self._buckets[start]
        del self._starts[:cut]

    def covers(self, now: float, seconds: float) -> bool:
        """Whether buckets reach back at least ``seconds`` before ``now`` (a window can be judged)."""
        return bool(self._starts) and now - self._starts[0] >= seconds

    def nests(self, now: float, inner: float, outer: float) -> bool:
        """Whether ``window(now, outer)`` counts every call ``window(now, inner)`` counts."""
        return inner <= outer

    def window(self, now: float, seconds: float, *, counts_only: bool = False) -> WindowCounts:
        """Calls in the buckets that start in (now - seconds, now] (with their classes even when
        ``counts_only``: the errors are counted from them)."""
        lo = bisect.bisect_right(self._starts, now - seconds)
        hi = bisect.bisect_right(self._starts, now)
        total = 0
        classes: Counter[str] = Counter()
        for start in self._starts[lo:hi]:
            calls, errors = self._buckets[start]
            total += calls
            classes.update(errors)
        return WindowCounts(total=total, errors=sum(classes.values()), classes=dict(classes))
