"""Instructions per skipped run (callgrind): the daemon's scheduler with every check's previous run still
going, side by side with another checkout's (``--before TREE``).

At saturation (bench/probe_cpu.py: 2,000 checks due each second, more than the process runs when the
machine is short of CPU) runs wait in line for the 32 probe slots, and a check whose previous run still
waits when its next one falls due has that one skipped (``max_instances=1``: a check never overlaps
itself). A skipped run probes nothing and still costs APScheduler's wake-up work for it (its run times
drawn, the executor's refusal, the skip's event to the listeners) and the job store's move of the job to its
next run. Here every probe hangs, so after each check's first run every due run is skipped: the
``monitor.scheduler.Scheduler`` of each tree, 2,000 checks at 1 s on uvloop, windows of 2 s of skips once
the first runs are in (the cycle collector set and the first runs' state frozen as the daemon does).
Deterministic per skip (the number of skips a window varies with the machine's speed). Needs valgrind.

    .venv/bin/python bench/skipped_run.py [--before TREE] [--checks 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callgrind import drive, step, step_done, steps_over

WINDOW = 2.0  # seconds of skips a step


async def worker(checks: int, rounds: int) -> None:
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent

    from integration_kit.redact import Redactor
    from monitor import long_lived
    from monitor.metrics import Metrics
    from monitor.scheduler import Scheduler
    from monitor.settings import parse_config

    lines = ["monitor: {max_concurrency: 32, jitter: 0.1}", "integrations:", "  bench:", "    checks:"]
    lines += [f'      - {{name: c{i}, kind: http, url: "http://127.0.0.1:9/", interval: 1s, timeout: 1h}}'
              for i in range(checks)]

    async def hangs(check: object, ctx: object) -> None:
        await asyncio.Event().wait()

    scheduler = Scheduler(parse_config("\n".join(lines) + "\n", env={}), metrics=Metrics(), redactor=Redactor(),
                          record=lambda result: None, run_probe=hangs)  # type: ignore[arg-type]
    skipped = [0]

    def count(event: JobEvent) -> None:
        skipped[0] += 1

    scheduler._aps.add_listener(count, EVENT_JOB_MAX_INSTANCES)  # (the daemon's own count restarts every minute)
    scheduler.start()
    long_lived.tune_young_collections()
    await asyncio.sleep(4)  # the first runs (spread over 2 s), then skips only
    long_lived.freeze()
    for _ in range(rounds):
        before = skipped[0]
        step("skips")
        await asyncio.sleep(WINDOW)
        step_done(skipped[0] - before)
    steps_over()
    await scheduler.stop(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout's tree, measured side by side")
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(args.worker))
        import uvloop

        uvloop.run(worker(args.checks, args.rounds))
        return
    trees = {"this tree": Path(__file__).resolve().parent.parent}
    if args.before:
        trees["before"] = args.before.resolve()
    print(f"k instructions per skipped run (callgrind), median (min–max) of {args.rounds} windows of {WINDOW:g} s; "
          f"{args.checks} checks at 1 s, every probe hanging\n")
    print("| tree | k instructions a skipped run | skips a window |")
    print("|---|---|---|")
    for label, tree in trees.items():
        counts = drive([sys.executable, __file__, "--checks", str(args.checks), "--rounds", str(args.rounds),
                        "--worker", str(tree)], instrument_from_start=False)
        per_skip = sorted(c[0] / int(n) for c, n in counts["skips"])
        skips = sorted(int(n) for _, n in counts["skips"])
        print(f"| {label} | {statistics.median(per_skip) / 1e3:.1f} ({per_skip[0] / 1e3:.1f}–{per_skip[-1] / 1e3:.1f}) "
              f"| {skips[0]:,}–{skips[-1]:,} |", flush=True)


if __name__ == "__main__":
    main()
