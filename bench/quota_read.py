"""Quota reads: time and round trips to read N counters of each Redis format, against a real Redis.

Starts its own redis-server on a free port (so INFO commandstats counts only this run), writes N keys
of every format the way the limiters write them, then reads each quota with the monitor's reader and
compares with the floor: one pipelined MGET of N keys whose names are already known (no SCAN, no TTL).

Round trips are counted on the client (every packed write to the socket is one request/response
exchange); commands come from the server's INFO commandstats.
Usage: python bench/quota_read.py [--keys 10000] [--runs 5] [--scan-count 1000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.connection import Connection

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port

from integration_kit.limiter_formats import REDIS_RATE_EPOCH
from monitor.quota.reader import read_redis_quota
from monitor.settings.quota import RedisQuotaConfig

SENT = {"exchanges": 0}


class CountingConnection(Connection):
    """Counts request writes: a pipeline is one, a single command is one."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        SENT["exchanges"] += 1
        await super().send_packed_command(command, check_health)


def populate(port: int, n: int) -> dict[str, dict[str, Any]]:
    """Write n keys of each format; return the quota config of each."""
    r = redis.Redis(port=port)
    now = time.time()
    seconds, _ = r.time()
    pipe = r.pipeline(transaction=False)
    for i in range(n):  # windows of an hour, so that nothing expires while the bench runs
        used = i % 100
        pipe.set(f"LIMITS:LIMITER/fixed/{i}/100/1/hour", used, ex=3600)
        pipe.lpush(f"LIMITS:LIMITER/moving/{i}/100/1/hour", *([now - 5] * (used + 1)))
        pipe.expire(f"LIMITS:LIMITER/moving/{i}/100/1/hour", 3600)
        pipe.set(f"LIMITS:{{LIMITER/sliding/{i}/100/1/hour}}", used, px=7_000_000)
        pipe.set(f"LIMITS:{{LIMITER/sliding/{i}/100/1/hour}}/-1", 50, px=1_000_000)
        pipe.set(f"rl:{i}", used, px=3_600_000)
        pipe.set(f"rlflx:{i}", used, ex=3600)
        pipe.zadd(f"pyrate:{i}", {f"m{j}": int(now * 1000) - j for j in range(used % 10 + 1)})
        pipe.set(f"request_rate_limiter.{{{i}}}.tokens", 100 - used, ex=3600)
        pipe.set(f"request_rate_limiter.{{{i}}}.timestamp", seconds, ex=3600)
        pipe.set(f"rate:{i}", now - REDIS_RATE_EPOCH + used * 0.6, ex=3600)
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()
    r.close()
    return {
        "limits fixed": {"format": "limits", "match": "LIMITS:LIMITER/fixed/*"},
        "limits moving": {"format": "limits", "match": "LIMITS:LIMITER/moving/*"},
        "limits sliding": {"format": "limits", "match": "LIMITS:{LIMITER/sliding/*"},
        "counter": {"format": "counter", "match": "rl:*", "limit": 100},
        "rate_limiter_flexible": {"format": "rate_limiter_flexible", "match": "rlflx:*", "limit": 100},
        "sliding_log": {"format": "sliding_log", "match": "pyrate:*", "limit": 100, "window": 60},
        "token_bucket": {"format": "token_bucket", "match": "request_rate_limiter.*", "capacity": 100, "rate": 10},
        "gcra": {"format": "gcra", "match": "rate:*", "variant": "redis_rate", "rate": 100, "period": 60,
                 "burst": 100},
    }


def commands_total(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info" and k != "cmdstat_config")


async def measure(port: int, fields: dict[str, Any], scan_count: int, runs: int) -> tuple[float, int, int, int]:
    pool = redis.asyncio.ConnectionPool(host="127.0.0.1", port=port, connection_class=CountingConnection)
    client = redis.asyncio.Redis(connection_pool=pool)
    sync = redis.Redis(port=port)
    cfg = RedisQuotaConfig(name="bench", source="redis", scan_count=scan_count, **fields)
    await client.ping()  # connect outside the measurement
    times, exchanges, commands, keys = [], 0, 0, 0
    for _ in range(runs):
        sync.config_resetstat()
        SENT["exchanges"] = 0
        started = time.perf_counter()
        reading = await read_redis_quota(client, cfg)
        times.append(time.perf_counter() - started)
        exchanges, commands, keys = SENT["exchanges"], commands_total(sync), reading.keys
        assert reading.round_trips == exchanges, (reading.round_trips, exchanges)
    await client.aclose()
    await pool.disconnect()
    sync.close()
    return statistics.median(times), exchanges, commands, keys


async def mget_floor(port: int, n: int, runs: int) -> tuple[float, int, int]:
    pool = redis.asyncio.ConnectionPool(host="127.0.0.1", port=port, connection_class=CountingConnection)
    client = redis.asyncio.Redis(connection_pool=pool)
    sync = redis.Redis(port=port)
    names = [f"rl:{i}" for i in range(n)]
    await client.ping()
    times = []
    for _ in range(runs):
        sync.config_resetstat()
        SENT["exchanges"] = 0
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        pipe.mget(names)
        values = (await pipe.execute())[0]
        times.append(time.perf_counter() - started)
        assert len(values) == n
    exchanges, commands = SENT["exchanges"], commands_total(sync)
    await client.aclose()
    await pool.disconnect()
    sync.close()
    return statistics.median(times), exchanges, commands


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A redis-server of our own on a free port (the shared one would mix other tests' commands in)."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait()


async def report(port: int, quotas: dict[str, dict[str, Any]], keys: int, runs: int, scan_counts: list[int]) -> None:
    print(f"{'quota':<24}{'SCAN COUNT':>11}{'keys read':>10}{'time ms':>10}{'round trips':>13}{'commands':>10}")
    floor = await mget_floor(port, keys, runs)
    print(f"{'MGET floor (names known)':<24}{'-':>11}{keys:>10}{floor[0] * 1000:>10.1f}{floor[1]:>13}{floor[2]:>10}")
    for scan_count in scan_counts:
        for label, fields in quotas.items():
            seconds, exchanges, commands, read = await measure(port, fields, scan_count, runs)
            print(f"{label:<24}{scan_count:>11}{read:>10}{seconds * 1000:>10.1f}{exchanges:>13}{commands:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scan-count", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    with redis_server() as port:
        quotas = populate(port, args.keys)
        size = redis.Redis(port=port).dbsize()
        print(f"{args.keys} keys per format, {size} keys in the database, median of {args.runs} runs\n")
        asyncio.run(report(port, quotas, args.keys, args.runs, args.scan_count))


if __name__ == "__main__":
    main()
