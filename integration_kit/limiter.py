"""A rate limiter in Redis shared by every process of a service: GCRA (the generic cell rate algorithm)
in one atomic Lua script, written exactly as go-redis/redis_rate writes it, so the monitor reads its
usage with one line of config (``format: gcra, variant: redis_rate``; README, "The integration kit").

The key holds one number, the theoretical arrival time (TAT) of the next call in float seconds since
2017-01-01 UTC, with a TTL until the limiter is full again. A call is allowed when TAT − now ≤ the burst
allowance; every allowed call moves TAT on by one emission interval (``per / rate`` seconds). Redis'
own clock is "now", so the processes' clocks never matter.

Redis trouble never stops a call: when Redis fails (connection refused or reset, the client's own
``socket_timeout``, an error reply) the limiter lets the call through (fails open), counts it
(``bypassed``, and the failed command in ``errors``; the call's ``Slot`` says so, and the kit records it
in the traffic field ``b``), logs it once per outage, and leaves Redis alone
for ``cooldown`` seconds so a dead Redis costs one failed command per cooldown, not one per call.
A slow Redis is not trouble: a loaded machine can take a second to answer the script (a new
connection, the script's first load), and failing open then would let one process take a whole
window's worth on top of everyone else's share. The asyncio limiter waits up to ``max_wait`` seconds
(default 2) for an answer and treats only a longer silence as Redis down (redis-py's own retries of a
lost connection can take seconds); a blocking client is bounded by its own ``socket_timeout`` and
``retry`` settings.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

log = logging.getLogger(__name__)

KEY_PREFIX = "rate:"  # redis_rate's

# go-redis/redis_rate's allow script (v9/v10), but for the comments and its first line,
# redis.replicate_commands(): effects replication is the default since Redis 5 (Redis 7 ignores the call).
GCRA_SCRIPT = """
local rate_limit_key = KEYS[1]
local burst = ARGV[1]
local rate = ARGV[2]
local period = ARGV[3]
local cost = tonumber(ARGV[4])

local emission_interval = period / rate
local increment = emission_interval * cost
local burst_offset = emission_interval * burst

-- Redis' clock, relative to 2017-01-01 to keep the float's precision
local jan_1_2017 = 1483228800
local now = redis.call("TIME")
now = (now[1] - jan_1_2017) + (now[2] / 1000000)

local tat = redis.call("GET", rate_limit_key)
if not tat then
  tat = now
else
  tat = tonumber(tat)
end
tat = math.max(tat, now)

local new_tat = tat + increment
local allow_at = new_tat - burst_offset
local diff = now - allow_at
local remaining = diff / emission_interval

if remaining < 0 then
  return {0, 0, tostring(diff * -1), tostring(tat - now)}
end

local reset_after = new_tat - now
if reset_after > 0 then
  redis.call("SET", rate_limit_key, new_tat, "EX", math.ceil(reset_after))
end
return {cost, remaining, tostring(-1), tostring(reset_after)}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """``rate`` calls per ``per`` seconds, shared by every process using the same ``key``; up to
    ``burst`` at once (default: ``rate``, i.e. a full window's worth). ``key`` defaults to
    ``rate:<integration>``."""

    rate: int
    per: float = 1.0
    burst: int | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if self.rate < 1 or self.per <= 0:
            raise ValueError(f"rate must be at least 1 and per greater than 0, got {self.rate!r}/{self.per!r}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst!r}")

    @property
    def emission(self) -> float:
        """Seconds between calls at the limit."""
        return self.per / self.rate


class LimiterTimeout(Exception):
    """No slot before the call's deadline: the call fails as ``rate_limited`` without being sent."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        super().__init__(f"rate_limited: the shared rate limiter has no slot for {wait:.2f}s, past the deadline")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds until a slot frees up (0 when allowed)
    bypassed: bool = False  # allowed without asking Redis (it failed): the limit was not applied


@dataclass(frozen=True, slots=True)
class Slot:
    """What ``acquire`` got: the seconds it waited, and whether the limiter let the call through without
    Redis' say (Redis failed: the call is counted in the traffic field ``b``)."""

    waited: float
    bypassed: bool = False


_BYPASSED = Decision(True, 0.0, bypassed=True)


