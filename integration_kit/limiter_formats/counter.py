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
    by_value,
    number,
    ttl_seconds,
    values_and_exists,
)


class CounterReader:
    """A string integer with a TTL; limit (and window) from config. rate-limiter-flexible is the same
    shape: consumed points, PTTL; while it blocks a key the value is points + 1, reported as is."""

    def __init__(self, spec: FormatSpec) -> None:
        self.limit, self.window = spec.limit, spec.window

    def primary(self, key: str) -> str:
        return key

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        def one(key: str, value: Any) -> Outcome:
            used = number(value)
            assert used is not None  # by_value reads only the values MGET found
            return KeyReading(key=key, used=used, limit=self.limit, reset_seconds=None, window_seconds=self.window,
                              fixed_window=True, reset_from_ttl=ttl_seconds)

        return BatchPlan(values_and_exists(keys), lambda r: by_value(keys, r[0], r[1], one))
