"""The ceiling of any Python prober: a bare aiohttp loop, a fresh connection per request.

Also the load driver for blackbox_exporter (with --keepalive, against its /probe endpoint).

Run as its own process so its CPU is measured alone. Prints one JSON line: probes, cpu seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=0, help="paced probes/s; 0 = saturation")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="parse the body and check two fields")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--keepalive", action="store_true", help="reuse connections (to drive an exporter)")
    ns = parser.parse_args()
    if ns.uvloop:
        import uvloop

        uvloop.run(main(ns))
    else:
        asyncio.run(main(ns))
