"""How long a takeover holds a replica's event loop, in the scheduler (issue 16 item 4): the longest turn of
the loop, and the turns the takeover took, while a replica of three takes a crashed one's share over.

In-process, no network: ``--checks`` checks of scale.py's shape (100 an integration, 60 s interval), the
config parsed beforehand (not counted). A replica (``r2`` of ``r1,r2,r3``, the shares by the cluster's own
rendezvous hashing) prepares and starts its scheduler with its share; 5 s later (its first runs going on at
about the rate its share is due), ``r1`` is gone: the share of ``r2`` of ``r2,r3`` is handed to
``Scheduler.reshard`` as the cluster's listener hands it, each check taken over with its previous prober's
last run ``--ran-ago`` seconds back (90 s: more than the longest gap of a timetable, 60 s plus its jitter,
so each has a run due since and is caught up on). Probes are a no-op coroutine returning a result: what is
measured is the scheduler's own hold of the loop, which a replica's heartbeats wait behind. The cycle
collector is tuned and what is alive frozen before the takeover, as the daemon's process does
(monitor/long_lived.py).

A 2 ms timer task runs throughout; a turn's length is how late the timer fired (the loop held that long, or
the machine's load kept the process waiting), and its CPU time between two wake-ups (the load apart).
Reported: the CPU time of the scheduler's sync in each step it holds the loop (before the slices: all of
it, within the reshard call), the longest turn from the reshard call until the jobs match the share and the
catch-up runs are through, the number of timer wake-ups in that time, and the catch-up runs' spread.
``--before TREE``: another checkout's scheduler too (PYTHONPATH=TREE), interleaved, ``--rounds`` each.
Usage: python bench/takeover_turns.py [--checks 50000] [--rounds 3] [--before TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICK = 0.002  # seconds between the timer's wake-ups


class Share:
    """The placement the scheduler asks (monitor/cluster/placement.py's ``Placement``), set by the bench."""

    clustered = True
    degraded = False
    me = "r2"

    def __init__(self, checks: frozenset[str]) -> None:
        self.checks = checks
        self.ran: dict[str, float] = {}

    def probes(self, check_id: str) -> bool:
        return check_id in self.checks

    def ran_until(self, check_id: str) -> float:
        return self.ran.get(check_id, float("-inf"))

    def may_run(self) -> bool:
        return True


def timed(steps: Iterator[None], spent: list[float]) -> Iterator[None]:
    """``steps``, each one's CPU time appended to ``spent``."""
    while True:
        cpu = time.thread_time()
        done = next(steps, False) is False
        spent.append(time.thread_time() - cpu)
        if done:
            return
        yield


async def polled(condition: Callable[[], bool], every: float, within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(every)


async def takeover(checks: int, ran_ago: float) -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    from start_path import config_text

    from checks.base import CheckConfigBase, ProbeContext
    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.cluster.rendezvous import owners
    from monitor.long_lived import freeze, tune_young_collections
    from monitor.metrics import Metrics
    from monitor.scheduler import Scheduler
    from monitor.settings import Config, parse_config

    config = parse_config(config_text(checks))
    ids = [f"{i}/{c.name}" for i, c in config.iter_checks()]
    share = Share(frozenset(cid for cid, who in owners(ids, ("r1", "r2", "r3")).items() if who == "r2"))
    first_run: dict[str, float] = {}  # check id → its first run since the takeover (after: the first runs)

    async def probe(check: CheckConfigBase, ctx: ProbeContext) -> CheckResult:
        first_run.setdefault(f"{ctx.integration}/{check.name}", time.time())
        return CheckResult(integration="i", check="c", kind="http", ok=True, error_class=None, detail="",
                           started_at=time.time(), duration=0.0, total_duration=0.0)

    steps: list[float] = []  # CPU seconds of each step of the scheduler's syncs (a step holds the loop)
    sync_steps = Scheduler._sync_steps

    def timed_steps(self: Scheduler, config: Config) -> Iterator[None]:
        for _ in timed(sync_steps(self, config), steps):
            yield

    Scheduler._sync_steps = timed_steps  # type: ignore[method-assign]
    sched = Scheduler(config, metrics=Metrics(), redactor=Redactor(), record=lambda r: None,
                      run_probe=probe)
    sched.use_placement(share)  # type: ignore[arg-type]
    await sched.prepare()
    sched.start()
    await asyncio.sleep(5)  # (its first runs go on, at about the rate its share is due: 280 a second)
    tune_young_collections()  # as the daemon's process runs (App.run; monitor/long_lived.py)
    freeze()
    late: list[float] = []  # how late each wake-up of the timer came (wall clock: the machine's load too)
    held: list[float] = []  # CPU time this thread spent between two wake-ups (the load apart)

    async def timer() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, cpu = loop.time() + TICK, time.thread_time()
            await asyncio.sleep(TICK)
            late.append(loop.time() - due)
            held.append(time.thread_time() - cpu)

    ticking = asyncio.get_running_loop().create_task(timer())
    await asyncio.sleep(0.1)
    late.clear()
    held.clear()
    gained = frozenset(cid for cid, who in owners(ids, ("r2", "r3")).items() if who == "r2") - share.checks
    share.ran = dict.fromkeys(gained, time.time() - ran_ago)
    share.checks = share.checks | gained
    first_run.clear()
    del steps[:]
    t0, cpu0 = time.perf_counter(), time.thread_time()
    sched.reshard()  # as the cluster's listener calls it
    called, called_cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    await polled(lambda: len(sched._jobs) == len(share.checks), 0.01)
    matched = time.perf_counter() - t0
    sync_hold = max(called_cpu, *steps)  # (before slicing: the whole sync within the reshard call)
    await polled(lambda: gained <= first_run.keys(), 0.1)  # every check taken over ran
    ticking.cancel()
    await sched.stop(1.0)
    caught_up = [first_run[cid] for cid in gained if cid in first_run]
    return {"gained": len(gained), "reshard_call_s": called, "matched_s": matched,
            "longest_sync_hold_ms": 1000 * sync_hold, "sync_steps": len(steps),
            "longest_turn_ms": 1000 * max(called, *late), "longest_turn_cpu_ms": 1000 * max(called_cpu, *held),
            "timer_wakeups": len(late),
            "catch_ups": len(caught_up), "catch_up_spread_s": max(caught_up) - min(caught_up)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ran-ago", type=float, default=90.0,
                        help="seconds since the crashed replica last ran its checks (> 60 s + jitter: all caught up)")
    parser.add_argument("--before", help="another checkout: its scheduler too, interleaved")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if "PYTHONPATH" not in os.environ:
            sys.path.insert(0, str(HERE.parent))
        print(json.dumps(asyncio.run(takeover(args.checks, args.ran_ago))))
        return
    trees = {"this checkout": None, **({"before": args.before} if args.before else {})}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            env = {**os.environ, **({"PYTHONPATH": tree} if tree else {})}
            out = subprocess.run([sys.executable, __file__, "--worker", "--checks", str(args.checks),
                                  "--ran-ago", str(args.ran_ago)], env=env, capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.splitlines()[-1]))
            print(name, results[name][-1], flush=True)
    print(f"\n{args.checks:,} checks, r2 of r1,r2,r3 takes r1's share over (r2 of r2,r3); median (min–max) of "
          f"{args.rounds}\n")
    print("| tree | checks gained | catch-up runs (spread) | reshard call | jobs match after | longest step of the "
          "sync, CPU (steps) | longest turn, wall | longest turn, CPU | timer wake-ups |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        def cell(key: str, scale: float = 1.0, fmt: str = ".2f", rows: list[dict[str, float]] = rows) -> str:
            values = [scale * r[key] for r in rows]
            return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"
        print(f"| {name} | {rows[0]['gained']:.0f} | {cell('catch_ups', fmt='.0f')} ({cell('catch_up_spread_s')} s) "
              f"| {cell('reshard_call_s', 1000, '.0f')} ms | {cell('matched_s')} s "
              f"| {cell('longest_sync_hold_ms', 1, '.0f')} ms ({cell('sync_steps', fmt='.0f')}) "
              f"| {cell('longest_turn_ms', 1, '.0f')} ms | {cell('longest_turn_cpu_ms', 1, '.0f')} ms "
              f"| {cell('timer_wakeups', fmt='.0f')} |")


if __name__ == "__main__":
    main()
