"""Quota reads: time and round trips to read N counters of each Redis format, against a real Redis.

Starts its own redis-server on a free port (so INFO commandstats counts only this run), writes N keys
of every format the way the limiters write them, then reads each quota with the monitor's reader, read
after read as the daemon does (keys remembered, a share of the SCAN pass per read), by both paths
(server-side scripts where a format has one, and the plain commands used when Redis refuses EVAL), in
rounds interleaved with the floor: one pipelined MGET of N keys whose names are already known (no SCAN,
no TTL). The first read of each (a whole SCAN pass) is shown apart. Every read must find the same keys
and the same busiest usage (±1) as the first.

Round trips are counted on the client (every packed write to the socket is one request/response
exchange); commands come from the server's INFO commandstats (those run inside scripts included). CPU
time is the client's and redis-server's (INFO cpu). ``--instructions`` counts instructions instead, the
client and redis-server both under callgrind (bench/callgrind.py): the same reads, deterministic on a
busy machine where CPU time is not.
Usage: python bench/quota_read.py [--keys 10000] [--rounds 8] [--scan-count 10000] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.connection import Connection

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from callgrind import Counted, callgrind, drive, step, step_done, steps_over
from common import free_port, require

from integration_kit.limiter_formats import REDIS_RATE_EPOCH
from monitor.quota.reader import QuotaReader
from monitor.settings.quota import RedisQuotaConfig

SENT = {"exchanges": 0}


class CountingConnection(Connection):
    """Counts request writes: a pipeline is one, a single command is one."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        SENT["exchanges"] += 1
        await super().send_packed_command(command, check_health)


def populate(port: int, n: int) -> None:
    """Write n keys of each format (``QUOTAS`` reads them)."""
    r = redis.Redis(port=port)
    now = time.time()
    seconds, _ = r.time()
    pipe = r.pipeline(transaction=False)
    for i in range(n):  # windows of an hour, so that nothing expires or refills while the bench runs
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
        pipe.set(f"rate:{i}", now - REDIS_RATE_EPOCH + used * 360, ex=7200)
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()
    r.close()


QUOTAS: dict[str, dict[str, Any]] = {  # the quota of each format, over the keys populate() writes
    "limits fixed": {"format": "limits", "match": "LIMITS:LIMITER/fixed/*"},
    "limits moving": {"format": "limits", "match": "LIMITS:LIMITER/moving/*"},
    "limits sliding": {"format": "limits", "match": "LIMITS:{LIMITER/sliding/*"},
    "counter": {"format": "counter", "match": "rl:*", "limit": 100},
    "rate_limiter_flexible": {"format": "rate_limiter_flexible", "match": "rlflx:*", "limit": 100},
    "sliding_log": {"format": "sliding_log", "match": "pyrate:*", "limit": 100, "window": 3600},
    "token_bucket": {"format": "token_bucket", "match": "request_rate_limiter.*", "capacity": 100, "rate": 10,
                     "period": 3600},
    "gcra": {"format": "gcra", "match": "rate:*", "variant": "redis_rate", "rate": 100, "period": 36_000,
             "burst": 100},
}


