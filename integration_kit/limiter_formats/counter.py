"""Plain counters (rate-limit-redis, Rack::Attack, hand-written INCR + EXPIRE) and rate-limiter-flexible:
a string integer with a TTL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integration_kit.limiter_formats.plans import (
    BatchPlan,
    FormatSpec,
    KeyReading,
    Outcome,
    number,
    ttl_seconds,
)
from integration_kit.limiter_formats.scripts import values_plan


class CounterReader:
    """A string integer with a TTL; limit (and window) from config. rate-limiter-flexible is the same
    shape: consumed points, PTTL; while it blocks a key the value is points + 1, reported as is."""

    def __init__(self, spec: FormatSpec) -> None:
        self.limit, self.window = spec.limit, spec.window

    def primary(self, key: str) -> str:
        return key

    def plan(self, keys: Sequence[str], now: float, *, scripts: bool = False) -> BatchPlan:
        def one(key: str, value: Any) -> Outcome:
            used = number(value)
            assert used is not None  # values_plan reads only the values found
            return KeyReading(key=key, used=used, limit=self.limit, reset_seconds=None, window_seconds=self.window,
                              fixed_window=True, reset_from_ttl=ttl_seconds)

        return values_plan(keys, one, scripts=scripts)
