"""The processed-event-ID table for webhook handlers: "have we handled this event already?", answered
atomically in Redis, plus the per-integration counters the monitor reads. Needs only ``redis``.

Usage (any asyncio service with a ``redis.asyncio.Redis`` client)::

    ledger = WebhookLedger(redis, integration="stripe")

    async with ledger.claim(event["id"], event_type=event["type"]) as first:
        if first:
            await handle(event)      # raises → the claim is released, the vendor's retry is processed
    return web.Response(status=200)  # a duplicate is acknowledged, not processed again

or, without the context manager::

    if await ledger.mark_processed(event_id, event_type=kind):
        try:
            await handle(event)
        except Exception:
            await ledger.release(event_id)   # "processing failed": let the redelivery through
            raise
        await ledger.mark_done(event_id)     # optional: completes the claim (release can't undo it)

Keys (``<prefix>`` defaults to ``im:wh:``; the braces around the integration are literal — a Redis
Cluster hash tag, so every key of one integration lives in one slot and one script can touch them all):

``<prefix>{<integration>}:event:<event_id>`` — string, one per event, expires after ``retention``
    (default 7 days). Present = seen. Value ``processing:<token>`` while claimed, ``done`` after
    ``mark_done``/a successful ``claim`` block. Services in other languages may write any value with
    ``SET … NX PX``; only its presence matters to other writers, the monitor never reads it.
``<prefix>{<integration>}:stats`` — hash, no expiry: ``received`` (every delivery, duplicates
    included), ``duplicates`` (deliveries whose ID was already present), ``released`` (claims given
    back after a failure), ``last_event_ts`` (epoch seconds, decimal string, of the latest delivery —
    duplicates count: they prove the vendor reaches us). Only ever increases; writers must keep
    ``last_event_ts`` monotonic (write only if greater).
``<prefix>{<integration>}:types`` — hash, no expiry: event type → epoch seconds of its latest delivery.

Times default to the Redis server's ``TIME``, so services and monitor share one clock.

A claim is made with ``SET NX`` and the counters are updated in the same Lua script, so concurrent
deliveries from any number of processes get exactly one True. ``release`` and ``mark_done`` are
compare-and-set on the claim token: a process can only give back its own claim, and never an event
that was completed.

Out of scope: verifying vendor signatures (Stripe-Signature, X-Hub-Signature-256, …) — do that with
the vendor's SDK *before* calling the ledger, or a forged request can burn a real event's ID.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

_INTEGRATION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_KEY_PREFIX = "im:wh:"
DEFAULT_RETENTION = 7 * 86400.0  # vendors retry for up to ~3 days; a week covers late manual redeliveries
MAX_EVENT_ID_LEN = 1024
MAX_EVENT_TYPE_LEN = 128
DONE = "done"
_PROCESSING = "processing:"

# KEYS: event, stats, types. ARGV: claim value, ttl ms, received_at ('' = Redis TIME), event type ('').
_CLAIM = """
local ts = tonumber(ARGV[3])
if not ts then
  local t = redis.call('TIME')
  ts = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local first = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'received', 1)
if not first then redis.call('HINCRBY', KEYS[2], 'duplicates', 1) end
local stamp = string.format('%.3f', ts)
local last = tonumber(redis.call('HGET', KEYS[2], 'last_event_ts'))
if not last or ts > last then redis.call('HSET', KEYS[2], 'last_event_ts', stamp) end
if ARGV[4] ~= '' then
  local seen = tonumber(redis.call('HGET', KEYS[3], ARGV[4]))
  if not seen or ts > seen then redis.call('HSET', KEYS[3], ARGV[4], stamp) end
end
if first then return 1 end
return 0
"""

# KEYS: event. ARGV: our claim value, retention ms.
_DONE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS: event, stats. ARGV: our claim value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'released', 1)
  return 1
end
return 0
"""


class LedgerSettings(Protocol):
    """Where and how long a ledger keeps event IDs: the monitor's ``webhooks`` config section is one."""

    @property
    def retention(self) -> float: ...
    @property
    def key_prefix(self) -> str: ...


