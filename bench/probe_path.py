"""The probe path, layer by layer, in instructions per probe (callgrind): deterministic where CPU time on a
shared machine is not, so that a change to the probe path shows as what it saves.

Layers, each a closed loop of 32 requests in flight against one nginx, a fresh connection per request,
on uvloop as the daemon runs (bench/callgrind.py counts this process only; nginx and the kernel are not):
  bare aiohttp      a session like bench/bare_aiohttp.py's: the ceiling of any Python prober
  daemon session    the same request on the daemon's session (its phase hooks, no cookie jar)
  probe             checks.http.probe with that session: auth, retries, deadline, classification, result
  probe + record    and Recorder.record: the metrics series, the status entry (no components)
for a plain GET and for a check with two JSON-path assertions. Not the scheduler (APScheduler) nor the
components' on_result: bench/probe_cpu.py measures the whole daemon against its peer and the ceiling.
Usage: python bench/probe_path.py [--probes 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from callgrind import drive, print_layers, step, step_done, steps_over
from common import nginx_target

from checks.base import ProbeContext
from checks.call import make_session
from checks.http import HttpCheckConfig, probe
from integration_kit.redact import Redactor
from monitor.metrics import Metrics
from monitor.recorder import Recorder

CONCURRENCY = 32
JSON_EXPECT = {"json": {"$.data.id": {"non_empty": True}, "$.livemode": {"not_null": True}}}


async def closed_loop(one: Callable[[], Awaitable[None]], probes: int) -> None:
    left = probes

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def worker(url: str, probes: int, rounds: int) -> None:
    bare = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                 timeout=aiohttp.ClientTimeout(total=60))
    session = make_session(limit=0)
    redactor = Redactor()
    recorder = Recorder(Metrics(), redactor)
    ctx = ProbeContext(integration="bench", redactor=redactor, session=session)
    # Deadlines far off: under callgrind (~50 times slower) on a loaded machine, 32 probes in flight once
    # missed a 5 s connect timeout; the deadline's value does not change what a probe counts.
    slack = {"timeout": 60, "connect_timeout": 60}
    checks = {
        "GET": HttpCheckConfig(name="c", kind="http", url=url, **slack, expect={"body_required": False}),
        "JSON": HttpCheckConfig(name="c", kind="http", url=url, **slack, expect=JSON_EXPECT),
    }

    async def bare_get() -> None:
        async with bare.get(url) as resp:
            await resp.read()

    async def session_get() -> None:
        async with session.get(url) as resp:
            await resp.read()

    def probing(check: HttpCheckConfig, *, record: bool) -> Callable[[], Awaitable[None]]:
        async def one() -> None:
            result = await probe(check, ctx)
            assert result.ok, result.detail
            if record:
                recorder.record(result)

        return one

    layers: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("bare aiohttp", bare_get), ("daemon session", session_get),
    ]
    for kind, check in checks.items():
        layers += [(f"probe, {kind}", probing(check, record=False)),
                   (f"probe + record, {kind}", probing(check, record=True))]
    for _, one in layers:  # warm: imports, first connections, caches
        await closed_loop(one, CONCURRENCY)
    for _ in range(rounds):
        for name, one in layers:
            step(name)
            await closed_loop(one, probes)
            step_done(probes)
    steps_over()
    await bare.close()
    await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        uvloop.run(worker(args.worker, args.probes, args.rounds))  # as the daemon runs (the speed extra)
        return
    with nginx_target() as url:
        counts = drive([sys.executable, __file__, "--worker", url, "--probes", str(args.probes),
                        "--rounds", str(args.rounds)])
    print_layers(counts, per="probe", base="bare aiohttp",
                 note=f"median of {args.rounds} rounds of {args.probes} probes, {CONCURRENCY} in flight")

if __name__ == "__main__":
    main()
