"""One reader per Redis rate-limiter format: which commands read a batch of keys, and what the replies mean.

Every reader is read-only: MGET, PTTL, EXISTS, TYPE, LLEN, LINDEX, LRANGE, ZCOUNT, ZRANGEBYSCORE, HMGET
(and EVAL of scripts that run only those).
Never the library's own scripts (``limits``' sliding-window read RENAMEs keys) and never CL.THROTTLE
(it writes). Where a library changes keys lazily on its next call, the reader replays that step in
arithmetic.

A reader ``plan``s the commands of a batch of keys (one MGET for all their values wherever the values
are strings: per-command cost dominates a pipeline, see bench/quota_read.py); the reader module sends
them as one pipeline and hands the plan its replies. With ``scripts=True`` the plan is ``EVAL`` calls of
small read-only Lua scripts that run the same commands inside Redis and return their replies as JSON
(``scripts``): the values reach the same decoder either way. For each key the decoder answers a
``KeyReading``, a follow-up ``KeyPlan`` (sent with the other follow-ups in one more pipeline), ``Skip``
(a key of an unexpected type or value: logged once by the caller) or ``None`` (the key vanished
between SCAN and read: zero usage).

MGET answers nil both for a missing key and for a key of another type: an EXISTS over the batch tells
whether there are such keys, and only then do the nil keys get a second look (TYPE, then LLEN and LINDEX
for a ``limits`` moving window); a script asks TYPE of the nil keys itself. Where the reset is the key's
TTL, only the busiest key's TTL is read.

One module per format: ``limits``, ``counter`` (also ``rate_limiter_flexible``), ``sliding_log``,
``token_bucket``, ``gcra``. These modules are the shared definition of the key formats (README, "Rate-limit
quotas"); the monitor's quota reader (SCAN, pipelines, summaries) lives with the monitor.
"""

from __future__ import annotations

from integration_kit.limiter_formats.counter import CounterReader
from integration_kit.limiter_formats.gcra import REDIS_RATE_EPOCH, GcraReader
from integration_kit.limiter_formats.limits import LIMITS_GRANULARITY, LimitsReader
from integration_kit.limiter_formats.plans import (
    BatchPlan,
    Command,
    FormatName,
    FormatReader,
    FormatSpec,
    KeyPlan,
    KeyReading,
    Outcome,
    Skip,
    text,
    wire,
)
from integration_kit.limiter_formats.sliding_log import SlidingLogReader
from integration_kit.limiter_formats.token_bucket import TokenBucketReader

__all__ = [
    "LIMITS_GRANULARITY", "REDIS_RATE_EPOCH", "BatchPlan", "Command", "CounterReader", "FormatName", "FormatReader",
    "FormatSpec", "GcraReader", "KeyPlan", "KeyReading", "LimitsReader", "Outcome", "Skip", "SlidingLogReader",
    "TokenBucketReader", "reader_for", "text", "wire",
]


def reader_for(spec: FormatSpec) -> FormatReader:
    match spec.format:
        case "limits":
            return LimitsReader()
        case "counter" | "rate_limiter_flexible":
            return CounterReader(spec)
        case "sliding_log":
            return SlidingLogReader(spec)
        case "token_bucket":
            return TokenBucketReader(spec)
        case "gcra":
            return GcraReader(spec)
    raise ValueError(f"unknown format {spec.format!r}")  # pragma: no cover - config validation prevents it
