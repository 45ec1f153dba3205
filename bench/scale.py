"""Scale: 1,000 and 10,000 checks at a 60 s interval (spread with jitter) against a local nginx.

Reports, per size: average process CPU (share of one core), RSS, scheduler lag p50/p99 (from the
daemon's own integration_monitor_scheduler_lag_seconds histogram), and /metrics render time and size.
Targets (issue 7): 10,000 checks < 50% of one core, lag p99 < 100 ms, RSS < 200 MB, /metrics < 250 ms.
Usage: python bench/scale.py [--sizes 1000 10000] [--seconds 75]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, free_port, nginx_target, rss_bytes, wait_http

BUCKET_RE = re.compile(r'^integration_monitor_scheduler_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


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


def scrape(url: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    return text, time.perf_counter() - t0


def run(url: str, size: int, seconds: float) -> dict[str, float]:
    port = free_port()
    lines = [
        "monitor:", f'  listen: "127.0.0.1:{port}"', "  max_concurrency: 256", "  log_level: WARNING",
        "integrations:",
    ]
    per_integration = 100  # realistic shape: many integrations with a handful of checks each
    for i in range(size):
        if i % per_integration == 0:
            lines += [f"  vendor{i // per_integration}:", "    checks:"]
        lines.append(f'      - {{name: c{i}, kind: http, url: "{url}", interval: 60s, timeout: 5s}}')
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text("\n".join(lines) + "\n")
        env = dict(os.environ)
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
            time.sleep(5)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            renders = []
            text = ""
            for _ in range(3):
                text, took = scrape(metrics_url)
                renders.append(took)
            buckets = [(float(le), float(c)) for le, c in BUCKET_RE.findall(text)]
            return {
                "cpu_share": cpu,
                "rss_mb": rss_bytes(proc.pid) / 2**20,
                "lag_p50_ms": 1000 * histogram_quantile(0.5, buckets),
                "lag_p99_ms": 1000 * histogram_quantile(0.99, buckets),
                "metrics_ms": 1000 * sorted(renders)[1],
                "metrics_kb": len(text.encode()) / 1024,
            }
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=75.0, help="measurement window (≥ one 60 s interval)")
    args = parser.parse_args()
    results = {}
    with nginx_target() as url:
        for size in args.sizes:
            results[size] = run(url, size, args.seconds)
            print(f"  measured {size} checks: {results[size]}", flush=True)
    print()
    head = (
        f"{'checks':>8}{'CPU % core':>12}{'RSS MB':>9}{'lag p50 ms':>12}{'lag p99 ms':>12}"
        f"{'/metrics ms':>13}{'/metrics KB':>13}"
    )
    print(head)
    print("-" * len(head))
    for size, r in results.items():
        print(
            f"{size:>8}{100 * r['cpu_share']:>12.1f}{r['rss_mb']:>9.0f}{r['lag_p50_ms']:>12.1f}"
            f"{r['lag_p99_ms']:>12.1f}{r['metrics_ms']:>13.0f}{r['metrics_kb']:>13.0f}"
        )
    print("targets at 10,000: CPU < 50% of one core, lag p99 < 100 ms, RSS < 200 MB, /metrics < 250 ms")


if __name__ == "__main__":
    main()
