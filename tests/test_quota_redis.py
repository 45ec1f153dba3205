"""Reading rate-limit counters from a real Redis, written the way each library writes them.

``limits`` writes its own keys here (sync Redis storage) and the reading must agree with what limits
itself reports. The other libraries run elsewhere (Node, Go, Java, Ruby, Rust): their documented
scripts and commands are replayed below. Every test uses its own key tag on the shared Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import limits
import limits.storage
import limits.strategies
import pytest
import redis
import redis.asyncio
from redis_servers import SHARED_REDIS, tag_of

from integration_kit.limiter import GCRA_SCRIPT
from integration_kit.limiter_formats import REDIS_RATE_EPOCH, KeyReading, reader_for
from monitor.quota.reader import QuotaReader, QuotaReading
from monitor.settings.quota import RedisQuotaConfig


@pytest.fixture
def tag(prefix: str) -> str:
    """The test's unique tag, inside its key names (``rl:<tag>:…``; deleted by the shared_redis fixture)."""
    return tag_of(prefix)


@pytest.fixture
def storage(shared_redis: redis.asyncio.Redis) -> Iterator[limits.storage.RedisStorage]:
    store = limits.storage.RedisStorage(SHARED_REDIS)
    yield store
    store.storage.close()


def quota(**fields: Any) -> RedisQuotaConfig:
    return RedisQuotaConfig(name="q", source="redis", **fields)


Read = Callable[[redis.asyncio.Redis, RedisQuotaConfig], Awaitable[QuotaReading]]


@pytest.fixture(params=["scripts", "plain commands"])
def read(request: pytest.FixtureRequest) -> Read:
    """Every test reads both ways: gathered by the server-side scripts, and with the plain commands (what
    a Redis user without +eval gets). One decoder per format serves both."""
    scripts = request.param == "scripts"

    async def read_(conn: redis.asyncio.Redis, cfg: RedisQuotaConfig) -> QuotaReading:
        reader = QuotaReader(cfg, scripts=scripts)
        reading = await reader.read(conn)
        assert reader.scripts == scripts  # never fell back: the path under test is the one that read
        return reading

    return read_


def remaining(reading: QuotaReading) -> float:
    obs = reading.observation
    assert obs.limit is not None and obs.used is not None
    return max(0.0, obs.limit - obs.used)


def reset_at(reading: QuotaReading) -> float:
    assert reading.observation.reset_seconds is not None
    return reading.observation.observed_at + reading.observation.reset_seconds


# ---- limits: the real library writes, we read, the library reports ----------------------------------


async def test_limits_fixed_window_matches_the_library(shared_redis, storage, tag, read):
    limiter = limits.strategies.FixedWindowRateLimiter(storage)
    item = limits.RateLimitItemPerMinute(10)
    for _ in range(7):
        assert limiter.hit(item, tag, "index")
    cfg = quota(format="limits", match=f"LIMITS:*LIMITER/{tag}/*")

    reading = await read(shared_redis, cfg)
    stats = limiter.get_window_stats(item, tag, "index")
    assert reading.observation.used == 7 and reading.observation.limit == 10
    assert reading.observation.window_seconds == 60
    assert remaining(reading) == stats.remaining == 3
    assert abs(reset_at(reading) - stats.reset_time) <= 1.0
    assert reading.keys == 1 and reading.fixed_window

    for _ in range(5):  # past the limit: the library keeps counting, we report it raw
        limiter.hit(item, tag, "index")
    reading = await read(shared_redis, cfg)
    assert reading.observation.used == 12 and reading.observation.ratio == pytest.approx(1.2)
    assert limiter.get_window_stats(item, tag, "index").remaining == remaining(reading) == 0


