"""What a start (or a takeover) costs per check in the scheduler, in instructions (callgrind): adding the
checks' jobs, side by side with APScheduler adding the same jobs alone (the floor with APScheduler).

At 50,000 checks the daemon's start is the config's parse, then the scheduler adding a job per check
before the first probe (seconds: bench/README.md); in a cluster a replica adds a job per check it takes
over from a crashed one, on the event loop, while the probes wait. Steps, each over ``--checks`` checks
of scale.py's shape (100 an integration, 60 s interval), the config parsed beforehand (not counted):
  APScheduler alone       BatchingScheduler adding a job per check as monitor/scheduler.py adds them
                          (the interval trigger with jitter, max_instances 1, coalesce, misfire grace), the
                          job's function a module-level coroutine function: the floor with APScheduler
  daemon, alone           Scheduler._sync_jobs of a daemon on its own (what start() does before APScheduler
                          starts): the first runs spread, a job per check
  daemon, in a cluster    the same as a replica of a cluster with every check fresh (a first start): the
                          checks' timetables (monitor/cluster/grid.py)
``--before TREE``: the daemon's steps of another checkout too (PYTHONPATH=TREE), in the same run.
Usage: python bench/start_path.py [--checks 2000] [--rounds 3] [--before TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def config_text(checks: int, *, own_urls: bool = False) -> str:
    """scale.py's shape; ``own_urls``: each check's URL its own (a query naming it), as real configs are."""
    lines = ["integrations:"]
    for i in range(checks):
        if i % 100 == 0:
            lines += [f"  vendor{i // 100}:", "    checks:"]
        url = f"http://127.0.0.1:9/ok?page={i}" if own_urls else "http://127.0.0.1:9/ok"
        lines.append(f'      - {{name: c{i}, kind: http, url: "{url}", interval: 60s, timeout: 5s}}')
    return "\n".join(lines) + "\n"


async def _noop(jid: str) -> None:
    return None


def worker(checks: int, rounds: int, floor: bool) -> None:
    sys.path.insert(0, str(HERE))
    if "PYTHONPATH" not in os.environ:
        sys.path.insert(0, str(HERE.parent))
    from callgrind import step, step_done, steps_over

    from integration_kit.redact import Redactor
    from monitor.aps_plugins import JitteredInterval
    from monitor.batching_scheduler import BatchingScheduler
    from monitor.metrics import Metrics
    from monitor.scheduler import Scheduler
    from monitor.settings import parse_config

    config = parse_config(config_text(checks))
    ids = [f"{i}/{c.name}" for i, c in config.iter_checks()]

    class Fresh:  # a cluster's placement at a first start: every check here, none ever run
        clustered = True

        def probes(self, jid: str) -> bool:
            return True

        def ran_until(self, jid: str) -> float:
            return float("-inf")

        def may_run(self) -> bool:
            return True

    async def rounds_of() -> None:
        now = datetime.now(UTC)
        for _ in range(rounds):
            if floor:
                aps = BatchingScheduler(timezone=UTC)
                step("APScheduler alone")
                for jid in ids:
                    aps.add_job(_noop, trigger=JitteredInterval(seconds=57.0, jitter=6.0, start_date=now, timezone=UTC),
                                args=(jid,), id=jid, name=jid, next_run_time=now, max_instances=1, coalesce=True,
                                misfire_grace_time=60)
                step_done(len(ids))
            for variant, placement in (("alone", None), ("in a cluster", Fresh())):
                scheduler = Scheduler(config, metrics=Metrics(), redactor=Redactor([]), record=lambda r: None,
                                      placement=placement)
                step(f"daemon, {variant}")
                scheduler._sync_jobs(config)
                step_done(len(ids))
        steps_over()

    asyncio.run(rounds_of())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another checkout: its daemon's steps too, in the same run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.checks, args.rounds, args.floor)
        return
    sys.path.insert(0, str(HERE))
    from callgrind import drive_trees

    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--checks", str(args.checks),
            "--rounds", str(args.rounds)]
    per_check: dict[str, list[float]] = {}
    for suffix, counts in drive_trees(argv, args.before, floor=["--floor"], instrument_from_start=False):
        for name, samples in counts.items():
            label = name if name.startswith("APScheduler") else name + suffix
            per_check[label] = sorted(c[0] / int(n) for c, n in samples)
    floor = statistics.median(per_check["APScheduler alone"])
    print(f"\ninstructions per check added, {args.checks:,} checks, median of {args.rounds} rounds (min–max)\n")
    print("| step | k instructions a check | × APScheduler alone | at 50,000 checks (G instructions) |")
    print("|---|---|---|---|")
    for name, values in per_check.items():
        med = statistics.median(values)
        print(f"| {name} | {med / 1e3:.1f} ({values[0] / 1e3:.1f}–{values[-1] / 1e3:.1f}) | {med / floor:.2f} | "
              f"{med * 50_000 / 1e9:.2f} |")


if __name__ == "__main__":
    main()
