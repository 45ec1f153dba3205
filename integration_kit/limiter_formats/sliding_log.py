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


class SlidingLogReader:
    """A sorted set with one member per unit, scored by time (ms or s); used = ZCOUNT over the window.

    Entries newer than Redis' clock still count (the writer may use its own, slightly ahead, clock).
    reset_seconds is when the oldest entry inside the window leaves it (the next unit frees up)."""

    def __init__(self, spec: FormatSpec) -> None:
        assert spec.window is not None
        self.limit, self.window, self.unit = spec.limit, spec.window, unit_seconds(spec)

    def primary(self, key: str) -> str:
        return key

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        start = (now - self.window) / self.unit
        low = repr(start) if self.unit == 1.0 else str(math.floor(start))
        commands: list[Command] = []
        for key in keys:
            k = wire(key)
            commands += [("ZCOUNT", k, low, "+inf"), ("ZRANGEBYSCORE", k, low, "+inf", "LIMIT", 0, 1, "WITHSCORES")]

        def one(key: str, count_r: Any, oldest_r: Any) -> Outcome:
            count = number(count_r) or 0.0
            oldest = _first_score(check_reply(oldest_r))
            reset = max(0.0, oldest * self.unit + self.window - now) if oldest is not None else 0.0
            return KeyReading(key=key, used=count, limit=self.limit, reset_seconds=reset, window_seconds=self.window)

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            pairs = zip(keys, replies[0::2], replies[1::2], strict=True)
            return [(k, guarded(one, k, c, o)) for k, c, o in pairs]

        return BatchPlan(commands, decode)


def _first_score(reply: Any) -> float | None:
    """ZRANGEBYSCORE … WITHSCORES without redis-py's callback: [member, score] (RESP2) or [[m, s]]."""
    if not reply:
        return None
    first = reply[0]
    if isinstance(first, list | tuple):
        return number(first[1])
    return number(reply[1]) if len(reply) > 1 else None