def commands_total(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


@dataclass
class Sample:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process + redis-server
    trips: list[int] = field(default_factory=list)
    commands: list[int] = field(default_factory=list)

    def add(self, wall: float, cpu: float, trips: int, commands: int) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.trips.append(trips)
        self.commands.append(commands)


class Bench:
    """Clients on a counting connection pool, and a sync client for INFO commandstats and cpu."""

    def __init__(self, port: int) -> None:
        self.pool = redis.asyncio.ConnectionPool(host="127.0.0.1", port=port, connection_class=CountingConnection)
        self.client = redis.asyncio.Redis(connection_pool=self.pool)
        self.sync = redis.Redis(port=port)

    def server_cpu(self) -> float:
        info = self.sync.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def timed(self, read: Callable[[], Awaitable[Any]], sample: Sample) -> Any:
        """One read: wall time, CPU time of both ends (the load of a shared machine stretches wall time,
        not CPU time), round trips, Redis commands (those run inside scripts included)."""
        self.sync.config_resetstat()
        SENT["exchanges"] = 0
        server = self.server_cpu()
        wall, cpu = time.perf_counter(), time.process_time()
        result = await read()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sample.add(wall, cpu + self.server_cpu() - server, SENT["exchanges"], commands_total(self.sync))
        return result

    async def close(self) -> None:
        await self.client.aclose()
        await self.pool.disconnect()
        self.sync.close()


Read = Callable[[], Awaitable[Any]]


Readers = dict[tuple[str, bool], QuotaReader]
FLOOR = "MGET floor (names known)"


def variants(client: redis.asyncio.Redis, keys: int, scan_count: int) -> tuple[Read, Readers]:
    """The floor's read, and a reader of every quota for each path (scripts, plain commands)."""
    names = [f"rl:{i}" for i in range(keys)]

    async def floor_read() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        pipe.mget(names)
        return list((await pipe.execute())[0])

    configs = {label: RedisQuotaConfig(name="bench", source="redis", scan_count=scan_count, **fields)
               for label, fields in QUOTAS.items()}
    readers = {(label, scripts): QuotaReader(cfg, scripts=scripts)
               for label, cfg in configs.items() for scripts in (True, False)}
    return floor_read, readers


def variant_name(label: str, scripts: bool) -> str:
    return f"{label} ({'scripts' if scripts else 'plain commands'})"


async def report(port: int, keys: int, rounds: int, scan_count: int) -> None:
    bench = Bench(port)
    await bench.client.ping()  # connect outside the measurement
    floor_read, readers = variants(bench.client, keys, scan_count)
    first = {key: Sample() for key in readers}
    expected: dict[tuple[str, bool], tuple[int, float]] = {}
    for key, reader in readers.items():
        reading = await bench.timed(functools.partial(reader.read, bench.client), first[key])
        assert reading.keys == keys and reading.round_trips == first[key].trips[0], (key, reading.keys)
        expected[key] = (reading.keys, reading.observation.used or 0.0)
    # Interleaved rounds: the floor, then one read of every quota by each path; a full SCAN pass is spread
    # over rescan_interval / interval reads, so the rounds cover whole passes.
    floor, steady = Sample(), {key: Sample() for key in readers}
    for _ in range(rounds):
        assert len(await bench.timed(floor_read, floor)) == keys
        for key, reader in readers.items():
            reading = await bench.timed(functools.partial(reader.read, bench.client), steady[key])
            assert reading.round_trips == steady[key].trips[-1]
            assert reader.scripts == key[1]  # never fell back
            # time moves on (a bucket refills, a TAT comes closer, a previous window weighs less), so the
            # busiest usage may drift, by at most 1 here, and another key of the same usage may lead
            keys_read, used = expected[key]
            assert reading.keys == keys_read, key
            assert abs((reading.observation.used or 0) - used) <= 1, (key, used, reading.observation)
    await bench.close()

    base_wall, base_cpu = statistics.median(floor.wall), statistics.median(floor.cpu)
    print("| read | wall ms, median (min–max) | × floor | CPU ms (client + Redis), median (min–max) | × floor "
          "| round trips | Redis commands | first read (whole SCAN pass): wall, round trips |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {FLOOR} | {spread(floor.wall)} | 1.0 | {spread(floor.cpu)} | 1.0 | "
          f"{span(floor.trips)} | {span(floor.commands)} | |")
    for (label, scripts), sample in steady.items():
        once = first[(label, scripts)]
        print(f"| {variant_name(label, scripts)} | {spread(sample.wall)} | "
              f"{statistics.median(sample.wall) / base_wall:.1f} | {spread(sample.cpu)} | "
              f"{statistics.median(sample.cpu) / base_cpu:.1f} | {span(sample.trips)} | {span(sample.commands)} | "
              f"{once.wall[0] * 1000:.0f} ms, {once.trips[0]} |")


# ---- instruction counts: the same reads, the client and redis-server under callgrind --------------------


async def worker(port: int, keys: int, rounds: int, scan_count: int) -> None:
    """Runs under callgrind (bench/callgrind.py): each read is a counted step, noted with its round trips.
    The first read of every quota (a whole SCAN pass) is not counted."""
    client = redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(  # under valgrind: no 5 s timeout
        host="127.0.0.1", port=port, connection_class=CountingConnection, socket_timeout=None))
    floor_read, readers = variants(client, keys, scan_count)
    for reader in readers.values():
        await reader.read(client)
    steps: list[tuple[str, Read]] = [(FLOOR, floor_read)]
    steps += [(variant_name(*key), functools.partial(reader.read, client)) for key, reader in readers.items()]
    for _ in range(rounds):
        for name, read in steps:
            step(name)
            SENT["exchanges"] = 0
            await read()
            step_done(SENT["exchanges"])
    steps_over()
    await client.aclose()


