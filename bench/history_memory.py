"""The alert history per check (alerts/stats.py) once it is full: bytes, and what the windows cost.

Each check of ``Stats``, built as the alert engine builds it for the default rules (longest window 1 d;
runs kept one by one for the 1 h the windows that must be exact reach back, where the code knows that),
is given a day and an hour of runs every ``--intervals`` seconds (30 and 60), in three shapes: ``healthy``
(no run fails), ``sporadic`` (one run in twenty fails, timeouts and 5xx) and ``down`` (every run fails,
all day). Each measure runs in a fresh process per tree, interval and shape:

  - ``bytes``: tracemalloc's live bytes per check (``--checks`` checks; the last result and last failure
    each check keeps are counted too), and of those, what came after the check's first run (what a
    daemon's RSS grows by over the day after its first minute);
  - ``rss``: the process's RSS growth per check, untraced (``--rss-checks`` checks): what the allocator
    really takes, and × 10,000, what a 10,000-check daemon adds once its history is full;
  - ``--instructions``: instructions (callgrind) of what a full evaluation pass asks of a check's history:
    the six windows of the default burn-rate tiers (5 m, 30 m, 1 h, 2 h, 6 h, 1 d) and three ``covers``,
    per check (60 s runs; deterministic, so a loaded machine does not move them).

``--before TREE`` measures another checkout (``git archive main alerts integration_kit | tar -x -C DIR``)
the same way first, with ``PYTHONPATH=TREE``, and prints both side by side.
Usage: python bench/history_memory.py [--before TREE] [--checks 100] [--rss-checks 2000] [--instructions]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import inspect
import json
import os
import statistics
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callgrind import drive, step, step_done, steps_over
from common import rss_bytes

SHAPES = ("healthy", "sporadic", "down")
DAY = 86400.0
EXACT = 3600.0  # how far back the engine keeps runs one by one for the default rules (engine._exact_window)
WINDOWS = (300.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
T0 = 1_800_000_000.0


def filled(checks: int, interval: float, shape: str, runs: int | None = None) -> tuple[Any, float]:
    """``Stats`` with ``checks`` checks, each with a day and an hour of runs; and the time of the last run."""
    from alerts.stats import Stats
    from integration_kit.errors import ErrorClass
    from integration_kit.results import CheckResult

    kwargs = {"exact_window": EXACT} if "exact_window" in inspect.signature(Stats).parameters else {}
    stats = Stats(max_window=DAY, **kwargs)
    runs = int((DAY + 3600) / interval) if runs is None else runs
    at = T0
    for k in range(runs):
        at = T0 + k * interval
        by_error = {}  # one result per round and kind, shared by the checks (a check's statistics keep two)
        for error in (None, ErrorClass.TIMEOUT if k % 3 else ErrorClass.HTTP_5XX):
            by_error[error is not None] = CheckResult(
                integration="acme", check="c0", kind="http", ok=error is None, error_class=error, detail="",
                started_at=at, duration=0.1 + (k % 7) / 100, total_duration=0.1,
                status_code=None if error is ErrorClass.TIMEOUT else 200)
        for c in range(checks):
            fails = shape == "down" or (shape == "sporadic" and (k + c) % 20 == 0)
            if k == 0:  # makes the check's statistics; then they are fed directly
                stats.add(dataclasses.replace(by_error[fails], check=f"c{c}"))
            else:
                stats.checks[("acme", f"c{c}")].add(by_error[fails])
    return stats, at


def worker(measure: str, checks: int, interval: float, shape: str) -> None:
    if measure == "instructions":
        stats, at = filled(checks, interval, shape)
        views = [stats.check("acme", f"c{c}") for c in range(checks)]
        last = views[-1].last_result  # ten more runs each time (the checks' shape: that of the last one)
        for round_ in range(3):
            later = [dataclasses.replace(last, started_at=at + (round_ * 10 + j) * interval) for j in range(1, 11)]
            step("adds")
            for view in views:
                for result in later:
                    view.add(result)
            step_done(checks * len(later))
        at += 30 * interval
        now = at + interval / 2
        for _ in range(3):
            step("windows")
            for view in views:
                for seconds in WINDOWS:
                    view.window(now, seconds)
                for seconds in (300.0, 1800.0, 7200.0):
                    view.covers(now, seconds)
            step_done(checks)
        steps_over()
        return
    filled(1, interval, shape)  # the imports and the class table, before the count starts
    gc.collect()
    if measure in ("bytes", "first"):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss_bytes(os.getpid())
    stats, _ = filled(checks, interval, shape, 1 if measure == "first" else None)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if measure in ("bytes", "first") else rss_bytes(os.getpid())
    print(json.dumps({"per_check": (after - before) / checks, "kept": len(stats.checks)}))


def run(tree: str | None, measure: str, checks: int, interval: float, shape: str) -> Any:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(Path(tree).resolve())
    argv = [sys.executable, __file__, "--worker", measure, str(checks), str(interval), shape]
    if measure == "instructions":
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = env.get("PYTHONPATH", "")  # drive() passes our environment on
        try:
            counts = drive(argv)
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
        return {step: statistics.median(c[0] / int(n) for c, n in samples) for step, samples in counts.items()}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=3600)
    return float(json.loads(out.stdout)["per_check"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="TREE", help="also measure this checkout (PYTHONPATH=TREE), first")
    parser.add_argument("--checks", type=int, default=100, help="checks, tracemalloc measure")
    parser.add_argument("--rss-checks", type=int, default=2000, help="checks, RSS measure")
    parser.add_argument("--intervals", type=float, nargs="*", default=[30.0, 60.0])
    parser.add_argument("--instructions", action="store_true", help="also count the windows' instructions")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        measure, checks, interval, shape = args.worker
        worker(measure, int(checks), float(interval), shape)
        return
    trees = {"before": args.before, "this tree": None} if args.before else {"this tree": None}
    print("| interval | shape | " + " | ".join(
        f"{name}: B/check (traced) | {name}: of which after the first run | {name}: B/check (RSS)" for name in trees
    ) + " |")
    print("|---|---|" + "---|---|---|" * len(trees))
    for interval in args.intervals:
        for shape in SHAPES:
            cells = []
            for tree in trees.values():
                traced = run(tree, "bytes", args.checks, interval, shape)
                first = run(tree, "first", args.checks, interval, shape)
                rss = run(tree, "rss", args.rss_checks, interval, shape)
                cells += [f"{traced:,.0f}", f"{traced - first:,.0f}",
                          f"{rss:,.0f} ({rss * 10_000 / 2**20:,.0f} MB at 10,000)"]
            print(f"| {interval:g} s | {shape} | " + " | ".join(cells) + " |", flush=True)
    if args.instructions:
        print("\n| shape | " + " | ".join(f"{name}: instructions per check, 6 windows + 3 covers | "
                                          f"{name}: per run added" for name in trees) + " |")
        print("|---|" + "---|---|" * len(trees))
        for shape in SHAPES:
            cells = []
            for tree in trees.values():
                counted = run(tree, "instructions", 200, 60.0, shape)
                cells += [f"{counted['windows'] / 1e3:,.1f} k", f"{counted['adds'] / 1e3:,.1f} k"]
            print(f"| {shape} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
