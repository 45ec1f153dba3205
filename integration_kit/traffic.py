"""The real-traffic counters in Redis: key names, fields, and what a bucket's hash means.

Integration services write them (the kit's recorder, or any code in any language that follows this
format); the monitor reads them (read-only) into ``integration_traffic_*`` metrics and the error-rate
rule. README, "The integration kit", documents the same table.

One hash per integration per fixed ``BUCKET_SECONDS`` time bucket, with a TTL:

    <prefix>{<integration>}:<bucket start, epoch seconds, a multiple of 10>

The braces are literal (a Redis Cluster hash tag: one slot per integration). Fields, all integers, all
written with HINCRBY (so any number of writer processes can add to the same bucket):

- ``c:ok``, ``c:<error class>``: finished calls by final outcome (one per call, retries included in it)
- ``s:<status>``: finished calls by the last HTTP status (100–599)
- ``l:<le>``: calls whose last attempt took at most ``<le>`` seconds and more than the bound before it
  (``LATENCY_BOUNDS``; ``l:+Inf`` above the last); ``lsum``: their latencies' sum in microseconds
- ``r``: retries (attempts beyond the first); ``t``: calls that waited for the rate limiter;
  ``tw``: microseconds waited for it; ``b``: calls sent without the rate limiter (its Redis failed, so
  the limiter let them through unlimited)
- ``lost``: calls a writer could not record (its Redis was unreachable longer than it keeps counts)

And one string per integration, ``<prefix>{<integration>}:last``: epoch seconds of the latest write.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field

from integration_kit.errors import ErrorClass

DEFAULT_PREFIX = "im:traffic:"
BUCKET_SECONDS = 10
DEFAULT_TTL = 7200  # seconds a bucket lives: what the monitor can read back after its own restart

LATENCY_BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_FIELDS: tuple[str, ...] = (*(f"l:{b:g}" for b in LATENCY_BOUNDS), "l:+Inf")
OK = "ok"
CLASSES: tuple[str, ...] = (OK, *(c.value for c in ErrorClass))
# A call's ``c:`` field by its final class (None: success), made once rather than per call.
CALL_FIELDS: dict[ErrorClass | None, str] = {None: f"c:{OK}", **{c: f"c:{c.value}" for c in ErrorClass}}
STATUS_FIELDS: dict[int, str] = {status: f"s:{status}" for status in range(100, 600)}  # likewise


def integration_tag(integration: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}{{{integration}}}:"


def bucket_key(integration: str, bucket: int, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{integration_tag(integration, prefix)}{bucket}"


def last_key(integration: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{integration_tag(integration, prefix)}last"


def bucket_of(epoch: float) -> int:
    return int(epoch // BUCKET_SECONDS) * BUCKET_SECONDS


def latency_field(seconds: float) -> str:
    """The bucket of a latency: the first bound it does not exceed (``l:+Inf`` past the last)."""
    return LATENCY_FIELDS[bisect_left(LATENCY_BOUNDS, seconds)]


@dataclass(slots=True)
class BucketCounts:
    """One bucket's hash, decoded. Unknown fields, unknown classes, statuses outside 100–599 and values
    that are not non-negative integers are left out (and named in ``ignored``)."""

    calls: dict[str, int] = field(default_factory=dict)  # class (or "ok") → calls
    statuses: dict[int, int] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_FIELDS))  # per LATENCY_FIELDS
    latency_sum: float = 0.0  # seconds
    retries: int = 0
    throttled: int = 0
    throttle_wait: float = 0.0  # seconds
    limiter_bypassed: int = 0
    lost: int = 0
    ignored: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def errors(self) -> int:
        return sum(n for c, n in self.calls.items() if c != OK)


_KNOWN_CLASSES = frozenset(CLASSES)
_LATENCY_INDEX = {name: i for i, name in enumerate(LATENCY_FIELDS)}
_SCALARS = {"lsum", "r", "t", "tw", "b", "lost"}


def decode_bucket(fields: Mapping[str, str]) -> BucketCounts:
    out = BucketCounts()
    for name, raw in fields.items():
        value = _count(raw)
        if value is None:
            out.ignored.append(name)
            continue
        kind, _, rest = name.partition(":")
        if kind == "c" and rest in _KNOWN_CLASSES:
            out.calls[rest] = value
        elif kind == "s" and rest.isdigit() and 100 <= int(rest) <= 599:
            out.statuses[int(rest)] = value
        elif name in _LATENCY_INDEX:
            out.latency[_LATENCY_INDEX[name]] = value
        elif name in _SCALARS:
            _scalar(out, name, value)
        else:
            out.ignored.append(name)
    return out


def _scalar(out: BucketCounts, name: str, value: int) -> None:
    if name == "lsum":
        out.latency_sum = value / 1e6
    elif name == "r":
        out.retries = value
    elif name == "t":
        out.throttled = value
    elif name == "tw":
        out.throttle_wait = value / 1e6
    elif name == "b":
        out.limiter_bypassed = value
    else:
        out.lost = value


def _count(raw: str) -> int | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        return None
    return int(value)
