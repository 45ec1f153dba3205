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
    of_type,
    unit_seconds,
    values_and_exists,
    wire,
)
from integration_kit.limiter_formats.scripts import Gatherer


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

    def plan(self, keys: Sequence[str], now: float, *, scripts: bool = False) -> BatchPlan:
        if self.spec.layout == "hash":
            fields = (self.spec.tokens_field, self.spec.timestamp_field)
            if scripts:
                return FIELDS_OF_HASHES.plan(keys, lambda k, *v: self._reading(k, now, *v), args=lambda chunk: fields)

            def decode_hashes(replies: list[Any]) -> list[tuple[str, Outcome]]:
                return [(k, guarded(self._hash_reading, k, now, r)) for k, r in zip(keys, replies, strict=True)]

            return BatchPlan([("HMGET", wire(k), *fields) for k in keys], decode_hashes)
        if scripts:
            partner = (len(wire(self.spec.tokens_suffix)), self.spec.timestamp_suffix)
            return VALUES_OF_PAIRS.plan(keys, lambda k, *v: self._pair_reading(k, now, *v), args=lambda chunk: partner)
        stamp_of = {k: k[: -len(self.spec.tokens_suffix)] + self.spec.timestamp_suffix for k in keys}
        stamps = list(stamp_of.values())

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            tokens, times = replies[0][: len(keys)], replies[0][len(keys) :]
            time_of = dict(zip(keys, times, strict=True))
            return by_value(keys, tokens, replies[1], lambda k, t: self._reading(k, now, t, time_of[k]))

        return BatchPlan(values_and_exists(keys, *stamps), decode)

    def _pair_reading(self, key: str, now: float, tokens_r: Any, stamp_r: Any, kind: Any) -> Outcome:
        return self._reading(key, now, tokens_r, stamp_r) if kind is None else of_type(kind)

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


# HMGET of the two fields (ARGV) of each hash: what the plain HMGET returns, the error of a key of
# another type in the first place.
FIELDS_OF_HASHES = Gatherer(
    """
for i, key in ipairs(KEYS) do
  local fields = redis.pcall('HMGET', key, ARGV[1], ARGV[2])
  if fields['err'] then
    out[2 * i - 1], out[2 * i] = fields, false
  else
    out[2 * i - 1], out[2 * i] = fields[1], fields[2]
  end
end
""",
    stride=2,
)

# MGET of each bucket's tokens key (KEYS) and timestamp key (the tokens key with its suffix, ARGV[1] bytes,
# replaced by ARGV[2]), and the tokens key's type where it held no string (what EXISTS + TYPE tell the
# plain read).
VALUES_OF_PAIRS = Gatherer(
    """
local cut, suffix, names = tonumber(ARGV[1]), ARGV[2], {}
for i, key in ipairs(KEYS) do
  names[2 * i - 1], names[2 * i] = key, string.sub(key, 1, #key - cut) .. suffix
end
local values = redis.call('MGET', unpack(names))
for i, key in ipairs(KEYS) do
  local kind = false
  if not values[2 * i - 1] then
    kind = redis.call('TYPE', key)['ok']
  end
  out[3 * i - 2], out[3 * i - 1], out[3 * i] = values[2 * i - 1], values[2 * i], kind
end
""",
    stride=3,
)
