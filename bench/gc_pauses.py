"""The cycle collector in the running daemon: how often it runs, for how long, and what that does to lag.

Runs the daemon as ``scale.py`` does (local nginx, the tests' fake Slack, the alert engine on, one check
in a hundred failing) with a ``gc.callbacks`` tally in the daemon's process, and side by side in the
same run the daemon with the collector as it was before monitor/long_lived.py: everything frozen once at
start only, CPython's default thresholds (``--no-peer``: not). Over a window that starts when every
check has had its first run (``scale.py``'s wait), per variant:
  - full passes (generation 2): how many, their total time and the longest (each holds the event loop),
  - young passes (generations 0 and 1): total time, and how many held the loop more than 10 ms,
  - objects the collector still walks in a full pass at the end (unfrozen, in generation 2),
  - process CPU (share of one core), RSS at the end, scheduler lag p99 (the daemon's histogram).
Usage: python bench/gc_pauses.py [--sizes 10000 50000] [--seconds 120] [--runs 1] [--no-peer]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Column, cpu_seconds, free_port, print_medians, rss_bytes, sizes_parser, wait_http
from scale import FIRST_RUN_RATE, config_text, histogram_quantile, lag_buckets, measure_sizes, scrape

# In the daemon's process: a tally of the collector's passes by generation, written to $GC_TALLY every
# second (the bench reads it at both ends of the window). "before": monitor/long_lived.py's later
# freezes and threshold off, i.e. one freeze at start with CPython's default thresholds.
RUNNER = """
import gc, json, os, sys, threading, time
tally = {"passes": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "full": [], "young_over_10ms": 0, "walked": 0, "frozen": 0}
started = [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
        return
    g, took = info["generation"], time.perf_counter() - started[0]
    tally["passes"][g] += 1
    tally["seconds"][g] += took
    if g == 2:
        tally["full"].append(took)  # every full pass, to find the longest within the window
    elif took > 0.010:
        tally["young_over_10ms"] += 1
gc.callbacks.append(on_gc)
def write():
    path = os.environ["GC_TALLY"]
    for n in range(10**9):
        time.sleep(1)
        if n % 10 == 0:  # listing generation 2 holds the GIL for a while at 50,000 checks: not every second
            tally["walked"], tally["frozen"] = len(gc.get_objects(2)), gc.get_freeze_count()
        with open(path + ".tmp", "w") as f:
            json.dump(tally, f)
        os.replace(path + ".tmp", path)
threading.Thread(target=write, daemon=True).start()
if os.environ.get("GC_VARIANT") == "before":
    import asyncio
    from monitor import long_lived
    async def never(*args, **kwargs):
        await asyncio.Event().wait()
    long_lived.keep_frozen = never
    long_lived.tune_young_collections = lambda: None
from monitor.cli import main
sys.exit(main(sys.argv[1:]))
"""
VARIANTS = ("as it ships", "before")


def read_tally(path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon wrote no GC tally")
        time.sleep(0.5)
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def run(url: str, slack_api: str, size: int, seconds: float, variant: str) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, tally_path = Path(tmp) / "config.yaml", Path(tmp) / "gc.json"
        cfg.write_text(config_text(url, size, port, slack_api))
        env = dict(os.environ, GC_TALLY=str(tally_path), GC_VARIANT="before" if variant == "before" else "")
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, "run", "-c", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=600)
            time.sleep(size / FIRST_RUN_RATE + 15)  # first runs done (and settled: frozen, as it ships)
            text, _ = scrape(metrics_url)
            first, gc0 = lag_buckets(text), read_tally(tally_path)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            gc1 = read_tally(tally_path)
            elapsed = time.monotonic() - t0
            cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
            text, _ = scrape(metrics_url)
            last = lag_buckets(text)
            window = [(le, last[le] - first.get(le, 0.0)) for le in last]
            return {
                "full_passes": gc1["passes"][2] - gc0["passes"][2],
                "full_s": gc1["seconds"][2] - gc0["seconds"][2],
                "full_longest_ms": 1000 * max(gc1["full"][len(gc0["full"]):], default=0.0),
                "young_s": sum(gc1["seconds"][:2]) - sum(gc0["seconds"][:2]),
                "young_over_10ms": gc1["young_over_10ms"] - gc0["young_over_10ms"],
                "walked_k": gc1["walked"] / 1000,
                "frozen_k": gc1["frozen"] / 1000,
                "cpu_share": cpu,
                "rss_mb": rss_bytes(proc.pid) / 2**20,
                "lag_p99_ms": 1000 * histogram_quantile(0.99, window),
                "window_s": elapsed,
            }
        finally:
            proc.terminate()
            proc.wait(120)


def main() -> None:
    parser = sizes_parser(__doc__, sizes=[10000, 50000], seconds=120.0, seconds_help="window after the first runs")
    args = parser.parse_args()
    results = measure_sizes(args, VARIANTS if args.peer else VARIANTS[:1],
                            lambda url, slack, size, variant: run(url, slack.api_url, size, args.seconds, variant))
    columns: list[Column] = [
        ("full passes/min", lambda r: 60 * r["full_passes"] / r["window_s"], "{:.1f}"),
        ("full pass s/min", lambda r: 60 * r["full_s"] / r["window_s"], "{:.2f}"),
        ("longest full pass ms", lambda r: r["full_longest_ms"], "{:.0f}"),
        ("young s/min", lambda r: 60 * r["young_s"] / r["window_s"], "{:.2f}"),
        ("young > 10 ms /min", lambda r: 60 * r["young_over_10ms"] / r["window_s"], "{:.1f}"),
        ("walked k objects", lambda r: r["walked_k"], "{:.0f}"),
        ("frozen k", lambda r: r["frozen_k"], "{:.0f}"),
        ("CPU % core", lambda r: r["cpu_share"], "{:.1%}"),
        ("RSS MB", lambda r: r["rss_mb"], "{:.0f}"),
        ("lag p99 ms", lambda r: r["lag_p99_ms"], "{:.0f}"),
    ]
    print_medians(results, columns)


if __name__ == "__main__":
    main()