@contextlib.contextmanager
def library_clock(at: float) -> Iterator[None]:
    """``time.time()`` frozen at ``at`` while the library (synchronous: nothing else runs meanwhile) stamps
    an entry or says what its window holds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(limits.strategies.time, "time", lambda: at)  # the time module itself: the storage's too
        yield


async def test_limits_moving_window_matches_the_library(shared_redis, storage, tag, read):
    # Which entries are in the window is set by their stamps, not by sleeps: the entries the window must have
    # left are stamped a window ago, and the library is asked at the instant the reader read (Redis' TIME).
    # Sleeps of 0.8 s in a 1 s window (the reader's TIME and the library's stats a second apart on a loaded
    # machine) failed 2 of 3 runs at nice 19 under load 12.
    limiter = limits.strategies.MovingWindowRateLimiter(storage)
    item = limits.RateLimitItemPerMinute(5)  # the key lives a minute from its last entry
    key = f"LIMITS:LIMITER/{tag}/5/1/minute"
    cfg = quota(format="limits", match=f"LIMITS:*LIMITER/{tag}/*")

    def library_at(instant: float) -> limits.WindowStats:
        with library_clock(instant):
            return limiter.get_window_stats(item, tag)

    for _ in range(3):
        assert limiter.hit(item, tag)
    reading = await read(shared_redis, cfg)  # every entry inside the window: one round trip for the keys
    stats = library_at(reading.observation.observed_at)
    assert reading.observation.used == 3 and remaining(reading) == stats.remaining == 2
    assert reset_at(reading) == pytest.approx(stats.reset_time, abs=1e-3)
    assert not reading.fixed_window

    # Three entries that left the window while the key lives on (a fourth entry renewed its TTL): the oldest
    # entry is stale, so a follow-up LRANGE counts the live ones.
    await shared_redis.delete(key)
    with library_clock(time.time() - 61):
        for _ in range(3):
            assert limiter.hit(item, tag)
    assert limiter.hit(item, tag)
    assert await shared_redis.llen(key) == 4
    reading = await read(shared_redis, cfg)
    stats = library_at(reading.observation.observed_at)
    assert reading.observation.used == 1 and remaining(reading) == stats.remaining == 4
    assert reset_at(reading) == pytest.approx(stats.reset_time, abs=1e-3)


def limits_sliding_stats_at_one_instant(
    limiter: limits.strategies.SlidingWindowCounterRateLimiter,
    storage: limits.storage.RedisStorage,
    item: limits.RateLimitItem,
    tag: str,
) -> tuple[limits.WindowStats, list[Any], float]:
    """The library's window stats, the raw reply of its own read script behind them, and the instant it
    called "now" (frozen: its reset is ``now`` + seconds computed from that reply)."""
    replies: list[Any] = []
    script = storage.lua_sliding_window

    def recording(keys: list[str], args: list[Any]) -> Any:
        replies.append(script(keys, args))
        return replies[-1]

    instant = time.time()
    storage.lua_sliding_window = recording
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(limits.strategies.time, "time", lambda: instant)
            stats = limiter.get_window_stats(item, tag)
    finally:
        storage.lua_sliding_window = script
    assert len(replies) == 1
    return stats, replies[0], instant


async def test_limits_sliding_window_counter_matches_the_library(shared_redis, storage, tag, read):
    limiter = limits.strategies.SlidingWindowCounterRateLimiter(storage)
    item = limits.RateLimitItemPerSecond(10, 2)
    for _ in range(6):
        assert limiter.hit(item, tag)
    key = f"LIMITS:{{LIMITER/{tag}/10/2/second}}"
    cfg = quota(format="limits", match=f"LIMITS:*LIMITER/{tag}/*")
    decoder = reader_for(cfg)

    async def agree() -> None:
        # limits' own read renames keys when the window moved on, so read before and after it: the
        # weighted count only falls as time passes, so the library's answer lies between our two, and
        # so does its reset (now + the PTTL modulo the time one unit takes to free up: that only moves
        # later, in steps, as the PTTL falls past a multiple of it). The slack covers our TIME being read
        # a round trip before our PTTLs, and the library's "now" after its script, on a loaded machine.
        before = await read(shared_redis, cfg)
        stats, (previous, previous_ttl, current, current_ttl), instant = limits_sliding_stats_at_one_instant(
            limiter, storage, item, tag
        )
        after = await read(shared_redis, cfg)
        assert remaining(before) <= stats.remaining <= remaining(after)
        assert reset_at(before) - 1.0 <= stats.reset_time <= reset_at(after) + 1.0
        assert before.keys == after.keys == 1  # the current/previous pair is one key

        # At one instant: the decoder given exactly the values limits' script returned (its keys as the
        # plain commands read them: MGET of both, then the PTTL of each) says what the library said.
        plan = decoder.plan([key], instant)
        assert [command[0] for command in plan.commands] == ["MGET", "PTTL", "PTTL"]
        [(_, reading)] = plan.decode([[current, previous], current_ttl, previous_ttl])
        assert isinstance(reading, KeyReading) and reading.limit == 10
        assert max(0.0, 10 - reading.used) == stats.remaining
        assert instant + reading.reset_seconds == pytest.approx(stats.reset_time, abs=1e-9)

    await agree()
    before = await read(shared_redis, cfg)
    assert before.observation.used == 6 and before.observation.limit == 10

    # After one window the "current" key is really the previous window (the library moves it on its
    # next call); the reader must weigh it as previous without renaming anything. A time is the condition:
    # 0.3 s into the next 2 s window (the key lives two windows: the loop would have to stand still 1.7 s
    # past this timer for the weighing to find nothing).
    await asyncio.sleep(2.3)
    names = [k.decode() async for k in shared_redis.scan_iter(match=f"*{tag}*")]
    assert names == [key]
    replayed = await read(shared_redis, cfg)
    assert 0 < replayed.observation.used < 6
    await agree()
    assert [k async for k in shared_redis.scan_iter(match=f"*{tag}*/-1")]  # the library renamed, we did not


async def test_limits_key_without_prefix(shared_redis, tag, read):
    # limits < 3.7 wrote its keys without the "LIMITS:" prefix (same incr_expire script).
    key = f"LIMITER/{tag}/api/100/1/hour"
    await shared_redis.eval(
        "local c = redis.call('incrby', KEYS[1], ARGV[2]) if tonumber(c) == tonumber(ARGV[2]) then "
        "redis.call('expire', KEYS[1], ARGV[1]) end return c", 1, key, 3600, 42,
    )
    reading = await read(shared_redis, quota(format="limits", match=f"*LIMITER/{tag}/*"))
    assert (reading.observation.used, reading.observation.limit, reading.observation.window_seconds) == (42, 100, 3600)
    assert 3590 < (reading.observation.reset_seconds or 0) <= 3600


# ---- counters: rate-limit-redis, Rack::Attack ------------------------------------------------------

# rate-limit-redis (express) increment script: INCR, then PEXPIRE when new (or when asked to reset).
RATE_LIMIT_REDIS = """
local totalHits = redis.call("INCR", KEYS[1])
local timeToExpire = redis.call("PTTL", KEYS[1])
if timeToExpire <= 0 or ARGV[1] == "1" then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
  timeToExpire = tonumber(ARGV[2])
