"""Instructions per job moved to its next run in the daemon's APScheduler job store (callgrind), side by side
with APScheduler's MemoryJobStore and another checkout's store (``--before TREE``).

At saturation every run, and every run skipped, moves its job from the front of the store's order (due) to
an interval later (near the back). The step replays that: wake-ups 20 ms apart (monitor/batching_scheduler.py's
slack), at each the due jobs read (``get_due_jobs``) and each moved to its next run (``update_job``), then
the next wake-up asked (``get_next_run_time``), as APScheduler's ``_process_jobs`` does; jobs at a 1 s
interval with APScheduler's jitter (10 %, the default), spread over the interval as the daemon spreads its
first runs. Counts include the replay's own few hundred instructions a move (the next run times are drawn
before). Deterministic: what the store costs a run, on any machine. Needs valgrind.

    .venv/bin/python bench/job_store.py [--before TREE] [--jobs 2000 10000 50000] [--moves 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callgrind import drive, step, step_done, steps_over

BASE = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
INTERVAL = 1.0  # seconds: probe_cpu.py's saturation, 2,000 checks due each second
JITTER = 0.1  # monitor.jitter's default share of the interval
WAKEUP = timedelta(milliseconds=20)


def store_class(label: str, tree: Path | None) -> Any:
    if tree is None:
        from apscheduler.jobstores.memory import MemoryJobStore
        return MemoryJobStore
    spec = importlib.util.spec_from_file_location(f"aps_plugins_{label}", tree / "monitor" / "aps_plugins.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SortedJobStore


class Replay:
    """APScheduler's wake-ups on a store of ``jobs`` jobs (see the module's docstring)."""

    def __init__(self, store: Any, jobs: int) -> None:
        rnd = random.Random(1)
        self.store, self.now, self.drawn = store, BASE, 0
        for i in range(jobs):
            store.add_job(SimpleNamespace(id=f"bench/c{i}", next_run_time=BASE + timedelta(seconds=rnd.random())))
        self.gaps = [timedelta(seconds=INTERVAL * (1 - JITTER / 2 + JITTER * rnd.random())) for _ in range(4099)]

    def wake_ups(self, at_least: int) -> int:
        """Whole wake-ups until ``at_least`` jobs moved: how many were."""
        store, gaps, now, drawn = self.store, self.gaps, self.now, self.drawn
        moved = 0
        while moved < at_least:
            now += WAKEUP
            for job in store.get_due_jobs(now):
                job.next_run_time += gaps[drawn % 4099]
                drawn += 1
                store.update_job(job)
                moved += 1
            store.get_next_run_time()
        self.now, self.drawn = now, drawn
        return moved


def worker(stores: dict[str, Path | None], jobs: int, moves: int, rounds: int) -> None:
    for label, tree in stores.items():
        replay = Replay(store_class(label, tree)(), jobs)
        replay.wake_ups(jobs)  # (every job moved once: as a running daemon's store)
        for _ in range(rounds):
            step(label)
            step_done(replay.wake_ups(moves))
    steps_over()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout's tree, measured side by side")
    parser.add_argument("--jobs", type=int, nargs="+", default=[2000, 10000, 50000])
    parser.add_argument("--moves", type=int, default=2000, help="jobs moved a round (whole wake-ups)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        pairs = zip(args.worker[::2], args.worker[1::2], strict=True)
        worker({label: None if tree == "-" else Path(tree) for label, tree in pairs}, args.jobs[0], args.moves,
               args.rounds)
        return
    stores = {"APScheduler's MemoryJobStore": "-", "this tree": str(Path(__file__).resolve().parent.parent)}
    if args.before:
        stores["before"] = str(args.before.resolve())
    print(f"k instructions per job moved (callgrind), median (min–max) of {args.rounds} rounds of "
          f"≥ {args.moves} moves; jobs at a {INTERVAL:g} s interval, {JITTER:.0%} jitter, wake-ups every 20 ms\n")
    print("| jobs | " + " | ".join(stores) + (" | this tree / before |" if args.before else " |"))
    print("|---|" + "---|" * (len(stores) + bool(args.before)))
    for jobs in args.jobs:
        counts = drive([sys.executable, __file__, "--jobs", str(jobs), "--moves", str(args.moves), "--rounds",
                        str(args.rounds), "--worker", *[x for pair in stores.items() for x in pair]],
                       instrument_from_start=False)
        per_move = {label: sorted(c[0] / int(n) for c, n in samples) for label, samples in counts.items()}
        cells = [f"{statistics.median(v) / 1e3:.1f} ({v[0] / 1e3:.1f}–{v[-1] / 1e3:.1f})" for v in per_move.values()]
        ratio = ([f"{statistics.median(per_move['this tree']) / statistics.median(per_move['before']):.2f}"]
                 if args.before else [])
        print(f"| {jobs:,} | " + " | ".join(cells + ratio) + " |", flush=True)


if __name__ == "__main__":
    main()
