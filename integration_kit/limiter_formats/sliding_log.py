"""Sliding log (PyrateLimiter): a sorted set with one member per unit, scored by time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from integration_kit.limiter_formats.plans import (
    BatchPlan,
    Command,
    FormatSpec,
    KeyReading,
    Outcome,
    check_reply,
    guarded,
    number,
    unit_seconds,
    wire,
)
from integration_kit.limiter_formats.scripts import Gatherer


class SlidingLogReader:
    """A sorted set with one member per unit, scored by time (ms or s); used = ZCOUNT over the window.

    Entries newer than Redis' clock still count (the writer may use its own, slightly ahead, clock).
    reset_seconds is when the oldest entry inside the window leaves it (the next unit frees up)."""

    def __init__(self, spec: FormatSpec) -> None:
        assert spec.window is not None
        self.limit, self.window, self.unit = spec.limit, spec.window, unit_seconds(spec)

    def primary(self, key: str) -> str:
        return key

    def plan(self, keys: Sequence[str], now: float, *, scripts: bool = False) -> BatchPlan:
        start = (now - self.window) / self.unit
        low = repr(start) if self.unit == 1.0 else str(math.floor(start))

        def one(key: str, count_r: Any, oldest_r: Any) -> Outcome:
            count = number(count_r) or 0.0
            oldest = number(oldest_r)
            reset = max(0.0, oldest * self.unit + self.window - now) if oldest is not None else 0.0
            return KeyReading(key=key, used=count, limit=self.limit, reset_seconds=reset, window_seconds=self.window)

        if scripts:
            return WINDOW_OF_SORTED_SETS.plan(keys, one, args=lambda chunk: (low,))
        commands: list[Command] = []
        for key in keys:
            k = wire(key)
            commands += [("ZCOUNT", k, low, "+inf"), ("ZRANGEBYSCORE", k, low, "+inf", "LIMIT", 0, 1, "WITHSCORES")]

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            pairs = zip(keys, replies[0::2], replies[1::2], strict=True)
            return [(k, guarded(lambda k, c, o: one(k, c, _first_score(o)), k, c, o)) for k, c, o in pairs]

        return BatchPlan(commands, decode)


# ZCOUNT over [ARGV[1], +inf] and the score of the oldest member inside it, for each sorted set: what the
# two plain commands above return (a key of another type: ZCOUNT's WRONGTYPE error, as it would be).
WINDOW_OF_SORTED_SETS = Gatherer(
    """
for i, key in ipairs(KEYS) do
  local count = redis.pcall('ZCOUNT', key, ARGV[1], '+inf')
  local oldest = false
  if type(count) == 'number' then
    oldest = redis.call('ZRANGEBYSCORE', key, ARGV[1], '+inf', 'LIMIT', 0, 1, 'WITHSCORES')[2] or false
  end
  out[2 * i - 1] = count
  out[2 * i] = oldest
end
""",
    stride=2,
)


def _first_score(reply: Any) -> Any:
    """ZRANGEBYSCORE … WITHSCORES without redis-py's callback: [member, score] (RESP2) or [[m, s]]."""
    reply = check_reply(reply)
    if not reply:
        return None
    first = reply[0]
    if isinstance(first, list | tuple):
        return first[1]
    return reply[1] if len(reply) > 1 else None