end
return { totalHits, timeToExpire }
"""


async def test_counter_rate_limit_redis(shared_redis, tag, read):
    for ip, hits in (("10.0.0.1", 3), ("10.0.0.2", 9), ("10.0.0.3", 1)):
        for _ in range(hits):
            await shared_redis.eval(RATE_LIMIT_REDIS, 1, f"rl:{tag}:{ip}", "0", 60_000)
    reading = await read(shared_redis, quota(format="counter", match=f"rl:{tag}:*", limit=10, window="1m"))
    obs = reading.observation
    assert (obs.used, obs.limit, obs.window_seconds) == (9, 10, 60)
    assert reading.busiest_key == f"rl:{tag}:10.0.0.2"
    assert reading.keys == 3 and reading.keys_near_limit == 1
    assert 59 < (obs.reset_seconds or 0) <= 60


async def test_counter_rack_attack(shared_redis, tag, read):
    period = 60
    now = int(time.time())
    key = f"rack::attack:{now // period}:{tag}-req/ip:1.2.3.4"
    for _ in range(4):  # the Redis cache store proxy: INCRBY and EXPIRE in one pipeline
        async with shared_redis.pipeline(transaction=False) as pipe:
            pipe.incrby(key, 1)
            pipe.expire(key, period - now % period + 1)
            await pipe.execute()
    reading = await read(shared_redis, quota(format="counter", match=f"rack::attack:*:{tag}-req/ip:*", limit=5))
    assert reading.observation.used == 4 and reading.observation.ratio == pytest.approx(0.8)
    assert 0 < (reading.observation.reset_seconds or 0) <= period + 1


async def test_rate_limiter_flexible(shared_redis, tag, read):
    points, duration = 5, 60
    key = f"rlflx:{tag}:user-1"

    async def consume(n: int) -> None:  # RateLimiterRedis._upsert: SET 0 EX NX, INCRBY, PTTL in MULTI
        async with shared_redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=duration, nx=True)
            pipe.incrby(key, n)
            pipe.pttl(key)
            await pipe.execute()

    await consume(1)
    await consume(2)
    cfg = quota(format="rate_limiter_flexible", match=f"rlflx:{tag}:*", limit=points, window="60s")
    reading = await read(shared_redis, cfg)
    assert (reading.observation.used, reading.observation.limit) == (3, 5)
    assert 59 < (reading.observation.reset_seconds or 0) <= 60

    await shared_redis.set(key, points + 1, ex=300)  # block(): overwritten with points + 1 for the block duration
    reading = await read(shared_redis, cfg)
    assert reading.observation.ratio == pytest.approx(1.2)
    assert 299 < (reading.observation.reset_seconds or 0) <= 300


# ---- sliding log: PyrateLimiter -------------------------------------------------------------------

# PyrateLimiter's RedisBucket PUT_ITEM script: one ZADD member per unit of weight, score = now.
PYRATE_PUT = """
local bucket = KEYS[1]
local now = ARGV[1]
local space_required = tonumber(ARGV[2])
local item_name = ARGV[3]
local rates_count = tonumber(ARGV[4])
for i=1,rates_count do
    local offset = (i - 1) * 2
    local interval = tonumber(ARGV[5 + offset])
    local limit = tonumber(ARGV[5 + offset + 1])
    local count = redis.call('ZCOUNT', bucket, now - interval, now)
    local space_available = limit - tonumber(count)
    if space_available < space_required then
        return i - 1
    end
