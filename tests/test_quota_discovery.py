"""A quota read after read, as the daemon reads it: keys remembered, the keyspace walked a share at a time
(one pass per rescan_interval), round trips that do not grow with the keyspace, and the plain commands
when Redis refuses EVAL. A private redis-server each, so that DBSIZE and the keyspace are the test's own."""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from needs import free_port, missing
from redis_servers import OwnRedis

from monitor.quota.reader import QuotaReader, QuotaReading
from monitor.settings.quota import RedisQuotaConfig

OTHER_KEYS = 2000  # keys of the database that the quota does not match
SCAN_COUNT = 100
READS_PER_PASS = 4  # rescan_interval / interval


def counter_quota() -> RedisQuotaConfig:
    return RedisQuotaConfig(name="q", source="redis", format="counter", match="rl:*", limit=100,
                            scan_count=SCAN_COUNT, interval="15s", rescan_interval="60s")


@pytest.fixture
async def client(own_redis: OwnRedis) -> AsyncIterator[redis.asyncio.Redis]:
    await own_redis.start()
    conn = redis.asyncio.Redis(host="127.0.0.1", port=own_redis.port)
    async with conn.pipeline(transaction=False) as pipe:
        for i in range(OTHER_KEYS):
            pipe.set(f"other:{i}", i)
        for i in range(50):
            pipe.set(f"rl:{i}", i, ex=600)
        await pipe.execute()
    yield conn
    await conn.aclose()


def share() -> int:
    """SCAN pages a read walks once the first pass is done (its share of one pass per rescan_interval)."""
    return math.ceil((OTHER_KEYS + 60) / (SCAN_COUNT * READS_PER_PASS))


@pytest.mark.parametrize("scripts", [True, False], ids=["scripts", "plain commands"])
async def test_new_keys_are_found_within_two_passes_and_known_keys_at_every_read(client, scripts):
    reader = QuotaReader(counter_quota(), scripts=scripts)
    first = await reader.read(client)
    assert first.keys == 50 and first.observation.used == 49 and reader.passes == 1
    assert first.round_trips >= OTHER_KEYS // SCAN_COUNT  # the first read walks the whole keyspace

    await client.set("rl:new", 99, ex=600)
    readings: list[QuotaReading] = []
    while not readings or readings[-1].keys == 50:
        readings.append(await reader.read(client))
        assert len(readings) <= 2 * READS_PER_PASS + 1  # a pass that started before the key may miss it
    assert readings[-1].keys == 51 and readings[-1].busiest_key == "rl:new"
    # Every read: its share of SCAN pages (the first with TIME and DBSIZE) and one pipeline for the keys,
    # plus one PTTL when the busiest key changed; never a page per scan_count keys of the database.
    for reading in readings:
        assert reading.round_trips <= share() + 2
    steady = await reader.read(client)
    assert steady.round_trips <= share() + 1 and steady.keys == 51
    assert reader.scripts == scripts


async def test_a_key_written_again_under_its_name_is_read_at_once(client):
    reader = QuotaReader(counter_quota())
    await reader.read(client)
    await client.delete("rl:49")  # a fixed window ends: the limiter's key expires…
    gone = await reader.read(client)
    assert gone.keys == 49 and gone.observation.used == 48
    assert reader.known_keys == 50  # …but its name is remembered
    passes = reader.passes
    await client.set("rl:49", 7, ex=600)  # …and the next window writes it again
    await client.set("rl:48", 90, ex=600)
    back = await reader.read(client)
    assert back.keys == 50 and back.observation.used == 90
    assert reader.passes == passes  # read without a SCAN pass coming round to it


async def test_a_key_that_a_whole_pass_neither_found_nor_read_is_forgotten(client):
    reader = QuotaReader(counter_quota())
    await reader.read(client)
    await client.delete("rl:0", "rl:1")
    passes = reader.passes
    while reader.passes < passes + 2:  # the pass under way may have seen them before they went
        reading = await reader.read(client)
        assert reading.keys == 48
    assert reader.known_keys == 48


async def test_the_busiest_key_ttl_rides_with_the_reads(client):
    reader = QuotaReader(counter_quota())
    first = await reader.read(client)
    assert first.busiest_key == "rl:49" and 590 < (first.observation.reset_seconds or 0) <= 600
    await client.expire("rl:49", 300)
    second = await reader.read(client)
    assert second.busiest_key == "rl:49" and 290 < (second.observation.reset_seconds or 0) <= 300
    assert second.round_trips <= share() + 1  # the PTTL travelled with the pipeline of the keys


@pytest.mark.parametrize("pattern", ["*", "nomatch:*"])
async def test_scan_pages_per_read_follow_rescan_interval(client, pattern):
    cfg = RedisQuotaConfig(name="q", source="redis", format="counter", match=pattern, limit=1, scan_count=SCAN_COUNT,
                           interval="10s", rescan_interval="100s")
    reader = QuotaReader(cfg)
    await reader.read(client)
    passes, reads = reader.passes, 0
    while reader.passes == passes:
        await reader.read(client)
        reads += 1
    # 10 reads per pass: ~2,050 keys in pages of ~100 is ~21 pages, 2 or 3 a read; SCAN's COUNT is a hint.
    assert 6 <= reads <= 14


# ---- Redis that will not run EVAL ------------------------------------------------------------------


async def fallback_reads(conn: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture) -> None:
    plain = await QuotaReader(counter_quota(), scripts=False).read(conn)
    reader = QuotaReader(counter_quota(), label="shop/api")
    with caplog.at_level(logging.WARNING, logger="monitor.quota.reader"):
        first = await reader.read(conn)
        second = await reader.read(conn)
    assert not reader.scripts
    assert (first.keys, first.busiest_key, first.observation.used) == (plain.keys, plain.busiest_key, 49)
    assert second.keys == 50
    warnings = [r.getMessage() for r in caplog.records if r.name == "monitor.quota.reader"]
    assert len(warnings) == 1 and warnings[0].startswith("quota shop/api: Redis refused EVAL")


async def test_an_acl_user_without_eval_reads_with_plain_commands(client, own_redis, caplog):
    await client.execute_command("ACL", "SETUSER", "monitor", "on", ">secret-pw", "~rl:*", "+@read", "+time")
    conn = redis.asyncio.Redis(host="127.0.0.1", port=own_redis.port, username="monitor", password="secret-pw")
    try:
        await fallback_reads(conn, caplog)
    finally:
        await conn.aclose()


async def test_the_documented_acl_reads_with_scripts(client, own_redis):
    # docs/redis-keys.md: ~<the quotas' patterns> +@read +time +eval (the scripts' commands are checked too)
    await client.execute_command("ACL", "SETUSER", "monitor", "on", ">secret-pw", "~rl:*", "+@read", "+time", "+eval")
    conn = redis.asyncio.Redis(host="127.0.0.1", port=own_redis.port, username="monitor", password="secret-pw")
    try:
        reader = QuotaReader(counter_quota())
        reading = await reader.read(conn)
        assert reader.scripts and reading.keys == 50 and reading.observation.used == 49
    finally:
        await conn.aclose()


async def test_eval_renamed_away_reads_with_plain_commands(caplog):
    if shutil.which("redis-server") is None:
        missing("redis-server binary not installed")
    server = OwnRedis(port=free_port())
    await server.start("--rename-command", "EVAL", "")
    conn = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
    try:
        async with conn.pipeline(transaction=False) as pipe:
            for i in range(50):
                pipe.set(f"rl:{i}", i, ex=600)
            await pipe.execute()
        await fallback_reads(conn, caplog)
    finally:
        await conn.aclose()
        await server.stop()
