"""Probe efficiency: CPU milliseconds per probe, side by side, in one run on one target.

Contenders, all with a fresh connection per probe:
  daemon        integration-monitor run (scheduler + probe + metrics), CPU of the daemon process, on uvloop
  daemon asyncio  the same daemon with uvloop hidden (a host without the `speed` extra)
  blackbox      prometheus-blackbox-exporter driven by GET /probe, CPU of the exporter process only
  bare asyncio  a bare aiohttp loop (the ceiling of any Python prober)
  bare uvloop   the same on uvloop
  APScheduler   the same request on uvloop, run by APScheduler jobs set up as the daemon sets up its checks'
                (bench/bare_aiohttp.py --scheduled): the floor of a prober that keeps APScheduler; what the
                daemon costs beyond it is ours

Modes: paced (--rate probes/s, default 200) and saturation (every contender keeps 32 probes in flight;
the daemon gets 2,000 checks due each second, more than it can run); plain GET and a JSON-assertion
variant. A run where a probe fails (daemon) or blackbox's probe does not succeed is an error, not a number.
Usage: python bench/probe_cpu.py [--runs 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    cpu_seconds,
    daemon_command,
    free_port,
    median,
    nginx_target,
    require,
    wait_http,
    wrk_capacity,
)

HERE = Path(__file__).resolve().parent
RUNS_RE = re.compile(r"^integration_probe_runs_total\{[^}]*\} ([0-9.e+]+)$", re.M)
OK_RE = re.compile(r'^integration_probe_runs_total\{[^}]*outcome="success"[^}]*\} ([0-9.e+]+)$', re.M)
SATURATION_CHECKS = 2000  # due each second: more than one Python process can probe here
SATURATION_CONCURRENCY = 32  # probes in flight at saturation, for every contender


Sample = tuple[float, float]  # (CPU ms per probe, probes per second)


def bare(url: str, *, rate: float, seconds: float, json_check: bool, uvloop: bool, scheduled: bool = False) -> Sample:
    cmd = [sys.executable, str(HERE / "bare_aiohttp.py"), url, "--seconds", str(seconds), "--rate", str(rate)]
    cmd += ["--json"] if json_check else []
    cmd += ["--uvloop"] if uvloop else []
    if scheduled:  # the daemon's checks and concurrency (see ``daemon``)
        checks, concurrency = (int(rate), 64) if rate else (SATURATION_CHECKS, SATURATION_CONCURRENCY)
        cmd += ["--scheduled", str(checks), "--concurrency", str(concurrency)]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return 1000 * out["cpu"] / max(1, out["probes"]), out["probes"] / out["wall"]


def blackbox(url: str, *, rate: float, seconds: float, json_check: bool) -> Sample:
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
            with urllib.request.urlopen(probe_url, timeout=10) as resp:
                if b"probe_success 1" not in resp.read():
                    raise RuntimeError(f"blackbox_exporter's {module} probe of {url} fails: the comparison is void")
            cpu0 = cpu_seconds(proc.pid)
            cmd = [sys.executable, str(HERE / "bare_aiohttp.py"), probe_url, "--keepalive",
                   "--seconds", str(seconds), "--rate", str(rate), "--concurrency", str(SATURATION_CONCURRENCY)]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            return 1000 * (cpu_seconds(proc.pid) - cpu0) / max(1, out["probes"]), out["probes"] / out["wall"]
        finally:
            proc.terminate()
            proc.wait(10)


def _probes_done(metrics_url: str) -> tuple[float, float]:
    """(successful runs, failed runs) so far, from the daemon's own counters."""
    with urllib.request.urlopen(metrics_url, timeout=30) as resp:
        text = resp.read().decode()
    ok = sum(float(v) for v in OK_RE.findall(text))
    return ok, sum(float(v) for v in RUNS_RE.findall(text)) - ok


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


