"""Scale: 1,000 to 50,000 checks at a 60 s interval (spread with jitter) against a local nginx.

The daemon runs as it ships: every component, the alert engine evaluating every 15 s, and Slack
configured (the tests' fake Slack on loopback, tests/fake_slack.py, in a thread of this process). One
check in a hundred is refused by nginx (401): those alert at once, and their messages go to Slack.
Side by side in the same run (``--peer``, on by default): the same daemon without its alert engine
(the components minus ``alerts``): what evaluation costs, and the ceiling for the lag; and the ceiling
of any Python prober: bench/bare_aiohttp.py on uvloop, a fresh connection per request, paced at the
same probes/s (size / 60 s) against the same nginx, for the same window (CPU only).

Reports, per size and variant, over a steady-state window (after the first runs have been spread out
and the daemon has settled — each first run past its deadline, what it built frozen out of the cycle
collector's sight, monitor/long_lived.py — so the window holds every check running on its interval)
during which /metrics is scraped every 15 s as Prometheus would (the scrapes are part of the load):
  - average process CPU (share of one core) and RSS (peak sampled each second, and at the end),
  - scheduler lag p50/p99 from the daemon's own integration_monitor_scheduler_lag_seconds histogram,
    over the window only (bucket increase between the first and last scrape, like rate() would),
  - /metrics response time (median and worst of the scrapes, with Prometheus' Accept header, which
    asks for OpenMetrics first; once in the classic text format; once with Accept-Encoding: gzip, as
    Prometheus sends it by default) and size; apart, the first scrape after start (taken as the first
    runs end, before the daemon has settled: every check's text rendered for the first time),
  - the Slack messages received (chat.postMessage) by the end.
With ``--runs N`` the variants alternate N times and the table shows medians (min–max).
``--before TREE``: the daemon of another checkout as it ships too, alternating (PYTHONPATH=TREE);
``--scrape-every S``: scrape every S seconds instead (not a multiple of the evaluation interval, the
scrapes fall at every phase of it: what a scrape costs during a full evaluation shows in the worst).
Targets (issues 7, 16): 10,000 checks < 50% of one core, lag p99 < 100 ms, RSS < 200 MB, /metrics < 250 ms.
Usage: python bench/scale.py [--sizes 1000 10000] [--seconds 60] [--runs 1] [--no-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from common import (  # noqa: E402
    PROMETHEUS_ACCEPT,
    cpu_seconds,
    daemon_command,
    free_port,
    nginx_target,
    print_medians,
    rss_bytes,
    sizes_parser,
    wait_http,
)
from fake_slack import TOKEN, FakeSlack  # noqa: E402

BUCKET_RE = re.compile(r'^integration_monitor_scheduler_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)
RUNS_RE = re.compile(r"^integration_probe_runs_total\{[^}]*\} ([0-9.e+]+)$", re.M)
SCRAPE_EVERY = 15.0  # Prometheus' usual scrape interval (deploy/prometheus/prometheus.yml)
FIRST_RUN_RATE = 200.0  # the scheduler spreads first runs at this rate (monitor/first_runs.py)
CHECK_TIMEOUT = 5.0  # config_text's checks
# The daemon has settled this long after the last first run: its deadline (the timeout and the
# scheduler's overrun margin, monitor/scheduler.py DEADLINE_OVERRUN), then the freeze (a few seconds).
SETTLE_SECONDS = CHECK_TIMEOUT + 5.0 + 5.0
FAILING_EVERY = 100  # one check in this many gets a 401 (probe_down fires at once: Slack messages)
# The daemon without its alert engine: the default components minus ``alerts`` (monitor/wiring.py).
WITHOUT_ENGINE = (
    "import sys; from monitor import wiring; "
    "wiring.DEFAULT_COMPONENTS = tuple(f for f in wiring.DEFAULT_COMPONENTS if f is not wiring.alerts); "
    "from monitor.cli import main; sys.exit(main(sys.argv[1:]))"
)
VARIANTS = ("engine + Slack", "no engine")
CEILING = "bare aiohttp (ceiling)"


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (le, count) buckets (linear within a bucket)."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return float("nan")
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-12)
        prev_le, prev_count = le, count
    return prev_le


def scrape(url: str, accept: str = PROMETHEUS_ACCEPT, *, gzipped: bool = False) -> tuple[str, float]:
    """One scrape with Prometheus' Accept header (the daemon answers OpenMetrics); ``gzipped``: with its
    ``Accept-Encoding: gzip`` too (what Prometheus sends unless told not to), decompressed in the time."""
    t0 = time.perf_counter()
    headers = {"Accept": accept, **({"Accept-Encoding": "gzip"} if gzipped else {})}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
        data = resp.read()
        text = (gzip.decompress(data) if resp.headers.get("Content-Encoding") == "gzip" else data).decode()
    return text, time.perf_counter() - t0


def lag_buckets(text: str) -> dict[float, float]:
    return {float(le): float(c) for le, c in BUCKET_RE.findall(text)}


def config_text(url: str, size: int, port: int, slack_api: str) -> str:
    lines = [
        "monitor:", f'  listen: "127.0.0.1:{port}"', "  max_concurrency: 256", "  log_level: WARNING",
        "integrations:",
    ]
    per_integration = 100  # realistic shape: many integrations with a handful of checks each
    denied = url.rsplit("/", 1)[0] + "/denied.json"
    for i in range(size):
        if i % per_integration == 0:
            lines += [f"  vendor{i // per_integration}:", "    checks:"]
        target = denied if i % FAILING_EVERY == FAILING_EVERY - 1 else url
        lines.append(f'      - {{name: c{i}, kind: http, url: "{target}", interval: 60s, timeout: {CHECK_TIMEOUT:g}s}}')
    lines += ["alerting:", f'  slack: {{token: "{TOKEN}", channel: "#alerts", base_url: "{slack_api}"}}']
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def fake_slack() -> Iterator[FakeSlack]:
    """The tests' fake Slack, served by an event loop in a thread of this process."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    slack = asyncio.run_coroutine_threadsafe(FakeSlack().start(), loop).result(30)
    try:
        yield slack
    finally:
        asyncio.run_coroutine_threadsafe(slack.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


BEFORE = "before: engine + Slack"  # --before


def run(url: str, slack: FakeSlack, size: int, seconds: float, variant: str, *, before: str | None = None,
        scrape_every: float = SCRAPE_EVERY) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config_text(url, size, port, slack.api_url))
        command = daemon_command(cfg)
        if variant == "no engine":
            command = [sys.executable, "-c", WITHOUT_ENGINE, "run", "-c", str(cfg)]
        posted = len(slack.calls("chat.postMessage"))
        env = {**os.environ, "PYTHONPATH": before} if variant == BEFORE and before else None
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=600)
            time.sleep(size / FIRST_RUN_RATE + 5)  # first runs spread out: every check is on its interval now
            _, first_took = scrape(metrics_url)  # the first scrape after start, before the daemon has settled
            time.sleep(SETTLE_SECONDS - 5)
            text, took = scrape(metrics_url)
            first = lag_buckets(text)
            runs0 = sum(float(v) for v in RUNS_RE.findall(text))
            renders, rss_peak = [took], rss_bytes(proc.pid)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            next_scrape = t0 + scrape_every
            while (now := time.monotonic()) < t0 + seconds:
                time.sleep(min(1.0, max(0.0, min(next_scrape, t0 + seconds) - now)))
                rss_peak = max(rss_peak, rss_bytes(proc.pid))
                if time.monotonic() >= next_scrape:
                    text, took = scrape(metrics_url)
                    renders.append(took)
                    next_scrape += scrape_every
            text, took = scrape(metrics_url)
            renders.append(took)
            elapsed = time.monotonic() - t0
            _, plain_took = scrape(metrics_url, accept="text/plain")  # the classic text format, for comparison
            _, gzip_took = scrape(metrics_url, gzipped=True)  # as Prometheus scrapes by default
            cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
            rss_end = rss_bytes(proc.pid)
            rss_peak = max(rss_peak, rss_end)
            last = lag_buckets(text)
            window = [(le, last[le] - first.get(le, 0.0)) for le in last]
            return {
                "cpu_share": cpu,
                "probes_per_s": (sum(float(v) for v in RUNS_RE.findall(text)) - runs0) / elapsed,
                "rss_peak_mb": rss_peak / 2**20,
                "rss_end_mb": rss_end / 2**20,
                "lag_p50_ms": 1000 * histogram_quantile(0.5, window),
                "lag_p99_ms": 1000 * histogram_quantile(0.99, window),
                "metrics_ms": 1000 * statistics.median(renders),
                "metrics_max_ms": 1000 * max(renders),
                "metrics_first_ms": 1000 * first_took,
                "metrics_text_ms": 1000 * plain_took,
                "metrics_gzip_ms": 1000 * gzip_took,
                "metrics_kb": len(text.encode()) / 1024,
                "slack_messages": len(slack.calls("chat.postMessage")) - posted,
            }
        finally:
            proc.terminate()
            proc.wait(60)


