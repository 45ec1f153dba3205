"""Alert evaluation cost and latency.

1. CPU time of one ``AlertEngine.evaluate()`` with N checks that each have history (``--history`` runs
   ``--every`` seconds: by default six hours of 30 s runs; all default rules, memory store; one check in
   twenty with a failed run), per evaluation and per check, and the longest time it held the event loop
   (probes due meanwhile start that much late); side by side, interleaved: windows by running sums (as
   the engine counts them) and by walking every run (as before issue 16). Also the process's RSS with
   that history in memory. The config is frozen out of the cycle collector's sight as the daemon does
   (``--no-freeze``: not).
2. CPU time of one early evaluation (a wake between full passes: a check started failing, a deadline
   fell due), side by side and interleaved: as it is (incremental: only the checks with new results since
   they were last judged, ``alerts/concerns.py``) and as a full pass (what every wake was before). Before
   each wake, the checks that ran during the ``--wake-after`` seconds since the previous evaluation
   (1 s, the loop's shortest gap: 1/30 of the checks at 30 s intervals) get a result, one of them failing.
3. Latency from a failing probe result to the hand-off to the notifier queue, with the real evaluation
   loop running (``evaluation_interval`` and ``group_wait`` as given): what a user waits beyond the
   probe itself. A newly failing check wakes the loop early, but evaluations are at least 1 s apart;
   each sample fails right after the previous resolve's evaluation, so it shows that worst case
   (the first sample, with no evaluation just before, shows the best).

``--instructions``: instead, instructions per full pass (callgrind, deterministic: the load does not
move them), the error-rate rule's burn-rate tiers as they are asked now (the cheap questions first,
``alerts/rules/error_rate.py``) side by side with every tier's two windows asked as before (the reference
of tests/test_burn_rate_tiers.py), interleaved rounds in one process on the same history; also the
error-rate rule alone over every integration, both ways. ``--before TREE``: the same counts of another
checkout first (``git archive main alerts integration_kit monitor checks | tar -x -C TREE``). The history
is built with the counting off (valgrind runs it several times faster so). Needs Debian's ``valgrind``.

``--instructions --shape daemon``: the daemon's shape instead (``scale.py``'s config: 100 checks an
integration at 60 s, one in a hundred refused with 401 all day; ``--flapping SHARE``: that share of the
checks fails three runs in every ten, with 503), each check's history filled as ``day_history.py`` fills
it, in its first minutes (3 runs) and with a day of them (1,440), then run as the daemon runs it: every
minute a new run of every check and four full passes 15 s apart (the default ``evaluation_interval``).
Instructions per check of the pass that follows the new runs and of the three that follow none, median
of ``--rounds`` minutes, each history and tree in a worker of its own (``--before TREE`` too).

Prints one JSON line (``--instructions``: a table).  Usage: python -m bench.alert_eval [--checks 200]
[--rounds 10] [--interval 1s] [--group-wait 0s] [--history 720] [--every 30] [--wake-after 1] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from alerts.engine import AlertEngine
from alerts.model import Notification
from alerts.stats import CheckStats, Stats, WindowCounts
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from alerts.outbox import Record

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import rss_bytes
from test_alert_engine import Sink as InstantSink


def make_config(checks: int, interval: str, group_wait: str) -> Config:
    per = 10
    integrations: dict[str, Any] = {}
    for i in range(0, checks, per):
        integrations[f"vendor{i // per}"] = {
            "checks": [{"name": f"c{j}", "kind": "http", "url": "https://x.test/", "interval": "30s",
                        "expect": {"max_latency": "1s"}} for j in range(min(per, checks - i))],
            "alerts": {"probe_down": {"consecutive_failures": 1, "keep_firing_for": 0}},
        }
    return parse_config(yaml.safe_dump({
        "monitor": {"evaluation_interval": interval},
        "integrations": integrations,
        "alerting": {"group_wait": group_wait, "group_interval": "0s", "flapping": {"max_transitions": 1000}},
    }), env={})


def result(integration: str, check: str, at: float, ok: bool) -> CheckResult:
    return CheckResult(integration=integration, check=check, kind="http", ok=ok,
                       error_class=None if ok else ErrorClass.HTTP_5XX, detail="", started_at=at, duration=0.2,
                       total_duration=0.2, status_code=200 if ok else 503)


class Sink(InstantSink):
    """The engine tests' sink (one notifier that delivers at once), noting when each notification came."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[tuple[float, Notification]] = []

    async def submit_to(self, notifier: str, notification: Notification, record: Record) -> None:
        self.handed.append((time.time(), notification))
        await super().submit_to(notifier, notification, record)

    async def submit(self, notification: Notification) -> None:  # the sink's interface before issue 13
        self.handed.append((time.time(), notification))
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        while len(self.handed) < count:
            self.arrived.clear()
            await self.arrived.wait()