def count_instructions(keys: int, rounds: int, scan_count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="im-bench-quota-") as tmp:
        # Writing 10 × N keys into a redis-server under valgrind takes many minutes: write them into a plain
        # one, save, and let the counted one load the file.
        with redis_server("--dir", tmp, "--dbfilename", "dump.rdb") as port:
            populate(port, keys)
            size = redis.Redis(port=port).dbsize()
            redis.Redis(port=port).save()
        port = free_port()
        server = subprocess.Popen(
            callgrind([require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
                       "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_redis(port, timeout=600)
            print(f"{keys} keys per format, {size} keys in the database, SCAN COUNT {scan_count}, interval 15s, "
                  f"rescan_interval 60s; instructions (callgrind) per read, median of {rounds} interleaved rounds\n")
            argv = [sys.executable, __file__, "--worker", str(port), "--keys", str(keys), "--rounds", str(rounds),
                    "--scan-count", str(scan_count)]
            counts = drive(argv, [Counted(server.pid)])
        finally:
            server.terminate()
            server.wait()
    floor = statistics.median(sum(c) for c, _ in counts[FLOOR])
    print("| read | client Mi | Redis Mi | total Mi (min–max) | × floor | round trips |")
    print("|---|---|---|---|---|---|")
    for name, samples in counts.items():
        totals = sorted(sum(c) for c, _ in samples)
        print(f"| {name} | {statistics.median(c[0] for c, _ in samples) / 1e6:.1f} | "
              f"{statistics.median(c[1] for c, _ in samples) / 1e6:.1f} | {statistics.median(totals) / 1e6:.1f} "
              f"({totals[0] / 1e6:.1f}–{totals[-1] / 1e6:.1f}) | {statistics.median(totals) / floor:.2f} | "
              f"{span([int(note) for _, note in samples])} |")


def spread(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return f"{statistics.median(ms):.1f} ({ms[0]:.1f}–{ms[-1]:.1f})"


def span(values: list[int]) -> str:
    return f"{min(values)}–{max(values)}" if min(values) != max(values) else str(values[0])


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[int]:
    """A redis-server of our own on a free port (the shared one would mix other tests' commands in)."""
    port = free_port()
    server = subprocess.Popen(
        [require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_redis(port)
        yield port
    finally:
        server.terminate()
        server.wait()


def wait_redis(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis(port=port).ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=8, help="steady-state reads of each quota (2 SCAN passes)")
    parser.add_argument("--scan-count", type=int, default=10_000)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions (callgrind) instead of timing: for a busy machine; ~30 minutes")
    parser.add_argument("--worker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker, args.keys, args.rounds, args.scan_count))
    elif args.instructions:
        count_instructions(args.keys, args.rounds, args.scan_count)
    else:
        with redis_server() as port:
            populate(port, args.keys)
            size = redis.Redis(port=port).dbsize()
            print(f"{args.keys} keys per format, {size} keys in the database, SCAN COUNT {args.scan_count}, "
                  f"interval 15s, rescan_interval 60s; {args.rounds} interleaved rounds\n")
            asyncio.run(report(port, args.keys, args.rounds, args.scan_count))


if __name__ == "__main__":
    main()