end
for i=1,space_required do
    redis.call('ZADD', bucket, now, item_name..i)
end
return -1
"""


async def test_sliding_log_pyrate_limiter(shared_redis, tag, read):
    bucket = f"{tag}:bucket"
    seconds, micros = await shared_redis.time()
    now_ms = seconds * 1000 + micros // 1000
    rate = (60_000, 10)  # 10 per minute
    # Items from two minutes ago are outside the window (PyrateLimiter leaves them for its leaker).
    assert await shared_redis.eval(PYRATE_PUT, 1, bucket, now_ms - 120_000, 3, f"old:{uuid.uuid4()}:", 1, *rate) == -1
    for weight in (1, 1, 2, 3):
        item = f"x:{uuid.uuid4()}:"
        assert await shared_redis.eval(PYRATE_PUT, 1, bucket, now_ms - 30_000, weight, item, 1, *rate) == -1
    assert await shared_redis.eval(PYRATE_PUT, 1, bucket, now_ms, 5, f"big:{uuid.uuid4()}:", 1, *rate) == 0  # refused

    reading = await read(shared_redis, quota(format="sliding_log", match=f"{tag}:bucket", limit=10, window="1m"))
    assert reading.observation.used == 7 and reading.observation.limit == 10
    assert 29 <= (reading.observation.reset_seconds or 0) <= 31  # the oldest in-window entry leaves in 30s
    assert not reading.fixed_window


async def test_sliding_log_in_seconds(shared_redis, tag, read):
    seconds, _ = await shared_redis.time()
    await shared_redis.zadd(f"{tag}:log", {"a": seconds - 100, "b": seconds - 5, "c": seconds - 1})
    reading = await read(
        shared_redis, quota(format="sliding_log", match=f"{tag}:log", limit=3, window="10s", time_unit="s")
    )
    assert reading.observation.used == 2 and 4 <= (reading.observation.reset_seconds or 0) <= 6


# ---- token bucket: Spring Cloud Gateway, hash buckets ------------------------------------------------

# Spring Cloud Gateway's request_rate_limiter.lua (the server clock variant).
SPRING_TOKEN_BUCKET = """
local tokens_key = KEYS[1]
local timestamp_key = KEYS[2]
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local now = tonumber(redis.call('TIME')[1])
local requested = tonumber(ARGV[4])
local fill_time = capacity/rate
local ttl = math.floor(fill_time*2)
local last_tokens = tonumber(redis.call("get", tokens_key))
if last_tokens == nil then
  last_tokens = capacity
