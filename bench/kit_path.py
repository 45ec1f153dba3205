"""The integration kit's path, layer by layer, in instructions per call (callgrind): what each part of the
aiohttp middleware adds to a call, deterministic where CPU time on a shared machine is not.

Layers, each a run of sequential calls on one keep-alive session against kit_overhead.py's loopback
target (an aiohttp server in a child process serving a ~100-byte JSON body; not counted), asyncio as
kit_overhead.py runs, the caller reading the body as there:
  bare aiohttp              the call without middleware: the floor
  pass-through middleware   a middleware that only awaits the handler: aiohttp's own cost of one
  kit, body not checked     Integration without Redis, one attempt, Expect(json=False): the middleware's
                            machinery (retry runner, deadline, status check, outcome, stats)
  kit, default policy       the same with the default RetryPolicy (3 attempts: costs only on failures)
  kit, JSON checked         the default Expect: a JSON answer's body is read, and parsed for the
                            probes' empty_body / malformed_json classes
  + recorder                Integration(redis=…): every call counted in memory for Redis (flushed once
                            per round of calls: ~1 s of a quiet machine's calls, as the 1 s flush task
                            would; the flush is counted)
  + expectations            a required and a not_null field (``vendor.expect(...)``)
The kit's added instructions per call are each layer's count minus the bare call's; to read them as
CPU µs, scale by bare aiohttp's µs per call from kit_overhead.py (same target, same loop) over its
instructions here. Needs valgrind and redis-server.

    .venv/bin/python bench/kit_path.py [--calls 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from callgrind import drive, print_layers, step, step_done, steps_over
from common import free_port, require
from kit_overhead import TARGET

from integration_kit.client import Expect, Integration
from integration_kit.retry import RetryPolicy

ONE_ATTEMPT = RetryPolicy(attempts=1)
UNCHECKED = Expect(json=False)

Call = Callable[[], Awaitable[None]]


def caller(session: aiohttp.ClientSession, url: str, **options: object) -> Call:
    async def call() -> None:
        async with session.get(url, **options) as resp:  # type: ignore[arg-type]
            await resp.read()

    return call


async def worker(url: str, redis_url: str, calls: int, rounds: int) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)

    async def pass_through(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        return await handler(req)

    unchecked = Integration("bench", retry=ONE_ATTEMPT, expect=UNCHECKED)
    default_policy = Integration("bench", expect=UNCHECKED)
    checked = Integration("bench")
    # Flushed by hand once per round (below): the flush task's 1 s would be a few dozen calls under valgrind.
    recorded = Integration("bench", redis=client, flush_interval=300.0)
    expectations = recorded.expect(required=("data.id",), not_null=("livemode",))
    bare = aiohttp.ClientSession()
    sessions = {name: aiohttp.ClientSession(middlewares=(middleware,)) for name, middleware in (
        ("pass-through middleware", pass_through), ("kit, body not checked", unchecked.middleware),
        ("kit, default policy", default_policy.middleware), ("kit, JSON checked", checked.middleware),
        ("+ recorder", recorded.middleware))}
    layers: list[tuple[str, Call]] = [
        ("bare aiohttp", caller(bare, url)),
        *((name, caller(session, url)) for name, session in sessions.items()),
        ("+ expectations", caller(sessions["+ recorder"], url, middlewares=expectations)),
    ]
    assert recorded.recorder is not None
    async with recorded:
        for _, call in layers:  # warm: imports, the connection, caches
            for _ in range(20):
                await call()
        await recorded.recorder.flush()
        for _ in range(rounds):
            for name, call in layers:
                step(name)
                for _ in range(calls):
                    await call()
                if name.startswith("+"):
                    await recorded.recorder.flush()
                step_done(calls)
        steps_over()
    assert recorded.stats.failed == 0 and recorded.recorder.stats.failed_flushes == 0
    for session in (bare, *sessions.values()):
        await session.close()
    await client.aclose()


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("URL", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(*args.worker, args.calls, args.rounds))
        return
    port, redis_port = free_port(), free_port()
    target = subprocess.Popen([sys.executable, "-c", TARGET, str(port)])
    server = subprocess.Popen([require("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        wait_port(redis_port)
        counts = drive([sys.executable, __file__, "--worker", f"http://127.0.0.1:{port}/ok",
                        f"redis://127.0.0.1:{redis_port}/0", "--calls", str(args.calls), "--rounds", str(args.rounds)])
    finally:
        for process in (target, server):
            process.terminate()
            process.wait(10)
    print_layers(counts, per="call", base="bare aiohttp",
                 note=f"median of {args.rounds} rounds of {args.calls} sequential calls, keep-alive")

if __name__ == "__main__":
    main()
