"""One reader per Redis rate-limiter format: which commands read a key, and what the replies mean.

Every reader is read-only: GET, PTTL, LLEN, LINDEX, LRANGE, ZCOUNT, ZRANGEBYSCORE, HMGET. Never the
library's own scripts (``limits``' sliding-window read RENAMEs keys) and never CL.THROTTLE (it writes).
Where a library changes keys lazily on its next call, the reader replays that step in arithmetic.

A reader ``plan``s the commands of one key; the reader module pipelines the plans of thousands of keys
at once and hands each plan its replies. ``decode`` answers a ``KeyReading``, a follow-up ``KeyPlan``
(one more pipelined round trip for the keys that need it), ``Skip`` (a key of an unexpected type or
value: logged once by the caller) or ``None`` (the key vanished between SCAN and read: zero usage).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import ResponseError

from monitor.quota.config import RedisQuotaConfig

Command = tuple[Any, ...]

# Seconds per granularity in ``limits`` key names (limits' own table: a month is 30 days, a year 360).
LIMITS_GRANULARITY = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2_592_000, "year": 31_104_000}
_LIMITS_TAIL = re.compile(r"/(\d+)/(\d+)/(second|minute|hour|day|month|year)(\})?(/-1)?$")
REDIS_RATE_EPOCH = 1_483_228_800  # redis_rate stores TAT in seconds since 2017-01-01 UTC


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyReading:
    key: str
    used: float
    limit: float | None
    reset_seconds: float | None
    window_seconds: float | None
    fixed_window: bool = False  # reset_seconds ends a window that empties the quota at once

    @property
    def ratio(self) -> float | None:
        return self.used / self.limit if self.limit else None


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


@dataclass(frozen=True, slots=True)
class KeyPlan:
    commands: Sequence[Command]
    decode: Callable[[list[Any]], Outcome]


Outcome = KeyReading | KeyPlan | Skip | None


class BadValue(Exception):
    """A reply that is not what the format stores (non-numeric counter, wrong type)."""


class FormatReader(Protocol):
    @property
    def limit(self) -> float | None:
        """The limit config gives (None where each key carries its own)."""
        ...

    def primary(self, key: str) -> str | None:
        """The key to read for a scanned key (a partner key maps to its main key); None: not this format."""
        ...

    def plan(self, key: str, now: float) -> KeyPlan: ...


# ---- reply helpers --------------------------------------------------------------------------------


def wire(key: str) -> bytes:
    """Keys travel as bytes so that non-UTF-8 key names survive the round trip (see ``text``)."""
    return key.encode("utf-8", "surrogateescape")


def text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)


def _check(reply: Any) -> Any:
    if isinstance(reply, ResponseError):
        if "WRONGTYPE" in str(reply):
            raise BadValue("unexpected type")
        raise reply  # e.g. NOPERM: the source is misconfigured, not this key
    return reply


def number(reply: Any) -> float | None:
    """A numeric reply (bytes, str or int); None for nil; BadValue for anything else."""
    reply = _check(reply)
    if reply is None:
        return None
    if isinstance(reply, bool):
        raise BadValue(f"non-numeric value {reply!r}")
    if isinstance(reply, int | float):
        return float(reply)
    try:
        value = float(text(reply))
    except (ValueError, TypeError):
        raise BadValue(f"non-numeric value {text(reply)[:32]!r}") from None
    if not math.isfinite(value):
        raise BadValue(f"non-numeric value {text(reply)[:32]!r}")
    return value


def ttl_seconds(reply: Any) -> float | None:
    """PTTL reply → seconds; None when the key has no expiry (-1) or is gone (-2)."""
    ms = number(reply)
    return ms / 1000.0 if ms is not None and ms >= 0 else None


def guarded(decode: Callable[[list[Any]], Outcome]) -> Callable[[list[Any]], Outcome]:
    def run(replies: list[Any]) -> Outcome:
        try:
            return decode(replies)
        except BadValue as exc:
            return Skip(str(exc))

    return run


# ---- limits (flask-limiter, slowapi) --------------------------------------------------------------


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

    def plan(self, key: str, now: float) -> KeyPlan:
        match = _LIMITS_TAIL.search(key)
        assert match is not None  # primary() accepted it
        amount = float(match.group(1))
        window = int(match.group(2)) * LIMITS_GRANULARITY[match.group(3)]
        k = wire(key)
        if match.group(4):
            return KeyPlan(
                [("GET", k), ("PTTL", k), ("GET", k + b"/-1"), ("PTTL", k + b"/-1")],
                guarded(lambda r: _limits_sliding(key, amount, window, r)),
            )
        # One round trip for both strategies: the command of the wrong type answers WRONGTYPE.
        return KeyPlan(
            [("GET", k), ("PTTL", k), ("LLEN", k), ("LINDEX", k, -1)],
            guarded(lambda r: _limits_fixed_or_moving(key, amount, window, now, r)),
        )


def _limits_fixed_or_moving(key: str, amount: float, window: float, now: float, r: list[Any]) -> Outcome:
    get, pttl, llen, oldest = r
    if not _is_wrongtype(get):  # a string: fixed window
        used = number(get)
        if used is None:
            return None
        return KeyReading(key=key, used=used, limit=amount, reset_seconds=ttl_seconds(pttl) or 0.0,
                          window_seconds=window, fixed_window=True)
    if _is_wrongtype(llen):
        raise BadValue("unexpected type (neither string nor list)")
    length = number(llen) or 0
    if length == 0:
        return None
    cutoff = now - window
    last = number(oldest)
    if last is not None and last >= cutoff:  # every entry is inside the window
        return KeyReading(key=key, used=length, limit=amount, reset_seconds=max(0.0, last + window - now),
                          window_seconds=window)

    def in_window(replies: list[Any]) -> Outcome:
        entries = _check(replies[0]) or []
        stamps = [t for t in (number(e) for e in entries) if t is not None and t >= cutoff]
        # limits answers "reset = now + window" for an empty window; match it.
        reset = min(stamps) + window - now if stamps else window
        return KeyReading(key=key, used=len(stamps), limit=amount, reset_seconds=max(0.0, reset),
                          window_seconds=window)

    return KeyPlan([("LRANGE", wire(key), 0, -1)], guarded(in_window))


def _limits_sliding(key: str, amount: float, window: float, r: list[Any]) -> Outcome:
    current, current_ms, previous, previous_ms = (number(v) for v in r)
    if current is None and previous is None:
        return None
    window_ms = window * 1000.0
    current, previous = current or 0.0, previous or 0.0
    current_ms, previous_ms = max(current_ms or 0.0, 0.0), max(previous_ms or 0.0, 0.0)
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


def _is_wrongtype(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "WRONGTYPE" in str(reply)


# ---- plain counters (rate-limit-redis, Rack::Attack, INCR + EXPIRE) and rate-limiter-flexible -----


class CounterReader:
    """A string integer with a TTL; limit (and window) from config. rate-limiter-flexible is the same
    shape: consumed points, PTTL; while it blocks a key the value is points + 1, reported as is."""

    def __init__(self, cfg: RedisQuotaConfig) -> None:
        self.limit, self.window = cfg.limit, cfg.window

    def primary(self, key: str) -> str:
        return key

    def plan(self, key: str, now: float) -> KeyPlan:
        def decode(r: list[Any]) -> Outcome:
            used = number(r[0])
            if used is None:
                return None
            return KeyReading(key=key, used=used, limit=self.limit, reset_seconds=ttl_seconds(r[1]),
                              window_seconds=self.window, fixed_window=True)

        return KeyPlan([("GET", wire(key)), ("PTTL", wire(key))], guarded(decode))


# ---- sliding log (PyrateLimiter) -------------------------------------------------------------------


class SlidingLogReader:
    """A sorted set with one member per unit, scored by time (ms or s); used = ZCOUNT over the window.

    Entries newer than Redis' clock still count (the writer may use its own, slightly ahead, clock).
    reset_seconds is when the oldest entry inside the window leaves it (the next unit frees up)."""

    def __init__(self, cfg: RedisQuotaConfig) -> None:
        assert cfg.window is not None
        self.limit, self.window, self.unit = cfg.limit, cfg.window, cfg.unit_seconds

    def primary(self, key: str) -> str:
        return key

    def plan(self, key: str, now: float) -> KeyPlan:
        start = (now - self.window) / self.unit
        low = repr(start) if self.unit == 1.0 else repr(math.floor(start))

        def decode(r: list[Any]) -> Outcome:
            count = number(r[0]) or 0.0
            oldest = _first_score(_check(r[1]))
            if count == 0 and oldest is None:
                return KeyReading(key=key, used=0.0, limit=self.limit, reset_seconds=0.0, window_seconds=self.window)
            reset = oldest * self.unit + self.window - now if oldest is not None else 0.0
            return KeyReading(key=key, used=count, limit=self.limit, reset_seconds=max(0.0, reset),
                              window_seconds=self.window)

        k = wire(key)
        return KeyPlan(
            [("ZCOUNT", k, low, "+inf"), ("ZRANGEBYSCORE", k, low, "+inf", "LIMIT", 0, 1, "WITHSCORES")],
            guarded(decode),
        )


def _first_score(reply: Any) -> float | None:
    """ZRANGEBYSCORE … WITHSCORES without redis-py's callback: [member, score] (RESP2) or [[m, s]]."""
    if not reply:
        return None
    first = reply[0]
    if isinstance(first, list | tuple):
        return number(first[1])
    return number(reply[1]) if len(reply) > 1 else None