end
local last_refreshed = tonumber(redis.call("get", timestamp_key))
if last_refreshed == nil then
  last_refreshed = 0
end
local delta = math.max(0, now-last_refreshed)
local filled_tokens = math.min(capacity, last_tokens+(delta*rate))
local allowed = filled_tokens >= requested
local new_tokens = filled_tokens
local allowed_num = 0
if allowed then
  new_tokens = filled_tokens - requested
  allowed_num = 1
end
if ttl > 0 then
  redis.call("setex", tokens_key, ttl, new_tokens)
  redis.call("setex", timestamp_key, ttl, now)
end
return { allowed_num, new_tokens }
"""


async def test_token_bucket_spring_cloud_gateway(shared_redis, tag, read):
    rate, capacity = 1, 20
    keys = [f"request_rate_limiter.{{{tag}.user}}.tokens", f"request_rate_limiter.{{{tag}.user}}.timestamp"]
    for _ in range(12):
        await shared_redis.eval(SPRING_TOKEN_BUCKET, 2, *keys, rate, capacity, "", 1)
    cfg = quota(format="token_bucket", match=f"request_rate_limiter.{{{tag}.*", capacity=capacity, rate=rate)
    reading = await read(shared_redis, cfg)
    # What the gateway itself would grant right now: the script with 0 tokens requested.
    _, available = await shared_redis.eval(SPRING_TOKEN_BUCKET, 2, *keys, rate, capacity, "", 0)
    assert reading.keys == 1  # .tokens and .timestamp are one bucket
    assert reading.observation.limit == capacity
    # The gateway counts refill in whole seconds of TIME and replies with an integer: within one token.
    assert abs((capacity - (reading.observation.used or 0)) - available) <= rate + 1
    assert reading.observation.used == pytest.approx(12, abs=rate * 2)


async def test_token_bucket_hash_in_ms(shared_redis, tag, read):
    seconds, micros = await shared_redis.time()
    now_ms = seconds * 1000 + micros // 1000
    await shared_redis.hset(f"{tag}:tb", mapping={"tokens": 3, "timestamp": now_ms - 1000})
    cfg = quota(format="token_bucket", match=f"{tag}:tb", capacity=10, rate=2, layout="hash", time_unit="ms")
    reading = await read(shared_redis, cfg)
    assert reading.observation.used == pytest.approx(5, abs=0.2)  # 3 tokens + 1 s × 2/s = 5 left of 10
    assert reading.observation.reset_seconds == pytest.approx(2.5, abs=0.2)


# ---- GCRA: redis_rate (Go), redis-cell -----------------------------------------------------------

# redis_rate v10 allowN script: the kit's limiter runs it unchanged (integration_kit.limiter).
REDIS_RATE_ALLOW_N = GCRA_SCRIPT


async def test_gcra_redis_rate(shared_redis, tag, read):
    key = f"rate:{tag}:user"
    limit = (10, 10, 60)  # burst 10, rate 10 per minute
    for _ in range(4):
        await shared_redis.eval(REDIS_RATE_ALLOW_N, 1, key, *limit, 1)
    cfg = quota(format="gcra", match=f"rate:{tag}:*", variant="redis_rate", rate=10, period="1m", burst=10)
    reading = await read(shared_redis, cfg)
    peek = await shared_redis.eval(REDIS_RATE_ALLOW_N, 1, key, *limit, 0)  # cost 0: what redis_rate reports
    assert reading.observation.limit == 10
    assert peek[1] - 1 <= math.floor(remaining(reading)) <= peek[1]  # its reply is truncated to an integer
    assert reading.observation.used == pytest.approx(4, abs=0.05)
    assert reading.observation.reset_seconds == pytest.approx(24, abs=0.5)  # 4 × 6 s emission interval
    raw = float(await shared_redis.get(key))
    assert raw + REDIS_RATE_EPOCH == pytest.approx(time.time() + 24, abs=1)


# redis-cell's CL.THROTTLE algorithm (GCRA in nanoseconds, limit = burst + 1), stored with SET … PX.
REDIS_CELL_THROTTLE = """
local key = KEYS[1]
local burst = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local quantity = tonumber(ARGV[4])
local t = redis.call("TIME")
local now = t[1] * 1000000000 + t[2] * 1000
local emission = period * 1000000000 / count
local dvt = emission * (burst + 1)
local increment = emission * quantity
local tat = tonumber(redis.call("GET", key)) or now
if tat < now then tat = now end
local new_tat = tat + increment
local allow_at = new_tat - dvt
local diff = now - allow_at
if diff < 0 then
  return {1, burst + 1, 0}
