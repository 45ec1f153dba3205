"""The ceiling of any Python prober: a bare aiohttp loop, a fresh connection per request.

Also the load driver for blackbox_exporter (with --keepalive, against its /probe endpoint), and with
--scheduled N the floor the daemon's scheduler sets: the same request as the run of N APScheduler jobs,
added the way monitor/scheduler.py adds its checks' (the daemon's BatchingScheduler, an interval trigger
with the default 10 % jitter, max_instances 1, coalesce, a misfire grace of one interval, first runs
spread over the interval, young collections as rare as the daemon's) and run under one concurrency limit,
with nothing of ours around the request.

Run as its own process so its CPU is measured alone. Prints one JSON line: probes, cpu seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def main(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(force_close=not args.keepalive, limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    done = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            nonlocal done
            async with session.get(args.url) as resp:
                body = await resp.read()
                if args.json:
                    doc = json.loads(body)
                    assert doc["data"]["id"] and doc["livemode"] is not None
            done += 1

        if args.scheduled:
            await scheduled(args, one, lambda: done)
            return
        cpu0, t0 = time.process_time(), time.monotonic()
        end = t0 + args.seconds
        if args.rate:
            tasks = set()
            interval, next_at = 1.0 / args.rate, t0
            while next_at < end:
                tasks.add(asyncio.ensure_future(one()))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)
        else:

            async def worker() -> None:
                while time.monotonic() < end:
                    await one()

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    print(json.dumps({"probes": done, "cpu": cpu, "wall": wall}))


async def scheduled(args: argparse.Namespace, one: Callable[[], Awaitable[None]], done: Callable[[], int]) -> None:
    """``args.scheduled`` jobs every ``args.interval`` seconds, ``args.concurrency`` in flight; CPU and probes
    counted over ``args.seconds`` after ``args.warmup`` (as bench/probe_cpu.py counts the daemon's)."""

    from monitor import long_lived
    from monitor.aps_plugins import JitteredInterval
    from monitor.batching_scheduler import BatchingScheduler

    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):  # as the daemon quietens them
        logging.getLogger(name).setLevel(logging.ERROR)
    slots = asyncio.Semaphore(args.concurrency)

    async def run() -> None:
        async with slots:
            await one()

    aps = BatchingScheduler(timezone=UTC)
    now, interval, jitter = time.time(), args.interval, 0.1
    for i in range(args.scheduled):
        first = datetime.fromtimestamp(now + interval * (i + random.random()) / args.scheduled, UTC)
        aps.add_job(run, trigger=JitteredInterval(seconds=interval * (1 - jitter / 2), jitter=interval * jitter,
                                                  start_date=first, timezone=UTC),
                    id=str(i), next_run_time=first, max_instances=1, coalesce=True,
                    misfire_grace_time=max(1, round(interval)))
    long_lived.tune_young_collections()  # as App.run does
    aps.start()
    await asyncio.sleep(args.warmup)
    cpu0, t0, done0 = time.process_time(), time.monotonic(), done()
    await asyncio.sleep(args.seconds)
    cpu, wall, probes = time.process_time() - cpu0, time.monotonic() - t0, done() - done0
    aps.shutdown(wait=False)
    print(json.dumps({"probes": probes, "cpu": cpu, "wall": wall}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=0, help="paced probes/s; 0 = saturation")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="parse the body and check two fields")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--keepalive", action="store_true", help="reuse connections (to drive an exporter)")
    parser.add_argument("--scheduled", type=int, default=0, metavar="N", help="run the requests as N APScheduler jobs")
    parser.add_argument("--interval", type=float, default=1.0, help="of the --scheduled jobs, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="of --scheduled, seconds before counting")
    ns = parser.parse_args()
    if ns.uvloop:
        import uvloop

        uvloop.run(main(ns))
    else:
        asyncio.run(main(ns))