class LoopWatch:
    """The longest time the event loop was held (between two 1 ms ticks) while it runs."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.longest = max(self.longest, time.perf_counter() - before - 0.001)

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0.005)  # ticking before what is watched starts
        self.longest = 0.0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def spread(values: list[float], scale: float = 1000.0) -> str:
    """median (min–max), in ms by default."""
    return f"{statistics.median(values) * scale:.1f} ({min(values) * scale:.1f}–{max(values) * scale:.1f})"


async def evaluations(engine: AlertEngine, rounds: int, checks: int) -> dict[str, Any]:
    """``rounds`` evaluations, interleaved: windows counted by running sums (the engine as it is) and by
    walking every run and bucket (``CheckStats._scan``, what ``window`` did before issue 16)."""
    ways = ("sums", "walk") if hasattr(CheckStats, "_scan") else ("sums",)  # (run on older code: no walk)
    by: dict[str, dict[str, list[float]]] = {way: {"cpu": [], "hold": []} for way in ways}
    sums = CheckStats.window

    def walk(stats: CheckStats, now: float, seconds: float, **_: object) -> WindowCounts:
        return stats._scan(now, seconds)  # (its classes whether asked or not, as before)

    try:
        for _ in range(rounds):
            for way in by:
                CheckStats.window = sums if way == "sums" else walk  # type: ignore[method-assign]
                await asyncio.sleep(0.01)
                async with LoopWatch() as watch:
                    started = time.process_time()
                    await engine.evaluate()
                    by[way]["cpu"].append(time.process_time() - started)
                    await asyncio.sleep(0.002)
                by[way]["hold"].append(watch.longest)
    finally:
        CheckStats.window = sums  # type: ignore[method-assign]
    out: dict[str, Any] = {}
    for way, got in by.items():
        out[f"evaluate_cpu_ms_{way}"] = spread(got["cpu"])
        out[f"cpu_us_per_check_{way}"] = spread([c / checks for c in got["cpu"]], 1e6)
        out[f"loop_held_ms_longest_{way}"] = spread(got["hold"])
    if "walk" in by:
        out["walk_over_sums"] = round(statistics.median(by["walk"]["cpu"]) / statistics.median(by["sums"]["cpu"]), 2)
    return out


async def wakes(engine: AlertEngine, cfg: Config, rounds: int, wake_after: float) -> dict[str, Any]:
    """``rounds`` early evaluations each way, interleaved: incremental (as the loop runs them) and full."""
    checks = list(cfg.iter_checks())
    per_wake = max(1, round(len(checks) * wake_after / 30))  # the bench's checks run every 30 s
    ran = 0
    cpu: dict[str, list[float]] = {"incremental": [], "full": []}
    if not hasattr(engine, "_concerns"):  # (run on older code: every evaluation a full pass)
        del cpu["incremental"]
    for _ in range(rounds):
        for way in cpu:
            at = time.time()
            for k in range(per_wake):
                integration, check = checks[(ran + k) % len(checks)]
                engine.on_result(result(integration, check.name, at, k != 0))  # one starts failing
            ran += per_wake
            await asyncio.sleep(0.01)
            started = time.process_time()
            if way == "full":
                await engine.evaluate()
            else:
                await engine.evaluate(full=False)
            cpu[way].append(time.process_time() - started)
    out: dict[str, Any] = {"wake_checks_with_new_results": per_wake}
    for way, got in cpu.items():
        out[f"wake_cpu_ms_{way}"] = spread(got)
    if "incremental" in cpu:
        full, incremental = statistics.median(cpu["full"]), statistics.median(cpu["incremental"])
        out["wake_full_over_incremental"] = round(full / incremental, 1)
    return out


def history_of(stats: Stats, cfg: Config, history: int, every: float, now: float) -> None:
    """The history ``main`` feeds, straight into the statistics (runs ``every`` seconds before ``now``, one
    check in twenty with one failed run): the same counts, built faster from a copy of one healthy check's."""
    blank = copy.copy(stats)  # the same widths and capacities, checks of its own
    blank.checks = {}
    for k in range(history):
        blank.add(result("-", "-", now - (history - k) * every, True))
    healthy = blank.checks[("-", "-")]
    for i, (integration, check) in enumerate(cfg.iter_checks()):
        if i % 20:
            stats.checks[(integration, check.name)] = copy.deepcopy(healthy)
            continue
        for k in range(history):
            stats.add(result(integration, check.name, now - (history - k) * every, k != (i * 7) % history))


