"""Burn rate and projected exhaustion of one quota, from a short history of its usage.

The burn rate is the least-squares slope of usage over the last ``horizon`` seconds (noise from a
sliding window's expiring entries averages out). Exhaustion = (limit − used) / rate, reported only
while usage rises; ``0`` once usage is at or over the limit. For a fixed window (the quota empties at
``reset_seconds``) the projection is dropped when the reset comes first, and a drop in usage means a
new window: the history starts again. For sliding formats usage falls as entries age out; that is
part of the net rate and keeps the history.
"""

from __future__ import annotations

from collections import deque

HORIZON = 300.0  # seconds of history the rate is computed over
MAX_SAMPLES = 64
_MIN_SPAN = 0.001  # seconds between the first and last sample for a slope to mean anything


class BurnTracker:
    __slots__ = ("_samples", "horizon")

    def __init__(self, *, horizon: float = HORIZON, max_samples: int = MAX_SAMPLES) -> None:
        self.horizon = horizon
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, at: float, used: float, *, fixed_window: bool) -> None:
        if self._samples:
            last_at, last_used = self._samples[-1]
            if at <= last_at:  # same reading seen twice, or a clock step back: keep the newest
                self._samples.pop()
            elif fixed_window and used < last_used:  # the window rolled over
                self._samples.clear()
        self._samples.append((at, used))
        while self._samples and self._samples[0][0] < at - self.horizon:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Units per second over the history; None with fewer than two samples."""
        if len(self._samples) < 2 or self._samples[-1][0] - self._samples[0][0] < _MIN_SPAN:
            return None
        n = len(self._samples)
        mean_t = sum(t for t, _ in self._samples) / n
        mean_u = sum(u for _, u in self._samples) / n
        var = sum((t - mean_t) ** 2 for t, _ in self._samples)
        cov = sum((t - mean_t) * (u - mean_u) for t, u in self._samples)
        return cov / var if var > 0 else None

    def exhaustion(
        self, *, used: float | None, limit: float | None, reset_seconds: float | None, fixed_window: bool
    ) -> float | None:
        if used is None or not limit:
            return None
        if used >= limit:
            return 0.0
        rate = self.rate()
        if rate is None or rate <= 0:
            return None
        seconds = (limit - used) / rate
        if fixed_window and reset_seconds is not None and reset_seconds <= seconds:
            return None  # the window resets before the quota runs out
        return seconds