class _Gcra:
    """What both limiters share: the script's arguments, its reply, the breaker."""

    def __init__(self, limit: RateLimit, *, integration: str, cooldown: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.key = limit.key or f"{KEY_PREFIX}{integration}"
        self._args = (limit.burst or limit.rate, limit.rate, repr(float(limit.per)), 1)
        self._cooldown = cooldown
        self._clock = clock
        self._closed_until = 0.0  # while Redis failed recently: let calls through without asking it
        self.bypassed = 0  # calls let through without the limiter (Redis trouble)
        self.errors = 0  # failed Redis commands

    def skipping(self) -> Decision | None:
        """A pass while Redis is left alone after a failure (counted), else None: ask Redis."""
        if self._closed_until and self._clock() < self._closed_until:
            self.bypassed += 1
            return _BYPASSED
        return None

    def failed(self, exc: BaseException, *, waited: float | None = None) -> Decision:
        """Fail open: Redis failed (or, with ``waited``, did not answer in that many seconds)."""
        self.errors += 1
        self.bypassed += 1
        if not self._closed_until:  # once per outage: ``decide`` logs the end of it
            why = type(exc).__name__ if waited is None else f"no answer within {waited:g}s"
            log.warning("rate limiter %s: Redis failed (%s); letting calls through without the limiter, "
                        "asking Redis again every %gs", self.key, why, self._cooldown)
        self._closed_until = self._clock() + self._cooldown
        return _BYPASSED

    def decide(self, reply: Any) -> Decision:
        if self._closed_until:
            log.info("rate limiter %s: Redis answers again (%d calls let through so far)", self.key, self.bypassed)
            self._closed_until = 0.0
        allowed, _remaining, retry_after, _reset = reply
        if int(allowed):
            return Decision(True, 0.0)
        return Decision(False, float(retry_after))

    def pause(self, decision: Decision, deadline: float) -> float:
        """Wait before asking again: the slot's time plus up to half an emission interval of jitter, so
        the processes waiting for the same slot do not all ask at the same instant. ``LimiterTimeout``
        when that ends at or past ``deadline``."""
        pause = decision.retry_after + random.random() * self.limit.emission / 2
        if self._clock() + pause >= deadline:
            raise LimiterTimeout(decision.retry_after)
        return pause


ASKS_IN_FLIGHT = 8  # Redis asks one asyncio limiter makes at once (see RateLimiter)


class RateLimiter(_Gcra):
    """The limiter for asyncio code (``redis.asyncio.Redis``)."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        limit: RateLimit,
        *,
        integration: str,
        cooldown: float = 5.0,
        max_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(limit, integration=integration, cooldown=cooldown, clock=clock)
        self._script = redis.register_script(GCRA_SCRIPT)
        self._max_wait = max_wait
        # Asks in flight at once. redis-py's asyncio pool (100 connections by default in redis-py 8)
        # fails at once when all are taken: a burst of 300 concurrent calls made the limiter itself
        # exhaust it, take that for a Redis outage and let 200 calls through unlimited. One ask is one
        # short script, so a few connections serve thousands of calls a second.
        self._asking = asyncio.Semaphore(ASKS_IN_FLIGHT)

    async def try_acquire(self) -> Decision:
        if (passed := self.skipping()) is not None:
            return passed
        try:
            async with asyncio.timeout(self._max_wait), self._asking:  # (a queue for a slot counts in max_wait)
                reply = await self._script(keys=[self.key], args=self._args)
        except TimeoutError as exc:  # asyncio's: no answer within max_wait (a redis-py timeout is an error)
            return self.failed(exc, waited=self._max_wait)
        except (RedisError, OSError) as exc:
            return self.failed(exc)
        return self.decide(reply)

    async def acquire(self, *, deadline: float) -> Slot:
        """Wait for a slot. ``LimiterTimeout`` when the next slot comes at or after ``deadline`` (a
        ``time.monotonic()`` value)."""
        waited = 0.0
        while True:
            decision = await self.try_acquire()
            if decision.allowed:
                return Slot(waited, decision.bypassed)
            pause = self.pause(decision, deadline)
            await asyncio.sleep(pause)
            waited += pause


class SyncRateLimiter(_Gcra):
    """The limiter for blocking code (``redis.Redis``), e.g. with the requests adapter."""

    def __init__(
        self,
        redis: redis.Redis,
        limit: RateLimit,
        *,
        integration: str,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(limit, integration=integration, cooldown=cooldown, clock=clock)
        self._script = redis.register_script(GCRA_SCRIPT)

    def try_acquire(self) -> Decision:
        if (passed := self.skipping()) is not None:
            return passed
        try:
            return self.decide(self._script(keys=[self.key], args=self._args))
        except (RedisError, OSError) as exc:
            return self.failed(exc)

    def acquire(self, *, deadline: float) -> Slot:
        waited = 0.0
        while True:
            decision = self.try_acquire()
            if decision.allowed:
                return Slot(waited, decision.bypassed)
            pause = self.pause(decision, deadline)
            time.sleep(pause)
            waited += pause