# ---- token bucket (Spring Cloud Gateway and hash-based buckets) -------------------------------------


class TokenBucketReader:
    """Tokens left and the time they were counted; refilled at ``rate`` per ``period`` up to ``capacity``.

    tokens now = min(capacity, tokens + (now − timestamp) × rate); used = capacity − tokens now;
    reset_seconds = time until the bucket is full again. A missing key is a full bucket."""

    def __init__(self, cfg: RedisQuotaConfig) -> None:
        assert cfg.capacity is not None and cfg.rate is not None
        self.cfg = cfg
        self.capacity = self.limit = cfg.capacity
        self.per_second = cfg.rate / cfg.period
        self.unit = cfg.unit_seconds

    def primary(self, key: str) -> str | None:
        if self.cfg.layout == "hash":
            return key
        if key.endswith(self.cfg.tokens_suffix):
            return key
        if key.endswith(self.cfg.timestamp_suffix):
            return key[: -len(self.cfg.timestamp_suffix)] + self.cfg.tokens_suffix
        return None

    def plan(self, key: str, now: float) -> KeyPlan:
        k = wire(key)
        if self.cfg.layout == "hash":
            commands: list[Command] = [("HMGET", k, self.cfg.tokens_field, self.cfg.timestamp_field)]
        else:
            stamp_key = key[: -len(self.cfg.tokens_suffix)] + self.cfg.timestamp_suffix
            commands = [("GET", k), ("GET", wire(stamp_key))]

        def decode(r: list[Any]) -> Outcome:
            tokens_raw, stamp_raw = _check(r[0]) if self.cfg.layout == "hash" else r
            tokens, stamp = number(tokens_raw), number(stamp_raw)
            if tokens is None:
                return None  # expired (the writers give both keys a TTL of twice the fill time): full bucket
            elapsed = max(0.0, now - (stamp or 0.0) * self.unit)
            available = min(self.capacity, tokens + elapsed * self.per_second)
            used = self.capacity - available
            return KeyReading(key=key, used=used, limit=self.capacity, reset_seconds=used / self.per_second,
                              window_seconds=self.capacity / self.per_second)

        return KeyPlan(commands, guarded(decode))


