"""GCRA limiters (redis_rate, redis-cell): a theoretical arrival time (TAT) per key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integration_kit.limiter_formats.plans import (
    BatchPlan,
    FormatSpec,
    KeyReading,
    Outcome,
    number,
)
from integration_kit.limiter_formats.scripts import values_plan

REDIS_RATE_EPOCH = 1_483_228_800  # redis_rate stores TAT in seconds since 2017-01-01 UTC

class GcraReader:
    """Theoretical arrival time (TAT) of a GCRA limiter; emission interval = period / rate.

    redis_rate: TAT in float seconds since 2017-01-01 UTC, limit = burst.
    redis-cell: TAT in integer nanoseconds since the Unix epoch, limit = burst + 1.
    used = (TAT − now) / emission; reset_seconds = TAT − now (the limiter is fully replenished)."""

    def __init__(self, spec: FormatSpec) -> None:
        assert spec.rate is not None and spec.burst is not None
        self.emission = spec.period / spec.rate
        self.cell = spec.variant == "redis_cell"
        self.limit = float(spec.burst + 1 if self.cell else spec.burst)

    def primary(self, key: str) -> str:
        return key

    def plan(self, keys: Sequence[str], now: float, *, scripts: bool = False) -> BatchPlan:
        def one(key: str, value: Any) -> Outcome:
            tat = number(value)
            if tat is None:
                return None
            tat = tat / 1e9 if self.cell else tat + REDIS_RATE_EPOCH
            ahead = max(0.0, tat - now)
            return KeyReading(key=key, used=ahead / self.emission, limit=self.limit, reset_seconds=ahead,
                              window_seconds=self.emission * self.limit)

        return values_plan(keys, one, scripts=scripts)