def integration_key_base(integration: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """``<prefix>{<integration>}``: the common start of an integration's ledger keys."""
    if not _INTEGRATION.match(integration):
        raise ValueError(f"integration must match {_INTEGRATION.pattern}, got {integration!r}")
    return f"{prefix}{{{integration}}}"


def stats_key(integration: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    return f"{integration_key_base(integration, prefix)}:stats"


def types_key(integration: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    return f"{integration_key_base(integration, prefix)}:types"


def event_key(integration: str, event_id: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    return f"{integration_key_base(integration, prefix)}:event:{event_id}"


class WebhookLedger:
    """Processed-event IDs of one integration. Cheap to create; safe to share between tasks.

    ``retention``: seconds an event ID is remembered (vendors retry for up to ~3 days; default 7 days).
    ``lease``: seconds a ``claim()`` stays exclusive while its block runs; if the process dies without
    releasing (SIGKILL, OOM), a redelivery after the lease is processed again. A block that runs longer
    than the lease may see a concurrent redelivery processed too — pick a lease above the handler's
    worst case. ``mark_processed`` claims for the whole retention instead (it cannot know when you
    finish). ``max_tracked``: how many recent ``mark_processed`` claims this object remembers the
    token of, for ``release``/``mark_done``.

    Redis errors propagate (``redis.exceptions.RedisError``): answer the vendor with a 5xx so it retries.
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        *,
        integration: str,
        retention: float = DEFAULT_RETENTION,
        lease: float = 600.0,
        prefix: str = DEFAULT_KEY_PREFIX,
        max_tracked: int = 10_000,
    ) -> None:
        if retention <= 0 or lease <= 0:
            raise ValueError("retention and lease must be positive numbers of seconds")
        self.integration = integration
        self.retention = retention
        self.lease = lease
        self._base = integration_key_base(integration, prefix)
        self._stats = f"{self._base}:stats"
        self._types = f"{self._base}:types"
        self._claim_script = redis.register_script(_CLAIM)
        self._done_script = redis.register_script(_DONE)
        self._release_script = redis.register_script(_RELEASE)
        self._owned: OrderedDict[str, str] = OrderedDict()  # event id → our claim value
        self._max_tracked = max_tracked

    @classmethod
    def from_config(
        cls, redis: redis.asyncio.Redis, *, integration: str, config: LedgerSettings, lease: float = 600.0
    ) -> WebhookLedger:
        """A ledger with the retention and key prefix of ``config`` (any object with ``retention`` seconds
        and ``key_prefix``, such as the integration's ``webhooks`` config section)."""
        return cls(redis, integration=integration, retention=config.retention, lease=lease, prefix=config.key_prefix)

    def _event_key(self, event_id: str) -> str:
        if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_EVENT_ID_LEN:
            raise ValueError(f"event_id must be a non-empty string of at most {MAX_EVENT_ID_LEN} characters")
        return f"{self._base}:event:{event_id}"

    async def _claim(
        self, event_id: str, *, ttl: float, event_type: str | None, received_at: float | None
    ) -> str | None:
        """Claim the event; returns our claim value if we were first, None for a duplicate."""
        key = self._event_key(event_id)
        if event_type is not None and not 1 <= len(event_type) <= MAX_EVENT_TYPE_LEN:
            raise ValueError(f"event_type must be 1 to {MAX_EVENT_TYPE_LEN} characters")
        value = f"{_PROCESSING}{uuid.uuid4().hex}"
        args = [value, _ms(ttl), "" if received_at is None else repr(float(received_at)), event_type or ""]
        first = await self._claim_script(keys=[key, self._stats, self._types], args=args)
        return value if int(first) == 1 else None

    async def mark_processed(
        self, event_id: str, *, event_type: str | None = None, received_at: float | None = None
    ) -> bool:
        """Record a delivery: True the first time this event ID is seen (process it), False for a
        duplicate (acknowledge it, don't process). ``received_at``: epoch seconds, default Redis time."""
        value = await self._claim(
            event_id, ttl=self.retention, event_type=event_type, received_at=received_at
        )
        if value is None:
            return False
        self._owned[event_id] = value
        self._owned.move_to_end(event_id)
        while len(self._owned) > self._max_tracked:
            self._owned.popitem(last=False)
        return True

    async def mark_done(self, event_id: str) -> bool:
        """Complete our claim (after which ``release`` can't remove it). False if it isn't ours."""
        value = self._owned.get(event_id)
        if value is None:
            return False
        done = await self._finish(event_id, value)  # on a Redis error the token stays: call again
        self._owned.pop(event_id, None)
        return done

    async def release(self, event_id: str) -> bool:
        """Processing failed: remove our claim so the vendor's retry is processed. Only a claim this
        object made and has not completed is removed; returns whether one was."""
        value = self._owned.get(event_id)
        if value is None:
            return False
        released = await self._give_back(event_id, value)  # on a Redis error the token stays: call again
        self._owned.pop(event_id, None)
        return released

    async def _finish(self, event_id: str, value: str) -> bool:
        done = await self._done_script(keys=[self._event_key(event_id)], args=[value, _ms(self.retention)])
        return int(done) == 1

    async def _give_back(self, event_id: str, value: str) -> bool:
        released = await self._release_script(keys=[self._event_key(event_id), self._stats], args=[value])
        return int(released) == 1

    @asynccontextmanager
    async def claim(
        self, event_id: str, *, event_type: str | None = None, received_at: float | None = None
    ) -> AsyncIterator[bool]:
        """``async with ledger.claim(id) as first:`` — ``first`` is True when this delivery should be
        processed. Leaving the block normally completes the claim; an exception (cancellation included)
        releases it so the redelivery is processed, then propagates."""
        value = await self._claim(event_id, ttl=self.lease, event_type=event_type, received_at=received_at)
        try:
            yield value is not None
        except BaseException:
            if value is not None:
                try:
                    await self._give_back(event_id, value)
                except Exception:  # keep the handler's exception; the lease still frees the event
                    log.warning("webhook %s/%s: could not release the claim", self.integration, event_id[:64],
                                exc_info=True)
            raise
        if value is not None and not await self._finish(event_id, value):
            log.warning(
                "webhook %s/%s: claim lease (%ss) ran out before processing finished; a redelivery may "
                "have been processed too",
                self.integration, event_id[:64], self.lease,
            )


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))
