"""/metrics at scale (issue 16 item 4): one scrape of N checks' series through the daemon's own handler
(monitor/server.py, monitor/metrics.py) on a loop kept busy like the daemon's, side by side with the
ceiling in the same run: the same bytes, already rendered, sent by a bare aiohttp handler in one write.

A worker process (uvloop, as the daemon runs) holds N checks' series with every family filled in as a
run fills them, and a simulated probe load: N / 60 probes a second (a 60 s interval), each a slice of
``--probe-ms`` of CPU on the loop that records a run into its check's series, so that a quarter of the
checks change between two scrapes 15 s apart, as in the daemon. curl scrapes it with Prometheus' headers
(``Accept`` for OpenMetrics; ``Accept-Encoding: gzip`` when the variant says so), one scrape every
``--every`` seconds, the variants interleaved. Reported per variant, medians (min–max) of the scrapes:
  - wall time of the scrape as curl sees it (the figure Prometheus' scrape timeout judges),
  - the worker's CPU over the scrape (utime + stime, all threads) minus the probe load's own CPU at
    the same rate (measured with no scrape running), i.e. what the scrape costs the process,
  - the longest the loop was held during the scrape (a 1 ms ticker's worst overshoot: the lag probes
    see while it runs), and the bytes sent.
``--turn-ms X``: instead of the probe load, every turn of the loop takes X ms (asleep: no CPU), the model
of a loop starved or busy; the scrape then takes about (turns it waits for) x X, and the table counts
those turns: what the number of pieces and of socket drains costs, on any machine.
``--evaluating US``: each scrape of the daemon's handler is taken twice, once alone and once with a
simulated full alert evaluation of US µs of CPU per check started as the handler starts, in slices of
5 ms that hand the loop back as the engine does (through the tree's ``scrape_priority`` when it has
one): the scrape's time with an evaluation running, the evaluation's (wall), and how many of its slices
ran while the scrape was being written (a count: does not move with the machine's load).
``--no-load``: no probe load (the scrape's own CPU, quiet); ``--buckets``: the per-check histogram's
bounds (``monitor.probe_duration_buckets``; an empty list: only count, sum and +Inf).
Usage: python bench/scrape.py [--checks 10000 50000] [--scrapes 5] [--probe-ms 0.6] [--no-load] [--evaluating 30]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROMETHEUS_ACCEPT, cpu_seconds, free_port, require, wait_http

if TYPE_CHECKING:
    from monitor.metrics import Metrics

# gzip: the daemon's own (level 1, on the loop; ISA-L with the speed extra); the ceiling's: aiohttp's (level 6).
VARIANTS = ("as it ships", "as it ships, gzip", "ceiling: pre-rendered, one write", "ceiling, aiohttp gzip")
DURING = "as it ships, during a full evaluation"  # --evaluating


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def populated(checks: int, buckets: tuple[float, ...] | None) -> tuple[Metrics, Callable[[int], None]]:
    """N checks' series as three runs each fill them, and ``record(i)``: one more run of check i."""
    from monitor.metrics import Metrics

    metrics = Metrics() if buckets is None else Metrics(duration_buckets=buckets)
    probes, rnd = metrics.probes, random.Random(7)
    keys = [(f"vendor{i // 100}", f"c{i}") for i in range(checks)]

    def record(i: int) -> None:  # what monitor/recorder.py writes for a successful HTTP run
        s, duration = probes.series(*keys[i % checks]), rnd.uniform(0.002, 0.3)
        s.success, s.status_code, s.streak = 1.0, 200.0, 0.0
        s.buckets[probes.bucket_index(duration)] += 1
        s.duration_sum += duration
        s.runs_ok += 1
        s.phases.update(dns=rnd.uniform(0.0001, 0.002), connect=rnd.uniform(0.0002, 0.005), ttfb=duration * 0.8,
                        transfer=rnd.uniform(0.0001, 0.003))  # measured durations: full-precision floats

    for i in range(3 * checks):
        record(i)
    return metrics, record