async def instructions_worker(args: argparse.Namespace) -> None:
    """Under callgrind (``instructions``): full passes and the error-rate rule alone over every integration,
    interleaved; with ``--reference``, each also with every tier's windows asked as before."""
    from callgrind import step, step_done, steps_over

    from alerts.rules import RuleInput, error_rate

    cfg = make_config(args.checks, args.interval, args.group_wait)
    engine = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), sink=Sink(), autorun=False)
    now = 1_800_000_000.0
    history_of(engine.stats, cfg, args.history, args.every, now)
    await engine.start()
    gc.collect()
    gc.freeze()  # the collector out of the counts, as the daemon keeps its config out of its sight
    gc.disable()
    ways = {args.label: error_rate._burn_rate}
    if args.reference:
        from test_burn_rate_tiers import every_window
        ways = {f"{args.label}, every window (before)": every_window, **ways}
    for burn_rate in ways.values():  # warm-up: each way's first pass takes its alert states' first steps
        error_rate._burn_rate = burn_rate  # type: ignore[assignment]
        await engine.evaluate(now)
    for _ in range(args.rounds):
        for way, burn_rate in ways.items():
            error_rate._burn_rate = burn_rate  # type: ignore[assignment]
            step(f"{way}: full pass")
            await engine.evaluate(now)
            step_done(args.checks)
            step(f"{way}: error_rate rule alone")
            for integration, icfg in cfg.integrations.items():
                list(error_rate.evaluate(RuleInput(integration=integration, config=icfg, stats=engine.stats,
                                                   quotas={}, now=now, active=frozenset())))
            step_done(args.checks)
    steps_over()
    await engine.close()


EVALUATION_INTERVAL = 15.0  # the daemon's default: four full passes to a check's 60 s interval
HISTORIES = {"first minutes": 3, "a day": 1440}  # runs of history a check (--shape daemon)
FLAPPING_RUNS = (3, 10)  # a flapping check fails this many runs in every so many (--flapping)


def daemon_outcome(flapping: float) -> Callable[[int, int], ErrorClass | None]:
    """The error class of the check numbered i at run k in the daemon's shape (None: a success)."""
    from scale import FAILING_EVERY

    every = round(1 / flapping) if flapping else 0
    failed, out_of = FLAPPING_RUNS

    def outcome(i: int, k: int) -> ErrorClass | None:
        if i % FAILING_EVERY == FAILING_EVERY - 1:
            return ErrorClass.AUTH
        if every and i % every == every // 2 and k % out_of < failed:
            return ErrorClass.HTTP_5XX
        return None
    return outcome


