"""The kit's traffic recorder on real Redis: the documented key format, many writer processes adding to
the same buckets, and Redis trouble that never reaches the caller (counts kept, then written; or dropped
past ``keep`` and counted as lost)."""

from __future__ import annotations

import asyncio
import textwrap

import aiohttp
import redis.asyncio
from processes import run_scripts
from redis_servers import SHARED_REDIS, OwnRedis
from targets import Reply, Target
from waiting import until

from integration_kit.calls import CallError, CallOutcome
from integration_kit.client import Integration
from integration_kit.errors import ErrorClass
from integration_kit.recorder import TrafficBuffer, TrafficRecorder
from integration_kit.retry import RetryPolicy
from integration_kit.traffic import bucket_key, bucket_of, decode_bucket, last_key

T0 = 1_700_000_005.0  # a fixed clock: bucket 1_700_000_000


def outcome(error_class: ErrorClass | None = None, *, status: int | None = 200, duration: float = 0.03,
            attempts: int = 1, throttle_wait: float = 0.0) -> CallOutcome:
    return CallOutcome(integration="payments", method="GET", error_class=error_class, status=status,
                       attempts=attempts, duration=duration, throttle_wait=throttle_wait)


async def fields(client: redis.asyncio.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}


async def test_a_flush_writes_the_documented_fields(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    rec = TrafficRecorder(shared_redis, "payments", prefix=prefix, clock=lambda: T0)
    rec.record(outcome(duration=0.03))
    rec.record(outcome(duration=0.2, attempts=3))
    rec.record(outcome(ErrorClass.HTTP_5XX, status=503, duration=1.7, attempts=2, throttle_wait=0.25))
    rec.record(outcome(ErrorClass.TIMEOUT, status=None, duration=90.0))
    assert await rec.flush()
    key = bucket_key("payments", 1_700_000_000, prefix)
    assert key == f"{prefix}{{payments}}:1700000000"
    assert await fields(shared_redis, key) == {
        "c:ok": "2", "c:http_5xx": "1", "c:timeout": "1",
        "s:200": "2", "s:503": "1",
        "l:0.05": "1", "l:0.25": "1", "l:2.5": "1", "l:+Inf": "1",
        "lsum": str(30_000 + 200_000 + 1_700_000 + 90_000_000),
        "r": "3", "t": "1", "tw": "250000",
    }
    assert 7000 < await shared_redis.ttl(key) <= 7200
    assert float(await shared_redis.get(last_key("payments", prefix))) == T0
    counts = decode_bucket(await fields(shared_redis, key))
    assert (counts.total, counts.errors, counts.retries, counts.throttled) == (4, 2, 3, 1)
    assert counts.latency_sum == 91.93 and counts.throttle_wait == 0.25 and counts.ignored == []


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio
    from integration_kit.calls import CallOutcome
    from integration_kit.recorder import TrafficBuffer, TrafficRecorder

    async def main():
        client = redis.asyncio.Redis.from_url(sys.argv[1])
        rec = TrafficRecorder(client, "payments", prefix=sys.argv[2], clock=lambda: 1_700_000_005.0)
        for i in range(500):
            rec.record(CallOutcome(integration="payments", method="GET", error_class="http_5xx" if i % 5 == 0 else None,
                                   status=200, attempts=1, duration=0.01))
            if i % 100 == 99:
                await rec.flush()
        await client.aclose()

    asyncio.run(main())
    """
)


async def test_many_writer_processes_add_to_the_same_bucket(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    await run_scripts(WRITER, [(SHARED_REDIS, prefix)] * 4)
    counts = decode_bucket(await fields(shared_redis, bucket_key("payments", 1_700_000_000, prefix)))
    assert counts.calls == {"ok": 1600, "http_5xx": 400}
    assert counts.statuses == {200: 2000}


async def test_with_redis_down_counts_wait_in_memory_then_old_ones_are_counted_as_lost(own_redis: OwnRedis) -> None:
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    now = [T0]
    rec = TrafficRecorder(client, "payments", keep=60.0, clock=lambda: now[0])
    await own_redis.stop()
    for _ in range(3):
        rec.record(outcome())  # never raises, never waits
    assert not await rec.flush()
    now[0] += 30  # a new bucket; the first is still kept
    rec.record(outcome(ErrorClass.AUTH, status=401))
    assert not await rec.flush()
    assert rec.stats.pending_buckets == 2 and rec.stats.lost == 0
    now[0] += 45  # the first bucket is past keep: dropped at the next failed flush, its 3 calls lost
    assert not await rec.flush()
    assert rec.stats.lost == 3 and rec.stats.pending_buckets == 1 and rec.stats.failed_flushes == 3
    await own_redis.start()
    assert await rec.flush()
    first = await fields(client, bucket_key("payments", bucket_of(T0)))
    kept = await fields(client, bucket_key("payments", bucket_of(T0 + 30)))
    latest = await fields(client, bucket_key("payments", bucket_of(now[0])))
    assert first == {}
    assert kept["c:auth"] == "1" and kept["s:401"] == "1"
    assert latest == {"lost": "3"}  # the loss, written when Redis answered again: the monitor shows it
    await client.aclose()


async def test_calls_left_unwritten_at_close_are_counted_as_lost(own_redis: OwnRedis, caplog) -> None:
    """Redis down when the service stops: the last flush fails and the process ends with its counts.
    They were gone with ``stats.lost`` still 0, so a service exporting it showed nothing missing."""
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    rec = TrafficRecorder(client, "payments", interval=60.0)
    rec.start()
    await own_redis.stop()
    for _ in range(3):
        rec.record(outcome())
    rec.record(outcome(ErrorClass.AUTH, status=401))
    await rec.close()
    assert rec.stats.lost == 4 and rec.stats.pending_buckets == 0
    assert "closed while Redis could not be written; 4 calls not recorded" in caplog.text
    await client.aclose()


async def test_redis_killed_mid_traffic_never_reaches_the_callers(own_redis: OwnRedis, target: Target) -> None:
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    target.route("/fail", Reply(status=400))
    kit = Integration("payments", redis=client, retry=RetryPolicy(attempts=1), flush_interval=0.05)
    results: list[str] = []

    async def caller(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
            while not stop.is_set():
                try:
                    async with http.get(target.url("/ok")) as resp:
                        results.append(str(resp.status))
                    await http.get(target.url("/fail"))
                except CallError as exc:
                    results.append(exc.error_class)
                await asyncio.sleep(0.005)

    async with kit:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(caller(stop)) for _ in range(4)]
        await until(lambda: kit.stats.calls >= 40, "40 calls")
        await own_redis.stop()
        before = kit.stats.calls
        await until(lambda: (kit.stats.calls - before, kit.stats.failed_flushes),
                    "100 calls and a failed flush with Redis down", holds=lambda seen: seen[0] >= 100 and seen[1] >= 1)
        stop.set()
        await asyncio.gather(*tasks)  # no caller saw anything but its own answers
        assert kit.stats.failed_flushes >= 1 and kit.stats.lost == 0  # still kept in memory: nothing lost yet
    assert set(results) == {"200", "http_4xx"}
    assert kit.stats.lost >= 100  # closed with Redis still down: the calls since the kill were never written
    await client.aclose()



def test_calls_land_in_the_bucket_of_their_time_across_flushes_and_a_clock_set_back() -> None:
    """The buffer keeps the bucket it is adding to at hand (a call's hot path): a new bucket when the
    clock leaves it, forwards or back, and never the one a flush took away."""
    now = [T0]
    buffer = TrafficBuffer(keep=300.0, clock=lambda: now[0])
    first, second = bucket_of(T0), bucket_of(T0) + 10
    buffer.add(None, 200, 0.01)
    now[0] = T0 + 10
    buffer.add(None, 200, 0.01)
    now[0] = T0 + 1  # set back (NTP): the first bucket again
    buffer.add(ErrorClass.HTTP_5XX, 503, 0.01)
    pending, lost = buffer.take()
    assert lost == 0 and {b: f.get("c:ok", 0) + f.get("c:http_5xx", 0) for b, f in pending.items()} == {
        first: 2, second: 1}
    buffer.add(None, 200, 0.01)  # same time, same bucket: but the counts before went with the flush
    again, _ = buffer.take()
    assert again == {first: {"c:ok": 1, "l:0.01": 1, "lsum": 10_000, "s:200": 1}}
    assert pending[first]["c:ok"] == 1  # not added to the taken counts


def test_count_adds_what_record_adds() -> None:
    """The kit's middleware counts a call without making a CallOutcome: the same fields either way."""
    by_record, by_count = (TrafficRecorder(redis.asyncio.Redis(), "payments", clock=lambda: T0) for _ in range(2))
    calls = [outcome(), outcome(ErrorClass.HTTP_5XX, status=503, duration=1.7, attempts=2, throttle_wait=0.25),
             outcome(ErrorClass.TIMEOUT, status=None, duration=90.0), outcome(status=299, duration=0.0)]
    calls.append(CallOutcome(integration="payments", method="GET", error_class=None, status=200, attempts=1,
                             duration=0.01, limiter_bypassed=True))
    for call in calls:
        by_record.record(call)
        by_count.count(call.error_class, call.status, call.duration, call.attempts, call.throttle_wait,
                       call.limiter_bypassed)
    assert by_record.buffer.take() == by_count.buffer.take()
    assert by_record.stats.recorded == by_count.stats.recorded == len(calls)
