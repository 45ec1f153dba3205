"""A day of alert history in the running daemon: RSS, bytes per check, a full evaluation's CPU.

The daemon as ``scale.py`` runs it (100 checks an integration, every check at 60 s against a local
nginx, one in a hundred refused with 401, the alert engine on, Slack configured: the tests' fake
Slack), in two variants side by side in the same run, each a fresh process:
  - ``first minutes``: as it starts, what ``scale.py`` measures (a few minutes of history a check);
  - ``a day of history``: the same daemon whose alert engine was given a day of runs before it started
    (``fill``): 1,440 runs a check, 60 s apart and ending as the daemon starts, fed through the engine's
    ``on_result`` (the recorder's entry into it) round by round, every check in turn, as probes bring
    them; the failing checks fail all day as they do afterwards (401: ``auth``). Then it runs, and the
    day's history is what its windows count.
Between the first and the last round, the checks of a round share one result object per outcome, given
to each check's statistics (``CheckStats.add``, what ``on_result`` calls) directly: a fresh ``CheckResult``
a run is 2.6 µs, more than the rest of the fill; what the statistics keep of a result is the last run's,
and the last round gives each check its own through ``on_result``. ``--self-check`` (run before every
measure, on 200 checks, two of them failing) proves the statistics so filled equal those fed a fresh
result per run one by one, each array's allocated size too (``sys.getsizeof``), not only its contents.

Per variant, over a steady-state window (after the first runs, settled and frozen as in ``scale.py``):
RSS at its end and peak, and (RSS of the day − RSS of the first minutes) / checks; process CPU and the
scheduler lag p99; in the daemon's process, each full evaluation's CPU (its own thread time, without
the turns it handed the loop back for) and each young collection of the cycle collector (how long, how
many objects it freed, and whether it fell in a full evaluation).
``--before TREE``: the same daemon of another checkout too, each variant after this tree's.
Usage: python bench/day_history.py [--sizes 10000] [--seconds 90] [--runs 1] [--no-peer] [--before TREE]
[--self-check]
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, free_port, print_medians, rss_bytes, sizes_parser, wait_http
from gc_pauses import read_tally
from scale import FIRST_RUN_RATE, SETTLE_SECONDS, config_text, histogram_quantile, lag_buckets, measure_sizes, scrape

if TYPE_CHECKING:
    from collections.abc import Callable

    from integration_kit.errors import ErrorClass
    from integration_kit.results import CheckResult

INTERVAL = 60.0  # scale.py's checks
DAY_RUNS = 1440  # a day of them
VARIANTS = ("first minutes", "a day of history")
BEFORE = ("first minutes, before", "a day of history, before")  # --before TREE


def fill(engine: Any, now: float, runs: int = DAY_RUNS, *, shared: bool = True,
         outcome: Callable[[int, int], ErrorClass | None] | None = None) -> None:
    """``runs`` runs a check ``INTERVAL`` apart, the last one ``INTERVAL`` before ``now``, round by round,
    every check in turn. A check fails all day if its URL is scale.py's refused one (``outcome``: instead,
    the error class of the check numbered i, in config order, at run k; None: the run succeeds). Each run
    a result of its own through ``engine.on_result``; ``shared``: only the first and last rounds so, the
    rounds between one result object per outcome, shared by the checks, straight into each check's
    ``CheckStats.add``."""
    from integration_kit.errors import ErrorClass

    checks = [(integration, check.name, "denied" in str(getattr(check, "url", "")))
              for integration, check in engine.config.iter_checks()]
    if outcome is None:
        refused = {i for i, (_, _, denied) in enumerate(checks) if denied}

        def outcome(i: int, k: int) -> ErrorClass | None:
            return ErrorClass.AUTH if i in refused else None

    on_result = engine.on_result
    for k in range(runs):
        at = now - (runs - k) * INTERVAL
        by_outcome: dict[ErrorClass | None, CheckResult] = {}
        for i, (integration, check, _) in enumerate(checks):
            error = outcome(i, k)
            result = by_outcome.get(error)
            if result is None:
                result = by_outcome[error] = run_result(at, error)
            if shared and 0 < k < runs - 1:
                engine.stats.checks[integration, check].add(result)
            else:
                on_result(dataclasses.replace(result, integration=integration, check=check))


def run_result(at: float, error: ErrorClass | None) -> CheckResult:
    """A run of ``fill`` (no integration or check named): a success (200), or a failure of class ``error``
    (401 for ``auth``, as scale.py's refused checks get; 503 otherwise)."""
    from integration_kit.errors import ErrorClass
    from integration_kit.results import CheckResult

    status = 200 if error is None else 401 if error is ErrorClass.AUTH else 503
    return CheckResult(integration="", check="", kind="http", ok=error is None, error_class=error,
                       detail="" if error is None else f"http_status: {status}", started_at=at, duration=0.002,
                       total_duration=0.002, status_code=status)


def self_check(checks: int = 200, runs: int = DAY_RUNS) -> None:
    """``fill`` as measured (shared results) equals a result per run: every check's statistics, each array
    by value and by ``sys.getsizeof`` (what it allocated), the last result and last failure."""
    from alerts.engine import AlertEngine
    from integration_kit.redact import Redactor
    from monitor.metrics import Metrics
    from monitor.settings import parse_config

    cfg = parse_config(config_text("http://127.0.0.1:1/ok.json", checks, 1, "http://127.0.0.1:1/api"), env={})
    now = 1_800_000_000.0
    built = []
    for shared in (True, False):
        engine = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), autorun=False)
        fill(engine, now, runs, shared=shared)
        built.append({key: state_of(stats) for key, stats in engine.stats.checks.items()})
    if built[0] != built[1]:
        raise SystemExit("self-check failed: the fill's statistics differ from a result per run")
    if len(built[0]) != checks or not any(s["last_failure"] for s in built[0].values()):
        raise SystemExit("self-check failed: not every check filled, or no failing check")


