"""One reading of one rate limit, from Redis or from response headers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaObservation:
    policy: str  # name of the limit as the source names it ("default", "burst", "core", "api-usage"…)
    used: float | None  # may exceed limit: reported as is
    limit: float | None
    reset_seconds: float | None = None  # seconds until the window resets / the bucket is full again
    window_seconds: float | None = None
    observed_at: float = 0.0  # epoch seconds

    @property
    def ratio(self) -> float | None:
        if self.used is None or not self.limit:
            return None
        return self.used / self.limit
