"""``limits`` (flask-limiter, slowapi): fixed window (a string with a TTL), moving window (a list of
timestamps) and sliding window counter (two strings), in keys named ``…/<amount>/<multiples>/<granularity>``."""

from __future__ import annotations

import functools
import itertools
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
    joined,
    number,
    of_type,
    text,
    ttl_seconds,
    values_and_exists,
    values_with_ttls,
    wire,
)
from integration_kit.limiter_formats.scripts import Gatherer

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

    def plan(self, keys: Sequence[str], now: float, *, scripts: bool = False) -> BatchPlan:
        sliding = [k for k in keys if k.endswith("}")]
        plain = [k for k in keys if not k.endswith("}")]
        parts: list[BatchPlan] = []
        if plain and scripts:  # grouped by window: the script takes one cutoff per group, not per key
            plain.sort(key=lambda k: _limits_item(k)[1])
            parts.append(LIMITS_KEYS.plan(plain, lambda k, *v: _limits_typed(k, now, *v),
                                          args=lambda chunk: _cutoff_groups(chunk, now)))
        elif plain:  # a string is a fixed window; a key MGET cannot read may be a moving window (list)
            second_look = lambda k: _limits_list(k, now)  # noqa: E731
            parts.append(BatchPlan(values_and_exists(plain),
                                   lambda r: by_value(plain, r[0], r[1], _limits_fixed, second_look)))
        if sliding and scripts:
            parts.append(SLIDING_PAIRS.plan(sliding, _limits_sliding))
        elif sliding:
            n = len(sliding)

            def decode_sliding(replies: list[Any]) -> list[tuple[str, Outcome]]:
                values, ttls = replies[0], replies[1:]
                return [
                    (k, guarded(_limits_sliding, k, values[i], ttls[i], values[n + i], ttls[n + i]))
                    for i, k in enumerate(sliding)
                ]

            parts.append(BatchPlan(values_with_ttls(sliding + [k + "/-1" for k in sliding]), decode_sliding))
        return joined(parts)


@functools.lru_cache(maxsize=65_536)  # every read of a quota decodes the same names again
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


def _limits_moving(key: str, now: float, count: Any, oldest: Any) -> Outcome:
    """A list of epoch seconds, newest first, trimmed to ``amount``: ``count`` entries inside the window,
    the oldest of them ``oldest`` (however they were gathered)."""
    amount, window = _limits_item(key)
    oldest_stamp = number(oldest)
    # limits answers "reset = now + window" for an empty window; match it.
    reset = oldest_stamp + window - now if oldest_stamp is not None else window
    return KeyReading(key=key, used=number(count) or 0.0, limit=amount, reset_seconds=max(0.0, reset),
                      window_seconds=window)


def _cutoff_groups(chunk: Sequence[str], now: float) -> list[Any]:
    """``LIMITS_KEYS``' ARGV for keys sorted by window: (how many keys, their window's start) per window."""
    args: list[Any] = []
    for window, group in itertools.groupby(chunk, key=lambda k: _limits_item(k)[1]):
        args += [sum(1 for _ in group), repr(now - window)]
    return args


def _limits_typed(key: str, now: float, value: Any, kind: Any, oldest: Any) -> Outcome:
    """What ``LIMITS_KEYS`` gathered: a string's value, or a list's count and oldest entry inside the window."""
    if kind is None:
        return _limits_fixed(key, value)
    if text(kind) == "list":
        return _limits_moving(key, now, value, oldest)
    return of_type(kind)


def _limits_list(key: str, now: float) -> KeyPlan:
    """A key MGET could not read: its type, and the list's length and oldest entry if it is a list."""
    cutoff = now - _limits_item(key)[1]
    k = wire(key)

    def decode(replies: list[Any]) -> Outcome:
        kind = text(check_reply(replies[0]))
        if kind != "list":
            return of_type(kind)
        length, last = number(replies[1]) or 0, _lua_number(replies[2])
        if length == 0:  # gone since the TYPE
            return None
        if last is not None and last >= cutoff:  # every entry is inside the window
            return _limits_moving(key, now, length, replies[2])
        return KeyPlan([("LRANGE", k, 0, -1)], guarded_plan(lambda r: _limits_moving(key, now, *inside(r[0]))))

    def inside(entries: Any) -> tuple[int, Any]:
        entries = check_reply(entries) or []
        found = _oldest_inside(entries, cutoff)
        return (0, None) if found is None else (found + 1, entries[found])

    return KeyPlan([("TYPE", k), ("LLEN", k), ("LINDEX", k, -1)], guarded_plan(decode))


