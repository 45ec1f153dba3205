"""What every limiter format reader shares: the plan of commands for a batch of keys, what a key's
replies mean (``KeyReading``, a follow-up ``KeyPlan``, ``Skip``, or ``None``), and the reply helpers.

A reader never sends anything itself: the caller (the monitor's quota reader) sends the planned commands
as pipelines and hands the replies back, so the decoding here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from redis.exceptions import ResponseError

FormatName = Literal["limits", "counter", "rate_limiter_flexible", "sliding_log", "token_bucket", "gcra"]
Command = tuple[Any, ...]


class FormatSpec(Protocol):
    """What a reader needs to know about a quota beyond its keys (the monitor's ``RedisQuotaConfig`` is
    one). Which fields a format uses is listed in README, "Rate-limit quotas"."""

    @property
    def format(self) -> FormatName: ...
    @property
    def limit(self) -> float | None: ...
    @property
    def window(self) -> float | None: ...
    @property
    def time_unit(self) -> Literal["s", "ms"] | None: ...
    @property
    def capacity(self) -> float | None: ...
    @property
    def rate(self) -> float | None: ...
    @property
    def period(self) -> float: ...
    @property
    def burst(self) -> int | None: ...
    @property
    def variant(self) -> Literal["redis_rate", "redis_cell"] | None: ...
    @property
    def layout(self) -> Literal["keys", "hash"]: ...
    @property
    def tokens_suffix(self) -> str: ...
    @property
    def timestamp_suffix(self) -> str: ...
    @property
    def tokens_field(self) -> str: ...
    @property
    def timestamp_field(self) -> str: ...


def unit_seconds(spec: FormatSpec) -> float:
    """Seconds per unit of the timestamps a format stores: sliding_log scores default to milliseconds
    (PyrateLimiter), token_bucket times to seconds (Spring Cloud Gateway)."""
    default = "ms" if spec.format == "sliding_log" else "s"
    return 0.001 if (spec.time_unit or default) == "ms" else 1.0


# Not frozen: a read builds one per key (tens of thousands), and a frozen dataclass' __init__ costs six
# times as much (3 µs against 0.5: most of a key's decoding). Nothing keeps them past the read.
@dataclass(slots=True, kw_only=True)
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


def joined(plans: Sequence[BatchPlan]) -> BatchPlan:
    """One plan of several: their commands in order, each part decoding its own replies."""

    def decode(replies: list[Any]) -> list[tuple[str, Outcome]]:
        out: list[tuple[str, Outcome]] = []
        offset = 0
        for plan in plans:
            out += plan.decode(replies[offset : offset + len(plan.commands)])
            offset += len(plan.commands)
        return out

    return BatchPlan([command for plan in plans for command in plan.commands], decode)


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

    def plan(self, keys: Sequence[str], now: float, *, scripts: bool = False) -> BatchPlan:
        """The commands that read ``keys`` at ``now`` (Redis' clock); ``scripts``: gather server-side
        where the plain commands would cost one or more commands per key (see ``scripts``)."""
        ...


# ---- reply helpers --------------------------------------------------------------------------------


def wire(key: str) -> bytes:
    """Keys travel as bytes so that non-UTF-8 key names survive the round trip (see ``text``)."""
    return key.encode("utf-8", "surrogateescape")


def text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)


def check_reply(reply: Any) -> Any:
    if isinstance(reply, ResponseError):
        if "WRONGTYPE" in str(reply):
            raise BadValue("unexpected type")
        raise reply  # e.g. NOPERM: the source is misconfigured, not this key
    return reply


def number(reply: Any) -> float | None:
    """A numeric reply (bytes, str or int); None for nil; BadValue for anything else."""
    kind = type(reply)
    if kind is bytes or kind is str:  # the common case first: called once per key per read
        try:
            value = float(reply)
        except ValueError:
            raise BadValue(f"non-numeric value {text(reply)[:32]!r}") from None
    elif kind is int or kind is float:
        value = float(reply)
    else:
        reply = check_reply(reply)
        if reply is None:
            return None
        raise BadValue(f"non-numeric value {reply!r}")  # a bool, a list: not what a format stores
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


def guarded_plan(decode: Callable[[list[Any]], Outcome]) -> Callable[[list[Any]], Outcome]:
    return lambda replies: guarded(decode, replies)


def confirm_type(key: str) -> KeyPlan:
    """A key MGET saw as nil although it exists: TYPE says whether it is another type or just new."""

    return KeyPlan([("TYPE", wire(key))], lambda replies: of_type(check_reply(replies[0])))


def of_type(kind: Any) -> Outcome:
    """A key whose value could not be read, by its type: gone, or not what the format stores."""
    kind = text(kind or b"none")
    if kind in ("none", "string"):  # expired, or created after the read: the next read counts it
        return None
    return Skip(f"unexpected type {kind}")


def values_with_ttls(keys: Sequence[str]) -> list[Command]:
    """MGET of the batch, then one PTTL per key (Redis has no multi-key PTTL)."""
    return [("MGET", *map(wire, keys)), *(("PTTL", wire(k)) for k in keys)]


def values_and_exists(keys: Sequence[str], *more: str) -> list[Command]:
    """MGET of the batch (and of ``more`` keys after it), EXISTS of the batch."""
    return [("MGET", *map(wire, keys), *map(wire, more)), ("EXISTS", *map(wire, keys))]


def by_value(
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