end
local ttl = math.floor((new_tat - now) / 1000000)
if ttl > 0 then
  redis.call("SET", key, string.format("%d", new_tat), "PX", ttl)
end
return {0, burst + 1, math.floor(diff / emission)}
"""


async def test_gcra_redis_cell(shared_redis, tag, read):
    key = f"{tag}:cell"
    # CL.THROTTLE key 5 1 1: burst 5, 1 per second → limit 6. Three calls put the TAT 3 s ahead and the key
    # lives that long: a loaded machine's pauses between these lines cannot let it expire before the read.
    args = (5, 1, 1)
    for _ in range(3):
        await shared_redis.eval(REDIS_CELL_THROTTLE, 1, key, *args, 1)
    cfg = quota(format="gcra", match=f"{tag}:cell", variant="redis_cell", rate=1, period="1s", burst=5)
    before = time.time()
    reading = await read(shared_redis, cfg)
    after = time.time()
    tat = int(await shared_redis.get(key)) / 1e9  # nanoseconds since the epoch, on this host's clock
    _, limit, left = await shared_redis.eval(REDIS_CELL_THROTTLE, 1, key, *args, 0)
    assert reading.observation.limit == limit == 6
    assert math.floor(remaining(reading)) in (left, left - 1)
    # Reset = TAT - the instant of the read, whenever in [before, after] that was.
    assert tat - after <= (reading.observation.reset_seconds or 0) <= tat - before


# ---- many keys, garbage, round trips ----------------------------------------------------------------


async def test_bad_keys_are_skipped_and_the_rest_counted(shared_redis, tag, read):
    await shared_redis.set(f"rl:{tag}:good", 4, ex=60)
    await shared_redis.rpush(f"rl:{tag}:list", "x")
    await shared_redis.set(f"rl:{tag}:text", "not-a-number")
    reading = await read(shared_redis, quota(format="counter", match=f"rl:{tag}:*", limit=10))
    assert reading.observation.used == 4 and reading.keys == 1
    assert dict(reading.skipped) == {
        f"rl:{tag}:list": "unexpected type list",
        f"rl:{tag}:text": "non-numeric value 'not-a-number'",
    }


async def test_keys_mget_cannot_read_are_typed_once(shared_redis, tag, read):
    # gcra and token buckets read values with one MGET, which answers nil for a list as for a
    # missing key: an EXISTS over the batch tells them apart, and only then a TYPE is asked.
    await shared_redis.set(f"rate:{tag}:ok", 1.0e8, ex=60)
    await shared_redis.rpush(f"rate:{tag}:list", "x")
    cfg = quota(format="gcra", match=f"rate:{tag}:*", variant="redis_rate", rate=1, period="1s", burst=5)
    reading = await read(shared_redis, cfg)
    assert dict(reading.skipped) == {f"rate:{tag}:list": "unexpected type list"}
    assert reading.keys == 1 and reading.observation.used == 0  # a TAT in the past: nothing used
    await shared_redis.hset(f"{tag}:h", mapping={"tokens": "many"})
    bucket_cfg = quota(format="token_bucket", match=f"{tag}:h", capacity=5, rate=1, layout="hash")
    reading = await read(shared_redis, bucket_cfg)
    assert dict(reading.skipped) == {f"{tag}:h": "non-numeric value 'many'"}


def test_a_key_gone_between_scan_and_read_is_zero_usage():
    reader = reader_for(quota(format="counter", match="rl:*", limit=10))
    plan = reader.plan(["rl:gone", "rl:here"], now=time.time())
    gone, here = plan.decode([[None, b"3"], 1])  # MGET, EXISTS: one key exists, one value read
    assert gone == ("rl:gone", None)  # expired between SCAN and read: zero usage, not an odd key
    assert isinstance(here[1], KeyReading) and here[1].used == 3


async def test_key_names_that_are_not_utf8(shared_redis, tag, read):
    await shared_redis.set(f"rl:{tag}:".encode() + b"\xff\xfe", 5, ex=60)
    reading = await read(shared_redis, quota(format="counter", match=f"rl:{tag}:*", limit=10))
    assert reading.observation.used == 5 and reading.busiest_key == f"rl:{tag}:\udcff\udcfe"


async def test_no_key_is_zero_usage(shared_redis, tag, read):
    reading = await read(shared_redis, quota(format="counter", match=f"rl:{tag}:*", limit=10))
    assert (reading.observation.used, reading.observation.limit, reading.keys, reading.busiest_key) == (0, 10, 0, None)
    reading = await read(shared_redis, quota(format="limits", match=f"LIMITS:*LIMITER/{tag}/*"))
    assert reading.observation.used == 0 and reading.observation.limit is None


async def test_an_expired_limits_key_reads_zero_of_its_remembered_limit(shared_redis, storage, tag, read):
    # A limiter's window ran out (TTL, or limits' clear()): nothing is used, of the limit the key had.
    limiter = limits.strategies.FixedWindowRateLimiter(storage)
    item = limits.RateLimitItemPerMinute(10)
    for _ in range(9):
        limiter.hit(item, tag)
    reader = QuotaReader(quota(format="limits", match=f"LIMITS:*LIMITER/{tag}/*"))
    first = await reader.read(shared_redis)
    assert (first.observation.used, first.observation.limit, first.keys) == (9, 10, 1)
    limiter.clear(item, tag)
    idle = await reader.read(shared_redis)
    assert (idle.observation.used, idle.observation.limit, idle.keys, idle.busiest_key) == (0, 10, 0, None)


async def test_many_keys_cost_few_round_trips(shared_redis, tag, read):
    n = 3000
    async with shared_redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.set(f"rl:{tag}:{i}", i % 100, ex=60)
        await pipe.execute()
    size = await shared_redis.dbsize()
    cfg = quota(format="counter", match=f"rl:{tag}:*", limit=100, scan_count=5000)
    reading = await read(shared_redis, cfg)
    assert reading.keys == n and reading.observation.used == 99
    assert reading.keys_near_limit == 19 * (n // 100)  # values 81…99 of every hundred
    # One SCAN page per scan_count slots of the whole (shared) keyspace, plus one pipeline for the reads.
    assert reading.round_trips <= math.ceil(size / cfg.scan_count) + 3


async def test_decoded_responses_client_reads_the_same(shared_redis, tag, read):
    conn = redis.asyncio.Redis.from_url(SHARED_REDIS, decode_responses=True)
    try:
        await conn.set(f"rl:{tag}:a", 7, ex=30)
        reading = await read(conn, quota(format="counter", match=f"rl:{tag}:*", limit=10))
        assert reading.observation.used == 7 and reading.busiest_key == f"rl:{tag}:a"
    finally:
        await conn.delete(f"rl:{tag}:a")
        await conn.aclose()