# ---- GCRA (redis_rate, redis-cell) ------------------------------------------------------------------


class GcraReader:
    """Theoretical arrival time (TAT) of a GCRA limiter; emission interval = period / rate.

    redis_rate: TAT in float seconds since 2017-01-01 UTC, limit = burst.
    redis-cell: TAT in integer nanoseconds since the Unix epoch, limit = burst + 1.
    used = (TAT − now) / emission; reset_seconds = TAT − now (the limiter is fully replenished)."""

    def __init__(self, cfg: RedisQuotaConfig) -> None:
        assert cfg.rate is not None and cfg.burst is not None
        self.emission = cfg.period / cfg.rate
        self.cell = cfg.variant == "redis_cell"
        self.limit = float(cfg.burst + 1 if self.cell else cfg.burst)

    def primary(self, key: str) -> str:
        return key

    def plan(self, key: str, now: float) -> KeyPlan:
        def decode(r: list[Any]) -> Outcome:
            tat = number(r[0])
            if tat is None:
                return None
            tat = tat / 1e9 if self.cell else tat + REDIS_RATE_EPOCH
            ahead = max(0.0, tat - now)
            return KeyReading(key=key, used=ahead / self.emission, limit=self.limit, reset_seconds=ahead,
                              window_seconds=self.emission * self.limit)

        return KeyPlan([("GET", wire(key))], guarded(decode))


def reader_for(cfg: RedisQuotaConfig) -> FormatReader:
    match cfg.format:
        case "limits":
            return LimitsReader()
        case "counter" | "rate_limiter_flexible":
            return CounterReader(cfg)
        case "sliding_log":
            return SlidingLogReader(cfg)
        case "token_bucket":
            return TokenBucketReader(cfg)
        case "gcra":
            return GcraReader(cfg)
    raise ValueError(f"unknown format {cfg.format!r}")  # pragma: no cover - config validation prevents it
