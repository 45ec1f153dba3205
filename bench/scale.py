"""Scale: 1,000 and 10,000 checks at a 60 s interval (spread with jitter) against a local nginx.

Reports, per size, over a steady-state window (after the first runs have been spread out, so the
window holds every check running on its interval) during which /metrics is scraped every 15 s as
Prometheus would (the scrapes are part of the load):
  - average process CPU (share of one core) and RSS (peak sampled each second, and at the end),
  - scheduler lag p50/p99 from the daemon's own integration_monitor_scheduler_lag_seconds histogram,
    over the window only (bucket increase between the first and last scrape, like rate() would),
  - /metrics response time (median and worst of the scrapes, with Prometheus' Accept header, which
    asks for OpenMetrics first; and once in the classic text format) and size.
Targets (issue 7): 10,000 checks < 50% of one core, lag p99 < 100 ms, RSS < 200 MB, /metrics < 250 ms.
Usage: python bench/scale.py [--sizes 1000 10000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROMETHEUS_ACCEPT, cpu_seconds, daemon_command, free_port, nginx_target, rss_bytes, wait_http

BUCKET_RE = re.compile(r'^integration_monitor_scheduler_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)
RUNS_RE = re.compile(r"^integration_probe_runs_total\{[^}]*\} ([0-9.e+]+)$", re.M)
SCRAPE_EVERY = 15.0  # Prometheus' usual scrape interval (deploy/prometheus/prometheus.yml)
FIRST_RUN_RATE = 200.0  # the scheduler spreads first runs at this rate (monitor/scheduler.py)


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


def scrape(url: str, accept: str = PROMETHEUS_ACCEPT) -> tuple[str, float]:
    """One scrape as Prometheus makes it (its Accept header: the daemon answers OpenMetrics)."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=60) as resp:
        text = resp.read().decode()
    return text, time.perf_counter() - t0


def lag_buckets(text: str) -> dict[float, float]:
    return {float(le): float(c) for le, c in BUCKET_RE.findall(text)}


def config_text(url: str, size: int, port: int) -> str:
    lines = [
        "monitor:", f'  listen: "127.0.0.1:{port}"', "  max_concurrency: 256", "  log_level: WARNING",
        "integrations:",
    ]
    per_integration = 100  # realistic shape: many integrations with a handful of checks each
    for i in range(size):
        if i % per_integration == 0:
            lines += [f"  vendor{i // per_integration}:", "    checks:"]
        lines.append(f'      - {{name: c{i}, kind: http, url: "{url}", interval: 60s, timeout: 5s}}')
    return "\n".join(lines) + "\n"


def run(url: str, size: int, seconds: float) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(config_text(url, size, port))
        proc = subprocess.Popen(daemon_command(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
            time.sleep(size / FIRST_RUN_RATE + 5)  # first runs spread out: every check is on its interval now
            text, took = scrape(metrics_url)
            first = lag_buckets(text)
            runs0 = sum(float(v) for v in RUNS_RE.findall(text))
            renders, rss_peak = [took], rss_bytes(proc.pid)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            next_scrape = t0 + SCRAPE_EVERY
            while (now := time.monotonic()) < t0 + seconds:
                time.sleep(min(1.0, max(0.0, min(next_scrape, t0 + seconds) - now)))
                rss_peak = max(rss_peak, rss_bytes(proc.pid))
                if time.monotonic() >= next_scrape:
                    text, took = scrape(metrics_url)
                    renders.append(took)
                    next_scrape += SCRAPE_EVERY
            text, took = scrape(metrics_url)
            renders.append(took)
            elapsed = time.monotonic() - t0
            _, plain_took = scrape(metrics_url, accept="text/plain")  # the classic text format, for comparison
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
                "metrics_text_ms": 1000 * plain_took,
                "metrics_kb": len(text.encode()) / 1024,
            }
        finally:
            proc.terminate()
            proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=60.0, help="steady-state window (≥ one 60 s interval)")
    args = parser.parse_args()
    results = {}
    with nginx_target() as url:
        for size in args.sizes:
            results[size] = run(url, size, args.seconds)
            print(f"  measured {size} checks: " + ", ".join(f"{k}={v:.1f}" for k, v in results[size].items()),
                  flush=True)
    print()
    head = (
        f"{'checks':>8}{'probes/s':>10}{'CPU % core':>12}{'RSS MB peak':>13}{'lag p50 ms':>12}{'lag p99 ms':>12}"
        f"{'/metrics ms':>13}{'(worst)':>9}{'text ms':>9}{'/metrics KB':>13}"
    )
    print(head)
    print("-" * len(head))
    for size, r in results.items():
        print(
            f"{size:>8}{r['probes_per_s']:>10.0f}{100 * r['cpu_share']:>12.1f}{r['rss_peak_mb']:>13.0f}"
            f"{r['lag_p50_ms']:>12.1f}{r['lag_p99_ms']:>12.1f}{r['metrics_ms']:>13.0f}{r['metrics_max_ms']:>9.0f}"
            f"{r['metrics_kb']:>13.0f}"
        )
    print("targets at 10,000: CPU < 50% of one core, lag p99 < 100 ms, RSS < 200 MB, /metrics < 250 ms")


if __name__ == "__main__":
    main()