def _oldest_inside(entries: Sequence[Any], cutoff: float) -> int | None:
    """Index of the oldest entry at or after ``cutoff`` in a newest-first list: limits' own moving-window
    read (its moving_window.lua) is this binary search, and so is ``LIMITS_KEYS``."""
    low, high, found = 0, len(entries) - 1, None
    while low <= high:
        mid = (low + high) // 2
        value = _lua_number(entries[mid])
        if value is not None and value >= cutoff:
            found, low = mid, mid + 1
        else:
            high = mid - 1
    return found


def _lua_number(reply: Any) -> float | None:
    """Lua's ``tonumber`` (C's strtod: inf, nan and hex too), as the library's script and ``LIMITS_KEYS``
    compare a list entry with the window's start; an entry that is no number is no time."""
    if reply is None:
        return None
    value = text(check_reply(reply)).strip()
    if "_" in value:  # Python's float() takes digit separators, strtod does not
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return float.fromhex(value)
    except ValueError:
        return None


def _limits_sliding(key: str, current_r: Any, current_ttl: Any, previous_r: Any, previous_ttl: Any) -> Outcome:
    """The value and PTTL of the current and of the previous window's key."""
    amount, window = _limits_item(key)
    current, previous = number(current_r), number(previous_r)
    current_ms, previous_ms = number(current_ttl) or 0.0, number(previous_ttl) or 0.0
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


# Per key: a string's value; for a list, the number of entries inside the window and the oldest of them
# (the whole list when its last entry is inside, else limits' own binary search: as ``_limits_list`` and
# ``_oldest_inside``) and the type; for any other type, the type. ARGV: (n, cutoff) for each run of n
# keys with the same window.
LIMITS_KEYS = Gatherer(
    """
local values, i = redis.call('MGET', unpack(KEYS)), 0
for group = 1, #ARGV, 2 do
  local cutoff = tonumber(ARGV[group + 1])
  for _ = 1, tonumber(ARGV[group]) do
    i = i + 1
    local key, value, kind, oldest = KEYS[i], values[i], false, false
    local last = false
    if not value then  -- a list answers LINDEX (no TYPE for it); another type, TYPE
      last = redis.pcall('LINDEX', key, -1)
      if type(last) == 'table' then
        kind = redis.call('TYPE', key)['ok']
      else
        kind = last and 'list' or 'none'
      end
    end
    if kind == 'list' then
      local length, stamp = redis.call('LLEN', key), tonumber(last)
      if stamp and stamp >= cutoff then
        value, oldest = length, last
      else
        local low, high, found = 0, length - 1, nil
        while low <= high do
          local mid = math.floor((low + high) / 2)
          stamp = tonumber(redis.call('LINDEX', key, mid))
          if stamp and stamp >= cutoff then
            found, low = mid, mid + 1
          else
            high = mid - 1
          end
        end
        if found then
          value, oldest = found + 1, redis.call('LINDEX', key, found)
        else
          value = 0
        end
      end
    end
    out[3 * i - 2], out[3 * i - 1], out[3 * i] = value, kind, oldest
  end
end
""",
    stride=3,
)

# The value and PTTL of each sliding window counter's current window (KEYS) and of its previous window (the
# key + "/-1"); no PTTL for a previous window that is not there (``_limits_sliding`` weighs it only with a
# value).
SLIDING_PAIRS = Gatherer(
    """
local names = {}
for i, key in ipairs(KEYS) do
  names[2 * i - 1], names[2 * i] = key, key .. '/-1'
end
local values = redis.call('MGET', unpack(names))
for i, key in ipairs(KEYS) do
  local previous, previous_ttl = values[2 * i], false
  if previous then
    previous_ttl = redis.call('PTTL', names[2 * i])
  end
  out[4 * i - 3], out[4 * i - 2] = values[2 * i - 1], redis.call('PTTL', key)
  out[4 * i - 1], out[4 * i] = previous, previous_ttl
end
""",
    stride=4,
)