def state_of(obj: Any) -> Any:
    """Everything an object of the statistics holds, recursively, arrays with their allocated size."""
    from array import array

    if isinstance(obj, array):
        return (obj.typecode, obj.tolist(), sys.getsizeof(obj))
    slots = getattr(type(obj), "__slots__", None)
    if slots is not None and not dataclasses.is_dataclass(obj):
        return {name: state_of(getattr(obj, name)) for name in slots}
    return obj


def in_daemon() -> None:
    """The daemon's process (``--daemon ARGV``): tallies, the day's fill if asked, then the daemon."""
    import gc
    import threading

    from alerts.engine import AlertEngine
    from monitor import wiring
    from monitor.cli import main
    from monitor.scrape_priority import ScrapePriority

    tally: dict[str, Any] = {"evaluations": [], "young": [], "handed_back": 0.0, "in_evaluation": False,
                             "fill_s": 0.0}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif info["generation"] < 2:
            tally["young"].append((info["generation"], time.perf_counter() - started[0], info["collected"],
                                   tally["in_evaluation"]))
    gc.callbacks.append(on_gc)

    hand_back = ScrapePriority.hand_back

    async def timed_hand_back(self: ScrapePriority) -> None:
        before = time.thread_time()
        await hand_back(self)
        tally["handed_back"] += time.thread_time() - before
    ScrapePriority.hand_back = timed_hand_back  # type: ignore[method-assign]

    evaluate = AlertEngine.evaluate

    async def timed_evaluate(self: AlertEngine, now: float | None = None, *, full: bool = True) -> Any:
        cpu, back, wall = time.thread_time(), tally["handed_back"], time.perf_counter()
        tally["in_evaluation"] = full
        try:
            return await evaluate(self, now, full=full)
        finally:
            tally["in_evaluation"] = False
            if full:
                tally["evaluations"].append((time.thread_time() - cpu - (tally["handed_back"] - back),
                                             time.perf_counter() - wall))
    AlertEngine.evaluate = timed_evaluate  # type: ignore[method-assign]

    if os.environ.get("DAY_HISTORY"):
        def alerts_with_a_day(services: Any) -> Any:
            engine = wiring.alerts(services)
            took = time.perf_counter()
            fill(engine, time.time())
            tally["fill_s"] = time.perf_counter() - took
            return engine
        wiring.DEFAULT_COMPONENTS = tuple(  # type: ignore[assignment]
            alerts_with_a_day if f is wiring.alerts else f for f in wiring.DEFAULT_COMPONENTS)

    def write() -> None:
        path = os.environ["DAY_TALLY"]
        while True:
            time.sleep(1)
            with open(path + ".tmp", "w") as f:
                json.dump({k: v for k, v in tally.items() if k != "in_evaluation"}, f)
            os.replace(path + ".tmp", path)
    threading.Thread(target=write, daemon=True).start()
    sys.exit(main(sys.argv[2:]))


