"""What scheduling costs per run, in instructions (callgrind): APScheduler as the daemon sets it up, the
daemon's own scheduler around it, and the same with a real request, side by side with the request alone.

The saturated daemon costs about twice a bare aiohttp loop in CPU per probe (bench/probe_cpu.py); this
splits the difference into the scheduler the product keeps (APScheduler: the floor) and what is ours.
Each step makes a batch of runs due at once and counts until the last one is done (one wake-up of
APScheduler for the batch, as a saturated daemon has ~40 runs due per 20 ms wake-up); the job store also
holds ``--idle`` jobs not due, as at saturation, and the cycle collector is set as the daemon sets it
(monitor/long_lived.py: rarer young collections, what lives long frozen). Layers, on uvloop as the daemon
runs, 32 runs in flight:
  tasks, no-op            a task per run that does nothing: what starting a coroutine costs at all
  APScheduler, no-op      BatchingScheduler, jobs as monitor/scheduler.py adds them (interval trigger with
                          jitter, max_instances 1, coalesce, misfire grace), each run a no-op
  daemon scheduler, no-op monitor.scheduler.Scheduler: the same plus ours (the concurrency slot, the lag
                          histogram, the overrun deadline, the submitted-event listener), a no-op probe
  bare aiohttp            a batch of bare requests (bench/bare_aiohttp.py's session), 32 in flight
  APScheduler + aiohttp   the same requests, each run by an APScheduler job: the floor the issue accepts
  daemon, probe + record  the daemon's scheduler running checks.http.probe (GET) and Recorder.record, the
                          checks as a running daemon has them (request plan, series and status entry
                          built by an earlier run; until 30 Nov 2026 every counted run paid them)
Usage: python bench/scheduler_path.py [--batch 400] [--rounds 3] [--idle 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from callgrind import drive, print_layers, step, step_done, steps_over
from common import nginx_target

from checks import run_probe
from checks.base import CheckConfigBase, ProbeContext
from checks.call import make_session
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor import first_runs, long_lived
from monitor.aps_plugins import JitteredInterval
from monitor.batching_scheduler import BatchingScheduler
from monitor.metrics import Metrics
from monitor.recorder import Recorder
from monitor.scheduler import Scheduler
from monitor.settings import Config, parse_config

CONCURRENCY = 32  # runs in flight, as bench/probe_cpu.py's saturation
INTERVAL = 3600.0  # a run's next one is far off: each job runs once in the bench
JITTER = 0.1  # monitor.jitter's default


class Done:
    """Counts finished runs; ``wait`` returns once ``n`` more are done."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event = asyncio.Event()

    def one(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.event.set()

    async def wait(self, n: int) -> None:
        self.target = self.count + n
        self.event.clear()
        await self.event.wait()


def batch_first_runs(jobs: list[str], wanted: dict[str, tuple[str, CheckConfigBase]], now: float,
                     shortest: float | None = None) -> dict[str, float]:
    """The daemon's first runs in this bench (``first_runs.spread`` replaced): those of the checks named ``due…``
    all at once (the batch of a step) and of the others an interval away (the idle store), instead of spread
    over a start window."""
    return {jid: now if wanted[jid][1].name.startswith("due") else now + INTERVAL for jid in jobs}


def config(url: str, names: list[str]) -> Config:
    lines = [f"monitor: {{max_concurrency: {CONCURRENCY}, jitter: {JITTER}}}", "integrations:", "  bench:",
             "    checks:"]
    lines += [f'      - {{name: {n}, kind: http, url: "{url}", interval: {INTERVAL:g}s, timeout: 60s, '
              "connect_timeout: 60s, expect: {body_required: false}}" for n in names]
    return parse_config("\n".join(lines) + "\n", env={})


def first_checks(full: Config, n: int) -> Config:
    """``full`` with its first ``n`` checks (a copy, not validated again: parsing is slow under callgrind)."""
    integration = full.integrations["bench"]
    return full.model_copy(update={"integrations": {"bench": integration.model_copy(
        update={"checks": integration.checks[:n]})}})


def add_aps_job(aps: BatchingScheduler, job: Callable[[], Awaitable[None]], jid: str, first: datetime) -> None:
    """A job as monitor/scheduler.py adds one (its ``_trigger`` and ``add_job`` arguments)."""
    aps.add_job(job, trigger=JitteredInterval(seconds=INTERVAL * (1 - JITTER / 2), jitter=INTERVAL * JITTER,
                                             start_date=first, timezone=UTC),
                id=jid, next_run_time=first, max_instances=1, coalesce=True, misfire_grace_time=round(INTERVAL))


async def worker(url: str, batch: int, rounds: int, idle: int) -> None:
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):  # as the daemon quietens them
        logging.getLogger(name).setLevel(logging.ERROR)
    bare = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                 timeout=aiohttp.ClientTimeout(total=60))
    session = make_session(limit=0)
    done = Done()
    slots = asyncio.Semaphore(CONCURRENCY)

    async def noop() -> None:
        done.one()

    async def bare_get() -> None:
        async with slots, bare.get(url) as resp:
            await resp.read()
        done.one()

    async def tasks(job: Callable[[], Awaitable[None]]) -> None:
        running = {asyncio.ensure_future(job()) for _ in range(batch)}  # (APScheduler's executor starts a run so)
        await done.wait(batch)
        await asyncio.wait(running)

    # APScheduler alone, one scheduler per job kind, each with its idle store.
    aps_schedulers = {}
    far = datetime.now(UTC) + timedelta(seconds=INTERVAL)
    for kind, job in (("noop", noop), ("aiohttp", bare_get)):
        aps = BatchingScheduler(timezone=UTC)
        aps.start(paused=True)
        for i in range(idle):
            add_aps_job(aps, job, f"idle{i}", far)
        aps_schedulers[kind] = (aps, job)

    async def aps_batch(kind: str, n: int) -> None:
        aps, job = aps_schedulers[kind]
        now = datetime.now(UTC)
        for i in range(batch):
            add_aps_job(aps, job, f"due{n}-{i}", now)  # paused: added, not yet run
        step(f"APScheduler, {'no-op' if kind == 'noop' else '+ aiohttp'}")
        aps.resume()
        await done.wait(batch)
        step_done(batch)
        aps.pause()

    # The daemon's scheduler, one with a no-op probe, one with the real probe and the recorder.
    redactor = Redactor()
    metrics = Metrics()
    recorder = Recorder(metrics, redactor)
    prebuilt = CheckResult(integration="bench", check="noop", kind="http", ok=True, error_class=None, detail="",
                           started_at=0.0, duration=0.0, total_duration=0.0)

    async def noop_probe(check: CheckConfigBase, ctx: ProbeContext) -> CheckResult:
        return prebuilt

    def record(result: CheckResult) -> None:
        recorder.record(result)
        done.one()

    # Every check of the bench in one config, parsed once; each round's schedulers get a few more of them.
    full = config(url, [f"idle{i}" for i in range(idle)] + [f"due{n}-{i}" for n in range(rounds + 1)
                                                          for i in range(batch)])
    first_runs.spread = batch_first_runs
    daemons: dict[str, Scheduler] = {}
    for kind, runner, on_result in (("noop", noop_probe, lambda _: done.one()), ("probe", run_probe, record)):
        sched = Scheduler(first_checks(full, idle), metrics=metrics, redactor=redactor, record=on_result,
                          run_probe=runner)
        sched.session = session
        sched.start()
        daemons[kind] = sched

    def as_if_run_before(checks: list[CheckConfigBase]) -> None:
        """What a check's first run builds once and its later runs reuse (its request plan, its metric
        series and status entry): a batch of checks new to the daemon would count them in every run."""
        for check in checks:
            getattr(check, "request_plan", None)
            recorder.record(replace(prebuilt, check=check.name))

    async def daemon_batch(kind: str, n: int) -> None:
        sched = daemons[kind]
        cfg = first_checks(full, idle + (n + 1) * batch)
        if kind == "probe":
            as_if_run_before(cfg.integrations["bench"].checks[-batch:])
        # (apply() would resume APScheduler at once: the batch is added while it is paused, and the step
        # counts from its resume, as for APScheduler alone.)
        sched._aps.pause()
        sched.config = cfg
        sched._sync_jobs(cfg)
        step(f"daemon scheduler, {'no-op probe' if kind == 'noop' else 'probe + record'}")
        sched._aps.resume()
        await done.wait(batch)
        step_done(batch)

    long_lived.tune_young_collections()  # as App.run does
    for n in range(rounds + 1):  # round 0 warms up (imports, first connections, caches) and is not counted
        counted = n > 0
        for label, job in (("tasks, no-op", noop), ("bare aiohttp", bare_get)):
            if counted:
                step(label)
            await tasks(job)
            if counted:
                step_done(batch)
        for kind in ("noop", "aiohttp"):
            if counted:
                await aps_batch(kind, n)
            else:
                aps, job = aps_schedulers[kind]
                now = datetime.now(UTC)
                for i in range(batch):
                    add_aps_job(aps, job, f"warm{i}", now)
                aps.resume()
                await done.wait(batch)
                aps.pause()
        for kind in ("noop", "probe"):
            if counted:
                await daemon_batch(kind, n)
            else:
                daemons[kind].apply(first_checks(full, idle + batch))
                await done.wait(batch)
        if not counted:
            long_lived.freeze()  # what the first runs built, as the daemon's keeper does once they settled
    steps_over()
    for sched in daemons.values():
        await sched.stop(grace=1)
    for aps, _ in aps_schedulers.values():
        aps.shutdown(wait=False)
    await bare.close()
    await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=400, help="runs due at once in a step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=2000, help="jobs in the store not due")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        uvloop.run(worker(args.worker, args.batch, args.rounds, args.idle))
        return
    started = time.monotonic()
    with nginx_target() as url:
        counts = drive([sys.executable, __file__, "--worker", url, "--batch", str(args.batch),
                        "--rounds", str(args.rounds), "--idle", str(args.idle)])
    print_layers(counts, per="run", base="bare aiohttp",
                 note=f"median of {args.rounds} rounds of {args.batch} runs due at once, {CONCURRENCY} in flight, "
                      f"{args.idle} more jobs in the store ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