def ceiling(url: str, size: int, seconds: float) -> dict[str, float]:
    """CPU of bare aiohttp doing what the daemon's probes do at this size, nothing else."""
    rate = size / 60.0
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parent / "bare_aiohttp.py"), url, "--rate", str(rate),
         "--seconds", str(seconds), "--uvloop"], capture_output=True, text=True, check=True,
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return {"cpu_share": got["cpu"] / got["wall"], "probes_per_s": got["probes"] / got["wall"]}


def _get(key: str, run: dict[str, float]) -> float | None:
    return run.get(key)


Measure = Callable[[str, FakeSlack, int, str], dict[str, float]]  # (nginx URL, Slack, size, variant) → figures


def measure_sizes(
    args: argparse.Namespace, variants: Sequence[str], measure: Measure,
    also: Callable[[str, int], tuple[str, dict[str, float]]] | None = None,
) -> dict[tuple[int, str], list[dict[str, float]]]:
    """Every variant at every size, ``args.runs`` times alternating (and ``also``, a peer that is not a
    daemon, after them), against one nginx and one fake Slack; each result printed as it comes."""
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    with nginx_target() as url, fake_slack() as slack:
        for size in args.sizes:
            for _ in range(args.runs):
                measured = [(variant, measure(url, slack, size, variant)) for variant in variants]
                if also is not None:
                    measured.append(also(url, size))
                for variant, got in measured:
                    results.setdefault((size, variant), []).append(got)
                    print(f"  measured {size} checks, {variant}: " + ", ".join(f"{k}={v:.2f}" for k, v in got.items()),
                          flush=True)
    print()
    return results