async def worker(checks: int, port: int, probe_ms: float, turn_ms: float, buckets: tuple[float, ...] | None,
                 evaluation_us: float) -> None:
    from aiohttp import web

    from integration_kit.redact import Redactor
    from monitor import server as daemon_server
    from monitor.server import HttpServer

    metrics, record = populated(checks, buckets)
    gc.freeze()  # as the daemon does once its checks have run (monitor/long_lived.py)

    class Stub:  # what the HTTP server asks of the app (monitor.server.Monitored), no more
        redactor = Redactor(())

        def __init__(self) -> None:
            self.metrics = metrics

        def api_token(self) -> None:
            return None

    state = {"worst_gap": 0.0, "load": probe_ms > 0, "next": 0, "turns": 0, "evaluated_ms": 0.0, "armed": False,
             "scraping": False, "slices_during": 0}
    priority = getattr(metrics, "scrape_priority", None)  # (a tree from before it hands back with sleep(0))
    hand_back = priority.hand_back if priority is not None else functools.partial(asyncio.sleep, 0)

    async def evaluation() -> None:  # --evaluating: a full pass's CPU in slices of 5 ms, as the engine hands back
        started, left = time.perf_counter(), checks * evaluation_us / 1e6
        while left > 0:
            burn(min(0.005, left))
            left -= 0.005
            state["slices_during"] += state["scraping"]
            await hand_back()
        state["evaluated_ms"] = 1000 * (time.perf_counter() - started)
    loop = asyncio.get_running_loop()

    def other_work() -> None:  # --turn-ms: every turn of the loop takes that long (asleep: no CPU)
        time.sleep(turn_ms / 1000)
        state["turns"] += 1
        loop.call_soon(other_work)  # runs again on the next turn

    async def ticker() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            state["worst_gap"] = max(state["worst_gap"], time.perf_counter() - t0 - 0.001)

    async def prober(offset: float) -> None:  # one of N/60 per second: a 60 s interval, spread
        await asyncio.sleep(offset)
        while True:
            if state["load"]:
                burn(probe_ms / 1000)
                record(state["next"])
                state["next"] += 1
            await asyncio.sleep(1.0)

    async def rendered(request: web.Request) -> web.Response:  # the ceiling: the bytes, ready, one write
        response = web.Response(body=body, content_type="application/openmetrics-text")
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    async def stats(request: web.Request) -> web.Response:  # ?load=0|1 pauses or resumes the probe load
        if "load" in request.query:
            state["load"] = request.query["load"] == "1" and probe_ms > 0
        if "evaluate" in request.query:  # with the next scrape
            state["armed"] = True
            return web.json_response({})
        worst, turns, state["worst_gap"], state["turns"] = state["worst_gap"], state["turns"], 0.0, 0
        slices, state["slices_during"] = state["slices_during"], 0
        return web.json_response({"worst_gap": worst, "turns": turns, "evaluated_ms": state["evaluated_ms"],
                                  "evaluating": bool(evaluations), "slices_during": slices})

    evaluations: set[asyncio.Task[None]] = set()
    handler = daemon_server.metrics

    async def scraped(request: web.Request) -> web.StreamResponse:  # the daemon's handler, and what ran meanwhile
        if state["armed"]:
            state["armed"] = False
            evaluations.add(task := asyncio.create_task(evaluation()))
            task.add_done_callback(evaluations.discard)
        state["scraping"] = True
        try:
            return await handler(request)
        finally:
            state["scraping"] = False

    daemon_server.metrics = scraped  # (core_routes() reads it when the server starts)

    content = metrics.exposition(PROMETHEUS_ACCEPT)[1]
    body = b"".join(content)
    server = HttpServer(Stub(), "127.0.0.1", port, [web.get("/rendered", rendered), web.get("/stats", stats)])  # type: ignore[arg-type]
    await server.start()
    tasks = [asyncio.create_task(ticker())]
    tasks += [asyncio.create_task(prober(i * 60 / checks)) for i in range(checks // 60)]
    if turn_ms > 0:
        loop.call_soon(other_work)
    print("ready", flush=True)
    await asyncio.Event().wait()


def get(url: str) -> dict[str, float]:
    with __import__("urllib.request").request.urlopen(url, timeout=60) as resp:
        return dict(json.loads(resp.read()))


def scrape(base: str, pid: int, variant: str) -> dict[str, float]:
    path = "/rendered" if variant.startswith("ceiling") else "/metrics"
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", "-H",
               f"Accept: {PROMETHEUS_ACCEPT}", base + path]
    if "gzip" in variant:
        command[1:1] = ["--compressed"]
    get(base + "/stats")
    cpu0 = cpu_seconds(pid)
    if variant == DURING:
        get(base + "/stats?evaluate=1")
    took, size = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    cpu = cpu_seconds(pid) - cpu0
    after = get(base + "/stats")
    got = {"wall_ms": 1000 * float(took), "cpu_ms": 1000 * cpu, "bytes": float(size),
           "held_ms": 1000 * after["worst_gap"], "turns": after["turns"]}
    if variant == DURING:
        got["slices_during"] = after["slices_during"]
        while after["evaluating"]:
            time.sleep(0.05)
            after = get(base + "/stats")
        got["evaluated_ms"] = after["evaluated_ms"]
    return got


def load_cpu(pid: int, seconds: float = 2.0) -> float:
    """The worker's CPU share with no scrape running (the probe load alone)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)


def start_worker(checks: int, args: argparse.Namespace, source: str | None) -> tuple[subprocess.Popen[str], str]:
    """A worker on this tree's code, or on another checkout's (``source``: the ``--before`` tree)."""
    port = free_port()
    command = [sys.executable, __file__, "--worker", str(checks), "--port", str(port),
               "--probe-ms", str(0 if args.no_load or args.turn_ms else args.probe_ms), "--turn-ms", str(args.turn_ms),
               "--evaluating", str(args.evaluating)]
    if args.buckets is not None:
        command += ["--buckets", *map(str, args.buckets)]
    env = {**os.environ, "PYTHONPATH": source} if source else None
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/stats")
    return proc, base


def measure(checks: int, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Every variant ``args.scrapes`` times, interleaved; with ``--before``, that tree's worker too, in
    turns: only the worker being scraped runs its probe load (two loads would starve both)."""
    trees = {"": None, **({"before: ": args.before} if args.before else {})}
    workers = {}
    try:
        for label, source in trees.items():
            workers[label] = start_worker(checks, args, source)
            get(workers[label][1] + "/stats?load=0")
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.scrapes):
            for label, (proc, base) in workers.items():
                get(base + "/stats?load=1")
                time.sleep(2)
                share = load_cpu(proc.pid)
                variants = VARIANTS if not label else VARIANTS[:2]
                for variant in (*variants, DURING) if args.evaluating else variants:
                    got = scrape(base, proc.pid, variant)
                    got["cpu_ms"] -= share * got["wall_ms"]  # the probe load's CPU over the same time
                    if variant == DURING:
                        got["cpu_ms"] = float("nan")  # the evaluation's CPU is in it, until it ends
                    got["load"] = share
                    results.setdefault(label + variant, []).append(got)
                    time.sleep(args.every)
                get(base + "/stats?load=0")
        return results
    finally:
        for proc, _ in workers.values():
            proc.terminate()
            proc.wait(30)