async def daemon_shape_worker(args: argparse.Namespace) -> None:
    """Under callgrind (``--shape daemon``): ``--history`` runs a check filled, then minute after minute a
    new run of every check and four full passes, the first and the other three counted apart."""
    from callgrind import step, step_done, steps_over
    from day_history import INTERVAL, fill, run_result
    from scale import config_text

    cfg = parse_config(config_text("http://127.0.0.1:1/ok.json", args.checks, 1, "http://127.0.0.1:1/api"), env={})
    engine = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), sink=Sink(), autorun=False)
    outcome = daemon_outcome(args.flapping)
    now = 1_800_000_000.0
    fill(engine, now, args.history, outcome=outcome)
    await engine.start()
    checks = list(cfg.iter_checks())
    warm_up = 2  # minutes: the alerts take their first steps and are told (group_wait)
    for minute in range(warm_up + args.rounds):
        run = args.history + minute
        for i, (integration, check) in enumerate(checks):
            engine.on_result(dataclasses.replace(run_result(now, outcome(i, run)), integration=integration,
                                                 check=check.name))
        if minute == warm_up:
            gc.collect()
            gc.freeze()  # the collector out of the counts, as the daemon keeps its config out of its sight
            gc.disable()
        for k in range(round(INTERVAL / EVALUATION_INTERVAL)):
            if minute >= warm_up:
                step(f"{args.label}, {'pass with new runs' if k == 0 else 'pass without new runs'}")
            await engine.evaluate(now + 0.5 + k * EVALUATION_INTERVAL)
            if minute >= warm_up:
                step_done(args.checks)
        now += INTERVAL
    steps_over()
    await engine.close()


def daemon_shape(args: argparse.Namespace) -> None:
    """``--instructions --shape daemon``: the worker under callgrind for each tree and history."""
    from callgrind import drive

    started = time.monotonic()
    trees = {"before": args.before, "this tree": None} if args.before else {"this tree": None}
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for tree, path in trees.items():
        for history, runs in HISTORIES.items():
            argv = [sys.executable, __file__, "--shape-worker", "--checks", str(args.checks), "--history", str(runs),
                    "--rounds", str(args.rounds), "--flapping", str(args.flapping), "--label", history]
            env_before = os.environ.pop("PYTHONPATH", None)
            if path:
                os.environ["PYTHONPATH"] = path
            try:
                counts = drive(argv, instrument_from_start=False)
            finally:
                os.environ.pop("PYTHONPATH", None)
                if env_before is not None:
                    os.environ["PYTHONPATH"] = env_before
            passes = {name.split(", ", 1)[1]: statistics.median(c[0] / int(n) for c, n in samples)
                      for name, samples in counts.items()}
            passes["a minute's pass"] = (passes["pass with new runs"] + 3 * passes["pass without new runs"]) / 4
            rows[tree, history] = passes
    columns = ("pass with new runs", "pass without new runs", "a minute's pass")
    print(f"k instructions a check (callgrind), the daemon's shape: {args.checks} checks, 100 an integration, "
          f"one in a hundred refused all day, {args.flapping:.1%} flapping ({FLAPPING_RUNS[0]} runs in "
          f"{FLAPPING_RUNS[1]} failing); four full passes a minute, median of {args.rounds} minutes "
          f"({time.monotonic() - started:.0f} s)\n")
    print(f"| tree | history | {' | '.join(columns)} |")
    print("|---|---|" + "---|" * len(columns))
    for (tree, history), passes in rows.items():
        print(f"| {tree} | {history} | " + " | ".join(f"{passes[c] / 1e3:.1f}" for c in columns) + " |")
    print()
    for tree in trees:
        day, first = rows[tree, "a day"], rows[tree, "first minutes"]
        print(f"{tree}: a day over the first minutes " + ", ".join(
            f"{c} {day[c] / first[c]:.2f} ×" for c in columns))


