"""Token buckets: tokens left and the time they were counted, in two keys (Spring Cloud Gateway) or a hash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integration_kit.limiter_formats.plans import (
    BatchPlan,
    FormatSpec,
    KeyReading,
    Outcome,
    by_value,
    check_reply,
    guarded,
    number,
    unit_seconds,
    values_and_exists,
    wire,
)


class TokenBucketReader:
    """Tokens left and the time they were counted; refilled at ``rate`` per ``period`` up to ``capacity``.

    tokens now = min(capacity, tokens + (now − timestamp) × rate); used = capacity − tokens now;
    reset_seconds = time until the bucket is full again. A missing key is a full bucket."""

    def __init__(self, spec: FormatSpec) -> None:
        assert spec.capacity is not None and spec.rate is not None
        self.spec = spec
        self.capacity = self.limit = spec.capacity
        self.per_second = spec.rate / spec.period
        self.unit = unit_seconds(spec)

    def primary(self, key: str) -> str | None:
        if self.spec.layout == "hash":
            return key
        if key.endswith(self.spec.tokens_suffix):
            return key
        if key.endswith(self.spec.timestamp_suffix):
            return key[: -len(self.spec.timestamp_suffix)] + self.spec.tokens_suffix
        return None

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        if self.spec.layout == "hash":
            fields = (self.spec.tokens_field, self.spec.timestamp_field)

            def decode_hashes(replies: list[Any]) -> list[tuple[str, Outcome]]:
                return [(k, guarded(self._hash_reading, k, now, r)) for k, r in zip(keys, replies, strict=True)]

            return BatchPlan([("HMGET", wire(k), *fields) for k in keys], decode_hashes)

        stamps = [k[: -len(self.spec.tokens_suffix)] + self.spec.timestamp_suffix for k in keys]

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            tokens, times = replies[0][: len(keys)], replies[0][len(keys) :]
            time_of = dict(zip(keys, times, strict=True))
            return by_value(keys, tokens, replies[1], lambda k, t: self._reading(k, now, t, time_of[k]))

        return BatchPlan(values_and_exists(keys, *stamps), decode)

    def _hash_reading(self, key: str, now: float, reply: Any) -> Outcome:
        tokens_r, stamp_r = check_reply(reply)
        return self._reading(key, now, tokens_r, stamp_r)

    def _reading(self, key: str, now: float, tokens_r: Any, stamp_r: Any) -> Outcome:
        tokens, stamp = number(tokens_r), number(stamp_r)
        if tokens is None:
            return None  # expired (the writers give both keys a TTL of twice the fill time): full bucket
        elapsed = max(0.0, now - (stamp or 0.0) * self.unit)
        available = min(self.capacity, tokens + elapsed * self.per_second)
        used = self.capacity - available
        return KeyReading(key=key, used=used, limit=self.capacity, reset_seconds=used / self.per_second,
                          window_seconds=self.capacity / self.per_second)