def daemon(url: str, *, rate: float, seconds: float, json_check: bool, uvloop: bool) -> Sample:
    port = free_port()
    # Paced: N checks every 1 s is N probes/s. Saturation: more checks due per second than one process
    # can run, with as many probes in flight as the bare loop keeps.
    checks, interval, concurrency = (int(rate), 1.0, 64) if rate else (SATURATION_CHECKS, 1.0, SATURATION_CONCURRENCY)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(daemon_config(url, checks=checks, interval=interval, json_check=json_check,
                                     concurrency=concurrency, port=port))
        proc = subprocess.Popen(
            daemon_command(cfg, uvloop=uvloop), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_http(f"http://127.0.0.1:{port}/healthz")
            time.sleep(3)  # first runs are spread over the start window
            cpu0, (ok0, failed0), t0 = cpu_seconds(proc.pid), _probes_done(metrics_url), time.monotonic()
            time.sleep(seconds)
            cpu1, (ok1, failed1), t1 = cpu_seconds(proc.pid), _probes_done(metrics_url), time.monotonic()
            if failed1 > failed0:
                raise RuntimeError(f"{failed1 - failed0:.0f} daemon probes failed: the comparison is void")
            return 1000 * (cpu1 - cpu0) / max(1.0, ok1 - ok0), (ok1 - ok0) / (t1 - t0)
        finally:
            proc.terminate()
            proc.wait(15)


CONTENDERS = ("daemon", "daemon_asyncio", "blackbox", "bare_asyncio", "bare_uvloop", "apscheduler")


def measure(url: str, contender: str, **kw: Any) -> Sample:
    if contender == "daemon":
        return daemon(url, uvloop=True, **kw)
    if contender == "daemon_asyncio":
        return daemon(url, uvloop=False, **kw)
    if contender == "blackbox":
        return blackbox(url, **kw)
    if contender == "apscheduler":
        return bare(url, uvloop=True, scheduled=True, **kw)
    return bare(url, uvloop=contender == "bare_uvloop", **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--modes", nargs="+", choices=("paced", "saturation"), default=["paced", "saturation"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                        help="a subset (the ratios of those left out print as nan)")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    with nginx_target() as url:
        print(f"target: nginx on loopback, {wrk_capacity(url)}")
        for json_check in (False, True):
            modes = {"paced": (f"paced {args.rate:g}/s", args.rate), "saturation": ("saturation", 0.0)}
            for label, rate in (modes[m] for m in args.modes):
                cells: dict[str, list[Sample]] = {k: [] for k in CONTENDERS}
                for _ in range(args.runs):  # interleaved, so a noisy moment hits every contender alike
                    for contender in args.contenders:
                        cells[contender].append(
                            measure(url, contender, rate=rate, seconds=args.seconds, json_check=json_check)
                        )
                cpu = {k: median([c for c, _ in v]) for k, v in cells.items()}
                rate_done = {k: median([r for _, r in v]) for k, v in cells.items()}
                rows.append((("json " if json_check else "get  ") + label, cpu, rate_done))
                print(f"  measured {rows[-1][0]}: " + ", ".join(f"{k}={v:.3f}" for k, v in cpu.items()), flush=True)
    print()
    print(f"CPU ms per probe (median of {args.runs} runs, fresh connection per probe; probes/s in brackets)")
    head = (
        f"{'scenario':<22}{'daemon':>14}{'daemon asyncio':>16}{'blackbox':>14}{'bare asyncio':>14}"
        f"{'bare uvloop':>14}{'APScheduler':>14}{'d/blackbox':>12}{'d/uvloop':>10}{'aps/uvloop':>12}{'d/aps':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, m, r in rows:
        cells_text = "".join(
            f"{f'{m[k]:.3f} ({r[k]:.0f})':>{w}}"
            for k, w in (("daemon", 14), ("daemon_asyncio", 16), ("blackbox", 14), ("bare_asyncio", 14),
                         ("bare_uvloop", 14), ("apscheduler", 14))
        )
        print(f"{name:<22}{cells_text}{m['daemon'] / m['blackbox']:>12.2f}{m['daemon'] / m['bare_uvloop']:>10.2f}"
              f"{m['apscheduler'] / m['bare_uvloop']:>12.2f}{m['daemon'] / m['apscheduler']:>8.2f}")
    print("targets: d/blackbox <= 0.6 (paced and saturation), d/uvloop <= 1.5; aps/uvloop: APScheduler's floor,"
          " d/aps: ours on top of it")


if __name__ == "__main__":
    main()