def offline(checks: int, buckets: tuple[float, ...] | None) -> str:
    """What does not depend on the loop: pieces of a page, its rendering CPU, gzip at levels 1 and 6."""
    metrics, record = populated(checks, buckets)
    t0 = time.process_time()
    b"".join(metrics.exposition(PROMETHEUS_ACCEPT)[1])  # the first scrape: every histogram's text rendered, kept
    first = time.process_time() - t0
    for i in range(checks // 4):  # a quarter of the checks ran since the last scrape
        record(i)
    t0 = time.process_time()
    pieces = list(metrics.exposition(PROMETHEUS_ACCEPT)[1])
    render = time.process_time() - t0
    body = b"".join(pieces)
    out = (f"{checks:,} checks offline: {len(pieces)} pieces, rendering {1000 * render:.0f} ms CPU (the first "
           f"scrape after start: {1000 * first:.0f} ms), {len(body) / 1e6:.1f} MB")
    from monitor.server import GZIP_LEVEL, gzip_codec

    for name, codec, level in (("zlib", zlib, 1), ("zlib", zlib, 6), (gzip_codec.__name__, gzip_codec, GZIP_LEVEL)):
        t0 = time.process_time()
        size = len(codec.compress(body, level))
        out += f"; gzip by {name} level {level}: {1000 * (time.process_time() - t0):.0f} ms CPU, {size / 1e6:.1f} MB"
    return out


def cell(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def evaluated(runs: list[dict[str, float]]) -> str:
    if "evaluated_ms" not in runs[0]:
        return ""
    return (f"{cell([r['evaluated_ms'] for r in runs], '{:.0f}')}, "
            f"{cell([r['slices_during'] for r in runs], '{:.0f}')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, nargs="+", default=[10000, 50000])
    parser.add_argument("--scrapes", type=int, default=5, help="scrapes of each variant, interleaved")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--probe-ms", type=float, default=0.6, help="CPU of one simulated probe on the loop")
    parser.add_argument("--no-load", action="store_true", help="no probe load: the scrape alone")
    parser.add_argument("--turn-ms", type=float, default=0.0,
                        help="instead of the probe load, every turn of the loop takes this long (asleep)")
    parser.add_argument("--evaluating", type=float, default=0.0,
                        help="µs of CPU per check of a simulated full evaluation started with a scrape")
    parser.add_argument("--buckets", type=float, nargs="*", help="the per-check histogram's bounds")
    parser.add_argument("--before", help="another checkout (e.g. main's worktree): its handler, interleaved")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import uvloop

        buckets = tuple(args.buckets) if args.buckets is not None else None
        uvloop.run(worker(args.worker, args.port, args.probe_ms, args.turn_ms, buckets, args.evaluating))
        return
    require("curl")
    print(f"pid {os.getpid()}; {args.scrapes} scrapes per variant, interleaved, medians (min–max)")
    print("| checks | variant | scrape ms (wall) | scrape CPU ms | loop held ms (worst) | MB sent | probe load % "
          "| loop turns | evaluation: wall ms, slices during the scrape |")
    print("|---|---|---|---|---|---|---|---|---|")
    for checks in args.checks:
        for variant, runs in measure(checks, args).items():
            print(f"| {checks:,} | {variant} | {cell([r['wall_ms'] for r in runs], '{:.0f}')} | "
                  f"{cell([r['cpu_ms'] for r in runs], '{:.0f}')} | {cell([r['held_ms'] for r in runs], '{:.1f}')} | "
                  f"{statistics.median(r['bytes'] for r in runs) / 1e6:.1f} | "
                  f"{cell([100 * r['load'] for r in runs], '{:.0f}')} | "
                  f"{cell([r['turns'] for r in runs], '{:.0f}') if args.turn_ms else ''} | "
                  f"{evaluated(runs)} |",
                  flush=True)
    for checks in args.checks:
        print(offline(checks, tuple(args.buckets) if args.buckets is not None else None))


if __name__ == "__main__":
    main()
