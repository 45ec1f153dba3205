"""Probe efficiency: CPU milliseconds per probe, side by side, in one run on one target.

Contenders, all with a fresh connection per probe:
  daemon        integration-monitor run (scheduler + probe + metrics), CPU of the daemon process
  blackbox      prometheus-blackbox-exporter driven by GET /probe, CPU of the exporter process only
  bare asyncio  a bare aiohttp loop (the ceiling of any Python prober)
  bare uvloop   the same on uvloop

Modes: paced (--rate probes/s, default 200) and saturation; plain GET and a JSON-assertion variant.
Usage: python bench/probe_cpu.py [--runs 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, free_port, median, nginx_target, require, wait_http, wrk_capacity

HERE = Path(__file__).resolve().parent
RUNS_RE = re.compile(r'^integration_probe_runs_total\{[^}]*\} ([0-9.e+]+)$', re.M)


def bare(url: str, *, rate: float, seconds: float, json_check: bool, uvloop: bool) -> float:
    cmd = [sys.executable, str(HERE / "bare_aiohttp.py"), url, "--seconds", str(seconds), "--rate", str(rate)]
    cmd += ["--json"] if json_check else []
    cmd += ["--uvloop"] if uvloop else []
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return 1000 * out["cpu"] / max(1, out["probes"])


def blackbox(url: str, *, rate: float, seconds: float, json_check: bool) -> float:
    exe = require("prometheus-blackbox-exporter")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "blackbox.yml"
        cfg.write_text(
            "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n"
            "  http_json:\n    prober: http\n    timeout: 5s\n    http:\n"
            "      fail_if_body_not_matches_regexp: ['\"id\":\\s*\"[^\"]+\"', '\"livemode\":\\s*(true|false)']\n"
        )
        proc = subprocess.Popen(
            [exe, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            module = "http_json" if json_check else "http_2xx"
            probe_url = f"http://127.0.0.1:{port}/probe?module={module}&target={url}"
            wait_http(probe_url)
            cpu0 = cpu_seconds(proc.pid)
            cmd = [sys.executable, str(HERE / "bare_aiohttp.py"), probe_url, "--keepalive",
                   "--seconds", str(seconds), "--rate", str(rate), "--concurrency", "32"]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            return 1000 * (cpu_seconds(proc.pid) - cpu0) / max(1, out["probes"])
        finally:
            proc.terminate()
            proc.wait(10)


def _probes_done(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in RUNS_RE.findall(text))


def daemon_config(url: str, *, checks: int, interval: float, json_check: bool, concurrency: int, port: int) -> str:
    expect = (
        'expect: {json: {"$.data.id": {non_empty: true}, "$.livemode": {not_null: true}}}'
        if json_check else "expect: {body_required: false}"
    )
    lines = [
        "monitor:",
        f'  listen: "127.0.0.1:{port}"',
        f"  max_concurrency: {concurrency}",
        "  log_level: WARNING",
        "integrations:",
        "  bench:",
        "    checks:",
    ]
    lines += [
        f'      - {{name: c{i}, kind: http, url: "{url}", interval: {interval}s, timeout: 5s, {expect}}}'
        for i in range(checks)
    ]
    return "\n".join(lines) + "\n"


def daemon(url: str, *, rate: float, seconds: float, json_check: bool, uvloop: bool) -> float:
    port = free_port()
    # Paced: N checks at 1 s each gives N probes/s. Saturation: far more checks than one process can run.
    checks, interval, concurrency = (int(rate), 1.0, 64) if rate else (3000, 1.0, 128)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(daemon_config(url, checks=checks, interval=interval, json_check=json_check,
                                     concurrency=concurrency, port=port))
        env = dict(os.environ, IM_NO_UVLOOP="" if uvloop else "1")
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_http(f"http://127.0.0.1:{port}/healthz")
            time.sleep(3)  # first runs are spread over the start window
            cpu0, n0 = cpu_seconds(proc.pid), _probes_done(metrics_url)
            time.sleep(seconds)
            cpu1, n1 = cpu_seconds(proc.pid), _probes_done(metrics_url)
            return 1000 * (cpu1 - cpu0) / max(1.0, n1 - n0)
        finally:
            proc.terminate()
            proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args()
    with nginx_target() as url:
        print(f"target: nginx on loopback, {wrk_capacity(url)}")
        rows = []
        for json_check in (False, True):
            for label, rate in ((f"paced {args.rate:g}/s", args.rate), ("saturation", 0.0)):
                cells: dict[str, list[float]] = {k: [] for k in ("daemon", "blackbox", "bare_asyncio", "bare_uvloop")}
                for _ in range(args.runs):
                    kw = dict(rate=rate, seconds=args.seconds, json_check=json_check)
                    cells["daemon"].append(daemon(url, uvloop=True, **kw))  # type: ignore[arg-type]
                    cells["blackbox"].append(blackbox(url, **kw))  # type: ignore[arg-type]
                    cells["bare_asyncio"].append(bare(url, uvloop=False, **kw))  # type: ignore[arg-type]
                    cells["bare_uvloop"].append(bare(url, uvloop=True, **kw))  # type: ignore[arg-type]
                med = {k: median(v) for k, v in cells.items()}
                rows.append((("json " if json_check else "get  ") + label, med))
                print(f"  measured {rows[-1][0]}: " + ", ".join(f"{k}={v:.3f}" for k, v in med.items()), flush=True)
    print()
    print(f"CPU ms per probe (median of {args.runs} runs, fresh connection per probe)")
    head = (
        f"{'scenario':<22}{'daemon':>9}{'blackbox':>10}{'bare asyncio':>14}{'bare uvloop':>13}"
        f"{'d/blackbox':>12}{'d/uvloop':>10}"
    )
    print(head)
    print("-" * len(head))
    for name, m in rows:
        print(f"{name:<22}{m['daemon']:>9.3f}{m['blackbox']:>10.3f}{m['bare_asyncio']:>14.3f}{m['bare_uvloop']:>13.3f}"
              f"{m['daemon'] / m['blackbox']:>12.2f}{m['daemon'] / m['bare_uvloop']:>10.2f}")


if __name__ == "__main__":
    main()
