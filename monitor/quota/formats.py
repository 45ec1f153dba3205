"""One reader per Redis rate-limiter format: which commands read a batch of keys, and what the replies mean.

Every reader is read-only: MGET, PTTL, EXISTS, TYPE, LLEN, LINDEX, LRANGE, ZCOUNT, ZRANGEBYSCORE, HMGET.
Never the library's own scripts (``limits``' sliding-window read RENAMEs keys) and never CL.THROTTLE
(it writes). Where a library changes keys lazily on its next call, the reader replays that step in
arithmetic.

A reader ``plan``s the commands of a batch of keys (one MGET for all their values wherever the values
are strings: per-command cost dominates a pipeline, see bench/quota_read.py); the reader module sends
them as one pipeline and hands the plan its replies. For each key the decoder answers a
``KeyReading``, a follow-up ``KeyPlan`` (sent with the other follow-ups in one more pipeline), ``Skip``
(a key of an unexpected type or value: logged once by the caller) or ``None`` (the key vanished
between SCAN and read: zero usage).

MGET answers nil both for a missing key and for a key of another type: an EXISTS over the batch tells
whether there are such keys, and only then do the nil keys get a second look (TYPE, or LLEN for a
``limits`` moving window). Where the reset is the key's TTL, only the busiest key's TTL is read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import ResponseError

from monitor.settings.quota import RedisQuotaConfig

Command = tuple[Any, ...]

# Seconds per granularity in ``limits`` key names (limits' own table: a month is 30 days, a year 360).
LIMITS_GRANULARITY = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2_592_000, "year": 31_104_000}
_LIMITS_TAIL = re.compile(r"/(\d+)/(\d+)/(second|minute|hour|day|month|year)(\})?(/-1)?$")
REDIS_RATE_EPOCH = 1_483_228_800  # redis_rate stores TAT in seconds since 2017-01-01 UTC
_GONE = -2  # PTTL of a missing key


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyReading:
    key: str
    used: float
    limit: float | None
    reset_seconds: float | None
    window_seconds: float | None
    fixed_window: bool = False  # reset_seconds ends a window that empties the quota at once
    # Where the reset is the key's TTL, only the busiest key's is asked for (one PTTL, not one per key):
    # this turns that PTTL reply into reset_seconds.
    reset_from_ttl: Callable[[Any], float | None] | None = field(default=None, compare=False, repr=False)

    @property
    def ratio(self) -> float | None:
        return self.used / self.limit if self.limit else None


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """Commands for one key, and how to read their replies."""

    commands: Sequence[Command]
    decode: Callable[[list[Any]], Outcome]


Outcome = KeyReading | KeyPlan | Skip | None


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Commands for a batch of keys, and how to turn their replies into one outcome per key."""

    commands: Sequence[Command]
    decode: Callable[[list[Any]], list[tuple[str, Outcome]]]


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

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan: ...


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


def guarded(decode: Callable[..., Outcome], *args: Any) -> Outcome:
    """``decode(*args)``, with a value the format does not store turned into a ``Skip`` of that key."""
    try:
        return decode(*args)
    except BadValue as exc:
        return Skip(str(exc))


def _guarded_plan(decode: Callable[[list[Any]], Outcome]) -> Callable[[list[Any]], Outcome]:
    return lambda replies: guarded(decode, replies)


def confirm_type(key: str) -> KeyPlan:
    """A key MGET saw as nil although it exists: TYPE says whether it is another type or just new."""

    def decode(replies: list[Any]) -> Outcome:
        kind = text(_check(replies[0]) or b"none")
        if kind in ("none", "string"):  # expired, or created after the MGET: the next read counts it
            return None
        return Skip(f"unexpected type {kind}")

    return KeyPlan([("TYPE", wire(key))], decode)


def _values_with_ttls(keys: Sequence[str]) -> list[Command]:
    """MGET of the batch, then one PTTL per key (Redis has no multi-key PTTL)."""
    return [("MGET", *map(wire, keys)), *(("PTTL", wire(k)) for k in keys)]


def _values_and_exists(keys: Sequence[str], *more: str) -> list[Command]:
    """MGET of the batch (and of ``more`` keys after it), EXISTS of the batch."""
    return [("MGET", *map(wire, keys), *map(wire, more)), ("EXISTS", *map(wire, keys))]


