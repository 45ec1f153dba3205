"""The kit's shared rate limiter on real Redis: 5 processes × 4 tasks share one limiter of N per window
and get N slots (±1); waits follow the limit; the monitor reads the key with one line of quota config;
a dead Redis lets calls through."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
import uuid

import aiohttp
import pytest
import redis.asyncio
from processes import run_scripts
from redis_servers import SHARED_REDIS, OwnRedis
from targets import Target

from integration_kit.calls import CallError
from integration_kit.client import Integration
from integration_kit.errors import ErrorClass
from integration_kit.limiter import RateLimit, RateLimiter
from monitor.quota.reader import read_redis_quota
from monitor.settings.quota import RedisQuotaConfig

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    import redis.asyncio
    from integration_kit.limiter import RateLimit, RateLimiter

    url, key, n, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

    async def task(limiter):
        allowed = 0
        for _ in range(n):  # every task asks n times: 20 tasks ask 20 n times for n slots
            allowed += (await limiter.try_acquire()).allowed
        return allowed

    async def main():
        client = redis.asyncio.Redis.from_url(url)
        limiter = RateLimiter(client, RateLimit(rate=n, per=3600.0, key=key), integration="x")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        allowed = sum(await asyncio.gather(*(task(limiter) for _ in range(4))))
        print(allowed, limiter.bypassed)
        await client.aclose()

    asyncio.run(main())
    """
)


async def test_five_processes_of_four_tasks_share_one_limit(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    n = 40
    key = f"{prefix}rate:payments"
    start_at = time.time() + 1.5  # all processes start asking at once
    outputs = await run_scripts(WORKER, [(SHARED_REDIS, key, str(n), str(start_at))] * 5)
    allowed = [int(out.split()[0]) for out in outputs]
    bypassed = [int(out.split()[1]) for out in outputs]
    # A process whose Redis calls failed (or took over max_wait) would let calls through: say so first.
    assert bypassed == [0] * 5, f"calls let through without the limiter: {bypassed}; allowed: {allowed}"
    # One slot per 90 s refills at this rate: a slower machine could at most see one more.
    assert n - 1 <= sum(allowed) <= n + 1, allowed


async def test_acquire_waits_for_the_next_slot(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    limiter = RateLimiter(shared_redis, RateLimit(rate=5, per=1.0, burst=1, key=f"{prefix}rate:w"), integration="w")
    started = time.monotonic()
    slots = [await limiter.acquire(deadline=time.monotonic() + 5) for _ in range(4)]
    waits = [slot.waited for slot in slots]
    assert not any(slot.bypassed for slot in slots)
    elapsed = time.monotonic() - started
    assert waits[0] == 0.0 and all(w > 0 for w in waits[1:])
    assert elapsed >= 3 * 0.2 - 0.02  # one slot per 200 ms after the first


async def test_a_call_that_cannot_get_a_slot_before_its_deadline_is_rate_limited_and_not_sent(
    shared_redis: redis.asyncio.Redis, prefix: str, target: Target
) -> None:
    limit = RateLimit(rate=1, per=60.0, key=f"{prefix}rate:slow")
    kit = Integration("slow", redis=shared_redis, rate_limit=limit, timeout=0.5, record=False)
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
        async with http.get(target.url("/ok")) as resp:
            assert resp.status == 200
        with pytest.raises(CallError) as caught:
            await http.get(target.url("/ok"))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert "shared rate limiter has no slot" in caught.value.detail
    assert len(target.hits("/ok")) == 1


async def test_the_monitor_reads_the_limiter_with_one_line_of_quota_config(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    limit = RateLimit(rate=50, per=60.0, key=f"{prefix}rate:crm")
    limiter = RateLimiter(shared_redis, limit, integration="crm")
    for _ in range(40):
        assert (await limiter.try_acquire()).allowed
    cfg = RedisQuotaConfig.model_validate(
        {"name": "api", "source": "redis", "format": "gcra", "variant": "redis_rate", "match": f"{prefix}rate:crm",
         "rate": 50, "period": "1m", "burst": 50}
    )
    reading = await read_redis_quota(shared_redis, cfg)
    obs = reading.observation
    assert obs.limit == 50
    assert obs.used == pytest.approx(40, abs=0.5)  # a little has leaked out since (50 per minute)
    assert obs.ratio is not None and obs.ratio >= 0.79  # the 80 % warning fires at this usage


async def test_a_burst_beyond_the_redis_pool_is_limited_not_let_through(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """More calls at once than the client's pool has connections (redis-py 8: 100 by default; here
    10): the pool fails at once when exhausted, and the limiter took that for a Redis outage and let
    the rest through unlimited."""
    client = redis.asyncio.Redis.from_url(SHARED_REDIS, max_connections=10)
    limiter = RateLimiter(client, RateLimit(rate=1, per=3600.0, burst=1, key=f"{prefix}rate:burst"),
                          integration="burst")
    try:
        decisions = await asyncio.gather(*(limiter.try_acquire() for _ in range(100)))
    finally:
        await client.aclose()
    assert not [d for d in decisions if d.bypassed]
    assert sum(d.allowed for d in decisions) == 1  # the burst of one, the other 99 told to wait


async def test_a_slow_redis_is_waited_for_not_let_through(own_redis: OwnRedis, caplog) -> None:
    """A loaded machine can take most of a second to answer the limiter (five processes of four tasks each
    once got [40, 0, 40, 0, 0]: a process whose first ask took over 0.25 s let all its calls through)."""
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url, socket_timeout=5.0)
    pauser = redis.asyncio.Redis.from_url(own_redis.url)
    limiter = RateLimiter(client, RateLimit(rate=1, per=60.0, key="rate:slow"), integration="x")
    assert (await limiter.try_acquire()).allowed  # the only slot of the minute
    try:
        # Redis answers nobody for 1 s from when this returns, well inside the limiter's 2 s max_wait. The
        # reply says the pause is on (a script started from another task and a sleep to let it begin once let
        # the limiter's ask in first on a loaded machine: then Redis was not slow and the test tested nothing).
        assert await pauser.client_pause(1000)
        paused_at = time.monotonic()
        decision = await limiter.try_acquire()
        waited = time.monotonic() - paused_at
    finally:
        await pauser.aclose()
        await client.aclose()
    assert not decision.allowed and decision.retry_after > 50  # Redis' answer, not a pass
    assert limiter.errors == 0 and limiter.bypassed == 0
    assert "letting calls through" not in caplog.text
    assert waited > 0.3, "Redis was not slow: the test did not test anything"


async def test_with_redis_gone_calls_go_through_and_redis_is_left_alone_for_a_while(
    own_redis: OwnRedis, caplog
) -> None:
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    key = f"rate:{uuid.uuid4().hex}"
    limiter = RateLimiter(client, RateLimit(rate=1, per=60.0, key=key), integration="x", cooldown=0.5)
    assert (await limiter.try_acquire()).allowed
    assert not (await limiter.try_acquire()).allowed
    await own_redis.stop()
    with caplog.at_level(logging.INFO, logger="integration_kit.limiter"):
        decisions = [await limiter.try_acquire() for _ in range(20)]
    assert all(d.allowed and d.bypassed for d in decisions)
    assert limiter.errors == 1 and limiter.bypassed == 20  # one failed command, then the cooldown
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "letting calls through" in warnings[0].getMessage()  # once per outage
    await own_redis.start()  # empty: the limit starts again
    await asyncio.sleep(0.6)  # past the 0.5 s cooldown: a time is the condition (load only makes it longer)
    assert (await limiter.try_acquire()).allowed
    assert not (await limiter.try_acquire()).allowed
    await client.aclose()