def instructions(args: argparse.Namespace) -> None:
    """``--instructions``: the worker under callgrind, on ``--before TREE`` first if given, then this tree."""
    from callgrind import drive, print_layers

    started = time.monotonic()
    argv = [sys.executable, __file__, "--instructions-worker", "--checks", str(args.checks), "--history",
            str(args.history), "--every", str(args.every), "--rounds", str(args.rounds)]
    counts: dict[str, list[tuple[list[int], str]]] = {}
    if args.before:
        os.environ["PYTHONPATH"] = args.before
        counts.update(drive([*argv, "--label", "before"], instrument_from_start=False))
        del os.environ["PYTHONPATH"]
    counts.update(drive([*argv, "--label", "this tree", "--reference"], instrument_from_start=False))
    print_layers(counts, per="check", base=next(iter(counts)),
                 note=f"{args.checks} checks with {args.history} runs of history each ({args.every:g} s apart), "
                      f"median of {args.rounds} "
                      f"interleaved rounds ({time.monotonic() - started:.0f} s)")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cfg = make_config(args.checks, args.interval, args.group_wait)
    metrics, redactor = Metrics(), Redactor()
    sink = Sink()
    engine = AlertEngine(cfg, metrics=metrics, redactor=redactor, sink=sink, autorun=False)
    if args.freeze:
        gc.freeze()  # as the daemon does once running (monitor/app.py): the config out of the collector's sight
    now = time.time()
    for i, (integration, check) in enumerate(cfg.iter_checks()):
        for k in range(args.history):
            # Six hours of history (by default); one check in twenty had one failed run in it (its windows are
            # walked for their error classes), none enough to alert.
            engine.on_result(result(integration, check.name, now - (args.history - k) * args.every,
                                    bool(i % 20) or k != (i * 7) % args.history))
    await engine.start()
    await engine.evaluate()
    measured = await evaluations(engine, args.rounds, args.checks)
    measured.update(await wakes(engine, cfg, args.rounds, args.wake_after))
    rss_mb = rss_bytes(os.getpid()) / 2**20
    await engine.close()

    # Latency with the loop running.
    engine = AlertEngine(cfg, metrics=metrics, redactor=redactor, sink=sink)
    await engine.start()
    latencies = []
    integration, check = next(cfg.iter_checks())
    for _ in range(args.samples):
        sink.handed.clear()
        failed_at = time.time()
        engine.on_result(result(integration, check.name, failed_at, False))
        await sink.wait_for(1)
        latencies.append(sink.handed[0][0] - failed_at)
        engine.on_result(result(integration, check.name, time.time(), True))
        await sink.wait_for(2)  # the resolve
    await engine.close()
    return {
        "checks": args.checks,
        **measured,
        "rss_mb_with_history": round(rss_mb),
        "history": f"{args.history} runs every {args.every:g} s",
        "evaluation_interval": args.interval,
        "group_wait": args.group_wait,
        "latency_s_median": round(statistics.median(latencies), 3),
        "latency_s_max": round(max(latencies), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--group-wait", default="0s")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--history", type=int, default=720, help="runs of history per check")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between two runs of the history")
    parser.add_argument("--wake-after", type=float, default=1.0,
                        help="seconds of results (1/30 of the checks a second) before each early evaluation")
    parser.add_argument("--no-freeze", dest="freeze", action="store_false",
                        help="leave the config in the cycle collector's sight (as before issue 16)")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per full pass (callgrind), the burn-rate tiers both ways")
    parser.add_argument("--before", metavar="TREE",
                        help="--instructions: also count another checkout (PYTHONPATH=TREE), first")
    parser.add_argument("--shape", choices=("spread", "daemon"), default="spread",
                        help="--instructions: one check in twenty with a failed run (spread), or the daemon's "
                             "shape (one in a hundred failing all day, four passes a minute)")
    parser.add_argument("--flapping", type=float, default=0.0, metavar="SHARE",
                        help="--shape daemon: this share of the checks fails 3 runs in every 10")
    parser.add_argument("--instructions-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="", help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instructions_worker:
        asyncio.run(instructions_worker(args))
    elif args.shape_worker:
        asyncio.run(daemon_shape_worker(args))
    elif args.instructions and args.shape == "daemon":
        daemon_shape(args)
    elif args.instructions:
        instructions(args)
    else:
        print(json.dumps(asyncio.run(main(args)), ensure_ascii=False))
