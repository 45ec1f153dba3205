"""``limits`` (flask-limiter, slowapi): fixed window (a string with a TTL), moving window (a list of
timestamps) and sliding window counter (two strings), in keys named ``…/<amount>/<multiples>/<granularity>``."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from integration_kit.limiter_formats.plans import (
    BatchPlan,
    KeyPlan,
    KeyReading,
    Outcome,
    by_value,
    check_reply,
    confirm_type,
    guarded,
    guarded_plan,
    number,
    ttl_seconds,
    values_and_exists,
    values_with_ttls,
    wire,
)

# Seconds per granularity in ``limits`` key names (limits' own table: a month is 30 days, a year 360).
LIMITS_GRANULARITY = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2_592_000, "year": 31_104_000}
_LIMITS_TAIL = re.compile(r"/(\d+)/(\d+)/(second|minute|hour|day|month|year)(\})?(/-1)?$")
_GONE = -2  # PTTL of a missing key

class LimitsReader:
    """``limits``: fixed window (string + TTL), moving window (list), sliding window counter (two strings).

    The strategy comes from the key (braces: sliding window counter) and its type (string: fixed window,
    list: moving window); the limit and window from the key's ``/<amount>/<multiples>/<granularity>``.
    """

    limit: float | None = None

    def primary(self, key: str) -> str | None:
        match = _LIMITS_TAIL.search(key)
        if not match:
            return None
        if match.group(5):  # "{…}/-1": the previous window of a sliding-window counter
            return key[: -len("/-1")] if match.group(4) else None
        return key

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        sliding = [k for k in keys if k.endswith("}")]
        plain = [k for k in keys if not k.endswith("}")]
        previous = [k + "/-1" for k in sliding]
        commands = values_and_exists(plain) if plain else []
        split = len(commands)
        if sliding:
            commands += values_with_ttls(sliding + previous)

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            out: list[tuple[str, Outcome]] = []
            if plain:  # a string is a fixed window; a key MGET cannot read may be a moving window (list)
                out += by_value(plain, replies[0], replies[1], _limits_fixed, lambda k: _limits_list(k, now))
            if sliding:
                values, ttls = replies[split], replies[split + 1 :]
                n = len(sliding)
                for i, key in enumerate(sliding):
                    amount, window = _limits_item(key)
                    current = (values[i], ttls[i])
                    prior = (values[n + i], ttls[n + i])
                    out.append((key, guarded(_limits_sliding, key, amount, window, current, prior)))
            return out

        return BatchPlan(commands, decode)


def _limits_item(key: str) -> tuple[float, float]:
    match = _LIMITS_TAIL.search(key)
    assert match is not None  # primary() accepted the key
    return float(match.group(1)), float(int(match.group(2)) * LIMITS_GRANULARITY[match.group(3)])


def _limits_fixed(key: str, value: Any) -> Outcome:
    amount, window = _limits_item(key)
    used = number(value)
    assert used is not None  # by_value reads only the values MGET found
    return KeyReading(key=key, used=used, limit=amount, reset_seconds=None, window_seconds=window,
                      fixed_window=True, reset_from_ttl=_limits_reset)


def _limits_reset(pttl: Any) -> float:
    return ttl_seconds(pttl) or 0.0  # limits reports "now" for a key without TTL


def _limits_list(key: str, now: float) -> KeyPlan:
    amount, window = _limits_item(key)
    return KeyPlan([("LLEN", wire(key)), ("LINDEX", wire(key), -1)],
                   guarded_plan(lambda r: _limits_moving(key, amount, window, now, r)))


def _limits_moving(key: str, amount: float, window: float, now: float, r: list[Any]) -> Outcome:
    """A list of epoch seconds, newest first, trimmed to ``amount``: used = entries inside the window."""
    length = number(r[0]) or 0
    if length == 0:
        return None
    cutoff = now - window
    last = number(r[1])
    if last is not None and last >= cutoff:  # every entry is inside the window
        return KeyReading(key=key, used=length, limit=amount, reset_seconds=max(0.0, last + window - now),
                          window_seconds=window)

    def in_window(replies: list[Any]) -> Outcome:
        entries = check_reply(replies[0]) or []
        stamps = [t for t in (number(e) for e in entries) if t is not None and t >= cutoff]
        # limits answers "reset = now + window" for an empty window; match it.
        reset = min(stamps) + window - now if stamps else window
        return KeyReading(key=key, used=len(stamps), limit=amount, reset_seconds=max(0.0, reset),
                          window_seconds=window)

    return KeyPlan([("LRANGE", wire(key), 0, -1)], guarded_plan(in_window))


def _limits_sliding(
    key: str, amount: float, window: float, current_r: tuple[Any, Any], previous_r: tuple[Any, Any]
) -> Outcome:
    current, previous = number(current_r[0]), number(previous_r[0])
    current_ms, previous_ms = number(current_r[1]) or 0.0, number(previous_r[1]) or 0.0
    if current is None and previous is None:
        return confirm_type(key) if current_ms != _GONE else None
    window_ms = window * 1000.0
    current, previous = current or 0.0, previous or 0.0
    current_ms, previous_ms = max(current_ms, 0.0), max(previous_ms, 0.0)
    if 0 < current_ms < window_ms:
        # The library would now rename current → previous and start an empty current window
        # (its next call does it, even a read): replay that here without touching the keys.
        previous, previous_ms = current, current_ms
        current, current_ms = 0.0, current_ms + window_ms
    used = math.floor(previous * previous_ms / window_ms) + current
    # limits' own reset: when the next unit frees up, from either window.
    candidates = []
    if previous:
        candidates.append((previous_ms / 1000.0) % (window / previous))
    if current:
        candidates.append((current_ms / 1000.0) % window)
    return KeyReading(key=key, used=used, limit=amount, reset_seconds=min(candidates, default=0.0),
                      window_seconds=window)
