"""What the integration kit costs a service, side by side in one run against the same loopback target:

1. CPU per call (this process' CPU time / calls): a bare aiohttp call, the same call through the kit's
   middleware (classify, retry policy, counters batched and flushed once a second), and through the kit
   with the shared rate limiter (one Redis script call per call, by design). Rounds are interleaved so
   machine noise hits every variant alike. Target: the kit adds < 50 µs per call.
2. Redis commands per 1,000 calls (INFO commandstats of a private redis-server).
3. Redis killed mid-traffic (SIGKILL of that redis-server): per-call latency before and after, with the
   limiter (which then lets calls through and leaves Redis alone for 5 s at a time; the Redis client is
   made with from_url(), as in the README, so a dead Redis is an error at once, not seconds of retries).

    .venv/bin/python bench/kit_overhead.py [--calls 2000] [--rounds 5]

The target is an aiohttp server in a child process (its CPU is not counted). Needs redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BODY, free_port, require
from integration_kit.client import Integration, RateLimit

TARGET = f"""
from aiohttp import web
app = web.Application()
app.router.add_get("/ok", lambda r: web.Response(body={BODY!r}, content_type="application/json"))
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), print=None, access_log=None)
"""


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def cpu_per_call(call: Callable[[], Awaitable[None]], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - started) / n * 1e6


async def commands(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


async def main(args: argparse.Namespace) -> None:
    port, redis_port = free_port(), free_port()
    target = await asyncio.create_subprocess_exec(sys.executable, "-c", TARGET, str(port))
    server = await asyncio.create_subprocess_exec(
        require("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_port(port)
        await wait_port(redis_port)
        url = f"http://127.0.0.1:{port}/ok"
        # As the README's kit example: from_url() (no redis-py retries, so a dead Redis is an error at once).
        client = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{redis_port}/0", socket_connect_timeout=0.5,
                                              socket_timeout=0.5)
        kit = Integration("bench", redis=client)
        limited = Integration("bench-limited", redis=client, rate_limit=RateLimit(rate=1_000_000, per=1.0))
        async with kit, limited, aiohttp.ClientSession() as bare, \
                aiohttp.ClientSession(middlewares=(kit.middleware,)) as wrapped, \
                aiohttp.ClientSession(middlewares=(limited.middleware,)) as with_limiter:

            def caller(session: aiohttp.ClientSession) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    async with session.get(url) as resp:
                        await resp.read()
                return call

            variants = {"bare aiohttp": caller(bare), "kit middleware": caller(wrapped),
                        "kit + shared limiter": caller(with_limiter)}
            for call in variants.values():
                await cpu_per_call(call, 200)  # warm up connections and code paths
            results: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, call in variants.items():
                    results[name].append(await cpu_per_call(call, args.calls))
            base = statistics.median(results["bare aiohttp"])
            print(f"\nCPU per call (this process), median of {args.rounds} rounds × {args.calls} calls:")
            print(f"{'variant':<24}{'µs/call':>10}{'added':>10}")
            for name, values in results.items():
                med = statistics.median(values)
                print(f"{name:<24}{med:>10.1f}{med - base:>+10.1f}")
            added = statistics.median(results["kit middleware"]) - base
            print(f"kit middleware adds {added:.1f} µs per call: {'within' if added < 50 else 'OVER'} the 50 µs target")

            for name, call, integration in (("kit middleware", variants["kit middleware"], kit),
                                            ("kit + shared limiter", variants["kit + shared limiter"], limited)):
                assert integration.recorder is not None
                await integration.recorder.flush()
                await client.config_resetstat()
                for _ in range(1000):
                    await call()
                await integration.recorder.flush()
                print(f"Redis commands per 1,000 calls, {name}: {await commands(client)}")
            print("(commandstats counts the limiter script's TIME, GET and SET besides its EVALSHA: one round trip "
                  "per call; the counters: one MULTI/EXEC pipeline per flush, once a second)")

            print("\nRedis killed mid-traffic (kit + shared limiter), wall time per call:")
            call = variants["kit + shared limiter"]

            async def latencies(n: int) -> list[float]:
                out = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await call()  # never raises: Redis trouble does not reach the caller
                    out.append((time.perf_counter() - t0) * 1e6)
                return out

            before = await latencies(args.calls)
            os.kill(server.pid, signal.SIGKILL)
            await server.wait()
            after = await latencies(args.calls)
            for label, values in (("Redis up", before), ("Redis killed", after)):
                values.sort()
                p99 = values[int(len(values) * 0.99)]
                p50, worst = statistics.median(values), values[-1]
                print(f"{label:<14} p50 {p50:8.0f} µs   p99 {p99:8.0f} µs   max {worst:8.0f} µs")
            errors = limited.limiter.errors if limited.limiter else 0
            print(f"limiter bypassed {limited.stats.limiter_bypassed} calls; {errors} failed Redis command(s)"
                  " (one per 5 s cooldown)")
    finally:
        target.terminate()
        await target.wait()
        if server.returncode is None:
            server.terminate()
            await server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