def run(url: str, slack_api: str, size: int, seconds: float, variant: str, before: str | None) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, tally_path = Path(tmp) / "config.yaml", Path(tmp) / "tally.json"
        cfg.write_text(config_text(url, size, port, slack_api))
        env = dict(os.environ, DAY_TALLY=str(tally_path), DAY_HISTORY="1" if "day" in variant else "")
        if variant in BEFORE and before:
            env["PYTHONPATH"] = str(Path(before).resolve())
        proc = subprocess.Popen([sys.executable, __file__, "--daemon", "run", "-c", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=1800)
            time.sleep(size / FIRST_RUN_RATE + SETTLE_SECONDS)  # first runs done, settled and frozen
            text, _ = scrape(metrics_url)
            first, tally0 = lag_buckets(text), read_tally(tally_path)
            cpu0, t0, rss_peak = cpu_seconds(proc.pid), time.monotonic(), rss_bytes(proc.pid)
            next_scrape = t0 + 15
            while (now := time.monotonic()) < t0 + seconds:
                time.sleep(min(1.0, max(0.0, t0 + seconds - now)))
                rss_peak = max(rss_peak, rss_bytes(proc.pid))
                if time.monotonic() >= next_scrape:
                    scrape(metrics_url)
                    next_scrape += 15
            text, _ = scrape(metrics_url)
            time.sleep(1.5)  # the tally written after the window's last evaluation
            tally1 = read_tally(tally_path)
            elapsed = time.monotonic() - t0
            cpu, rss_end = (cpu_seconds(proc.pid) - cpu0) / elapsed, rss_bytes(proc.pid)
            last = lag_buckets(text)
            evaluations = tally1["evaluations"][len(tally0["evaluations"]):]
            young = tally1["young"][len(tally0["young"]):]
            in_evaluation = [y for y in young if y[3]]
            return {
                "fill_s": tally1["fill_s"],
                "rss_end_mb": rss_end / 2**20,
                "rss_peak_mb": max(rss_peak, rss_end) / 2**20,
                "cpu_share": cpu,
                "lag_p99_ms": 1000 * histogram_quantile(0.99, [(le, last[le] - first.get(le, 0.0)) for le in last]),
                "full_passes": len(evaluations),
                "eval_cpu_ms": 1000 * statistics.median(e[0] for e in evaluations) if evaluations else float("nan"),
                "eval_cpu_max_ms": 1000 * max((e[0] for e in evaluations), default=float("nan")),
                "eval_wall_ms": 1000 * statistics.median(e[1] for e in evaluations) if evaluations else float("nan"),
                "young_passes": len(young),
                "young_longest_ms": 1000 * max((y[1] for y in young), default=0.0),
                "young_in_eval_per_pass": len(in_evaluation) / max(1, len(evaluations)),
                "young_in_eval_longest_ms": 1000 * max((y[1] for y in in_evaluation), default=0.0),
                "freed_in_eval_per_pass": sum(y[2] for y in in_evaluation) / max(1, len(evaluations)),
                "freed_per_young": sum(y[2] for y in young) / max(1, len(young)),
            }
        finally:
            proc.terminate()
            proc.wait(120)


def main() -> None:
    if sys.argv[1:2] == ["--daemon"]:
        in_daemon()
        return
    parser = sizes_parser(__doc__, sizes=[10000], seconds=90.0, seconds_help="steady-state window")
    parser.add_argument("--self-check", action="store_true", help="only the fill's self-check")
    parser.add_argument("--before", metavar="TREE", help="also another checkout's daemon (PYTHONPATH=TREE), "
                        "alternating: git archive main monitor checks alerts integration_kit | tar -x -C TREE")
    args = parser.parse_args()
    started = time.perf_counter()
    self_check()
    print(f"self-check passed: the fill equals a result per run ({time.perf_counter() - started:.1f} s)", flush=True)
    if args.self_check:
        return
    variants: tuple[str, ...] = VARIANTS if args.peer else VARIANTS[1:]
    if args.before:
        variants = tuple(v for pair in zip(variants, BEFORE[-len(variants):], strict=True) for v in pair)
    results = measure_sizes(args, variants, lambda url, slack, size, variant: run(
        url, slack.api_url, size, args.seconds, variant, args.before))
    columns = [
        ("fill s", "fill_s", "{:.0f}"), ("RSS MB end", "rss_end_mb", "{:.0f}"), ("(peak)", "rss_peak_mb", "{:.0f}"),
        ("CPU % core", "cpu_share", "{:.1%}"), ("lag p99 ms", "lag_p99_ms", "{:.0f}"),
        ("full passes", "full_passes", "{:.0f}"), ("full pass CPU ms", "eval_cpu_ms", "{:.0f}"),
        ("(max)", "eval_cpu_max_ms", "{:.0f}"), ("full pass wall ms", "eval_wall_ms", "{:.0f}"),
        ("young passes", "young_passes", "{:.0f}"), ("longest young ms", "young_longest_ms", "{:.0f}"),
        ("young in a pass", "young_in_eval_per_pass", "{:.1f}"),
        ("longest there ms", "young_in_eval_longest_ms", "{:.0f}"),
        ("freed there / pass", "freed_in_eval_per_pass", "{:,.0f}"),
        ("freed / young pass", "freed_per_young", "{:,.0f}"),
    ]
    print_medians(results, [(name, operator.itemgetter(key), fmt) for name, key, fmt in columns])
    for size in args.sizes:
        day, fresh = results.get((size, VARIANTS[1])), results.get((size, VARIANTS[0]))
        if day and fresh:
            grown = statistics.median(r["rss_end_mb"] for r in day) - statistics.median(r["rss_end_mb"] for r in fresh)
            print(f"{size:,} checks: a day of history adds {grown:.0f} MB, {grown * 2**20 / size:,.0f} bytes a check")


if __name__ == "__main__":
    main()