def _by_value(
    keys: Sequence[str],
    values: list[Any],
    exists_reply: Any,
    read: Callable[..., Outcome],
    second_look: Callable[[str], Outcome] = confirm_type,
) -> list[tuple[str, Outcome]]:
    """``read(key, value)`` for each key MGET found; the nil ones are gone, unless EXISTS counted more
    keys than MGET could read: then the nil keys get ``second_look``."""
    suspect = (number(exists_reply) or 0) > sum(v is not None for v in values)
    return [
        (k, guarded(read, k, v) if v is not None else second_look(k) if suspect else None)
        for k, v in zip(keys, values, strict=True)
    ]


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

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        sliding = [k for k in keys if k.endswith("}")]
        plain = [k for k in keys if not k.endswith("}")]
        previous = [k + "/-1" for k in sliding]
        commands = _values_and_exists(plain) if plain else []
        split = len(commands)
        if sliding:
            commands += _values_with_ttls(sliding + previous)

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            out: list[tuple[str, Outcome]] = []
            if plain:  # a string is a fixed window; a key MGET cannot read may be a moving window (list)
                out += _by_value(plain, replies[0], replies[1], _limits_fixed, lambda k: _limits_list(k, now))
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
    assert used is not None  # _by_value reads only the values MGET found
    return KeyReading(key=key, used=used, limit=amount, reset_seconds=None, window_seconds=window,
                      fixed_window=True, reset_from_ttl=_limits_reset)


def _limits_reset(pttl: Any) -> float:
    return ttl_seconds(pttl) or 0.0  # limits reports "now" for a key without TTL


def _limits_list(key: str, now: float) -> KeyPlan:
    amount, window = _limits_item(key)
    return KeyPlan([("LLEN", wire(key)), ("LINDEX", wire(key), -1)],
                   _guarded_plan(lambda r: _limits_moving(key, amount, window, now, r)))


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
        entries = _check(replies[0]) or []
        stamps = [t for t in (number(e) for e in entries) if t is not None and t >= cutoff]
        # limits answers "reset = now + window" for an empty window; match it.
        reset = min(stamps) + window - now if stamps else window
        return KeyReading(key=key, used=len(stamps), limit=amount, reset_seconds=max(0.0, reset),
                          window_seconds=window)

    return KeyPlan([("LRANGE", wire(key), 0, -1)], _guarded_plan(in_window))


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


# ---- plain counters (rate-limit-redis, Rack::Attack, INCR + EXPIRE) and rate-limiter-flexible -----


class CounterReader:
    """A string integer with a TTL; limit (and window) from config. rate-limiter-flexible is the same
    shape: consumed points, PTTL; while it blocks a key the value is points + 1, reported as is."""

    def __init__(self, cfg: RedisQuotaConfig) -> None:
        self.limit, self.window = cfg.limit, cfg.window

    def primary(self, key: str) -> str:
        return key

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        def one(key: str, value: Any) -> Outcome:
            used = number(value)
            assert used is not None  # _by_value reads only the values MGET found
            return KeyReading(key=key, used=used, limit=self.limit, reset_seconds=None, window_seconds=self.window,
                              fixed_window=True, reset_from_ttl=ttl_seconds)

        return BatchPlan(_values_and_exists(keys), lambda r: _by_value(keys, r[0], r[1], one))


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

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        start = (now - self.window) / self.unit
        low = repr(start) if self.unit == 1.0 else str(math.floor(start))
        commands: list[Command] = []
        for key in keys:
            k = wire(key)
            commands += [("ZCOUNT", k, low, "+inf"), ("ZRANGEBYSCORE", k, low, "+inf", "LIMIT", 0, 1, "WITHSCORES")]

        def one(key: str, count_r: Any, oldest_r: Any) -> Outcome:
            count = number(count_r) or 0.0
            oldest = _first_score(_check(oldest_r))
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

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        if self.cfg.layout == "hash":
            fields = (self.cfg.tokens_field, self.cfg.timestamp_field)

            def decode_hashes(replies: list[Any]) -> list[tuple[str, Outcome]]:
                return [(k, guarded(self._hash_reading, k, now, r)) for k, r in zip(keys, replies, strict=True)]

            return BatchPlan([("HMGET", wire(k), *fields) for k in keys], decode_hashes)

        stamps = [k[: -len(self.cfg.tokens_suffix)] + self.cfg.timestamp_suffix for k in keys]

        def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
            tokens, times = replies[0][: len(keys)], replies[0][len(keys) :]
            time_of = dict(zip(keys, times, strict=True))
            return _by_value(keys, tokens, replies[1], lambda k, t: self._reading(k, now, t, time_of[k]))

        return BatchPlan(_values_and_exists(keys, *stamps), decode)

    def _hash_reading(self, key: str, now: float, reply: Any) -> Outcome:
        tokens_r, stamp_r = _check(reply)
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

    def plan(self, keys: Sequence[str], now: float) -> BatchPlan:
        def one(key: str, value: Any) -> Outcome:
            tat = number(value)
            if tat is None:
                return None
            tat = tat / 1e9 if self.cell else tat + REDIS_RATE_EPOCH
            ahead = max(0.0, tat - now)
            return KeyReading(key=key, used=ahead / self.emission, limit=self.limit, reset_seconds=ahead,
                              window_seconds=self.emission * self.limit)

        return BatchPlan(_values_and_exists(keys), lambda r: _by_value(keys, r[0], r[1], one))


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