def main() -> None:
    parser = sizes_parser(__doc__, sizes=[1000, 10000], seconds=60.0,
                          seconds_help="steady-state window (≥ one 60 s interval)")
    parser.add_argument("--before", help="another checkout: its daemon as it ships too, alternating")
    parser.add_argument("--scrape-every", type=float, default=SCRAPE_EVERY, help="seconds between scrapes")
    args = parser.parse_args()
    variants = (*(VARIANTS if args.peer else VARIANTS[:1]), *((BEFORE,) if args.before else ()))
    results = measure_sizes(
        args, variants,
        lambda url, slack, size, variant: run(url, slack, size, args.seconds, variant, before=args.before,
                                              scrape_every=args.scrape_every),
        also=(lambda url, size: (CEILING, ceiling(url, size, args.seconds))) if args.peer else None,
    )
    columns = [
        ("probes/s", "probes_per_s", "{:.0f}"), ("CPU % core", "cpu_share", "{:.1%}"),
        ("RSS MB peak", "rss_peak_mb", "{:.0f}"), ("lag p50 ms", "lag_p50_ms", "{:.1f}"),
        ("lag p99 ms", "lag_p99_ms", "{:.1f}"), ("/metrics ms", "metrics_ms", "{:.0f}"),
        ("(worst)", "metrics_max_ms", "{:.0f}"), ("first after start ms", "metrics_first_ms", "{:.0f}"),
        ("text ms", "metrics_text_ms", "{:.0f}"),
        ("gzip ms", "metrics_gzip_ms", "{:.0f}"),
        ("/metrics KB", "metrics_kb", "{:.0f}"), ("Slack msgs", "slack_messages", "{:.0f}"),
    ]
    print_medians(results, [(name, functools.partial(_get, key), fmt) for name, key, fmt in columns])
    print("targets at 10,000: CPU < 50% of one core, lag p99 < 100 ms, RSS < 200 MB, /metrics < 250 ms")


if __name__ == "__main__":
    main()
