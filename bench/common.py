"""Shared pieces of the benchmarks: a fast local target (nginx), process CPU/RSS from /proc, ports."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# What Prometheus 2.x sends when it scrapes (OpenMetrics preferred, the classic text format accepted).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
BODY = b'{"status":"ok","data":{"id":"acct_123","balance":{"amount":4200,"currency":"eur"}},"livemode":false}\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout}s")
        time.sleep(0.1)


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"{binary} not found: apt-get install -y the Debian package that has it (see bench/README.md)")
    return path


@contextlib.contextmanager
def nginx_target() -> Iterator[str]:
    """nginx on 127.0.0.1 serving BODY as JSON at /ok.json (401 at /denied.json, its request counters at
    /nginx_status); yields the URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise SystemExit("nginx not found: apt-get install -y nginx")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="im-bench-nginx-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx workers drop root and must read the files
        (root / "www").mkdir()
        (root / "www" / "ok.json").write_bytes(BODY)
        conf = root / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/json;
  client_body_temp_path {root}/tmp;
  proxy_temp_path {root}/tmp;
  fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp;
  scgi_temp_path {root}/tmp;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    root {root}/www;
    location / {{ types {{ }} default_type application/json; }}
    location = /denied.json {{ return 401; }}
    location = /nginx_status {{ stub_status; }}
  }}
}}
"""
        )
        (root / "tmp").mkdir()
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root)], stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/ok.json"
            wait_http(url)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def wrk_capacity(url: str, seconds: int = 3) -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk not installed"
    out = subprocess.run(
        [wrk, "-t1", "-c16", f"-d{seconds}s", url], capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec"):
            return f"{float(line.split()[1]):,.0f} req/s (wrk, keep-alive, 16 connections)"
    return "wrk gave no figure"


def daemon_command(config: str | os.PathLike[str], *, uvloop: bool = True) -> list[str]:
    """The daemon (``integration-monitor run -c CONFIG``) as a child process of this Python.

    It runs on uvloop when uvloop is installed (the ``speed`` extra); ``uvloop=False`` hides uvloop
    from the daemon's imports, which is how a host without the extra runs it.
    """
    if uvloop:
        return [sys.executable, "-m", "monitor", "run", "-c", str(config)]
    hide = "import sys; sys.modules['uvloop'] = None; from monitor.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", hide, "run", "-c", str(config)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sizes_parser(doc: str, *, sizes: list[int], seconds: float, seconds_help: str) -> argparse.ArgumentParser:
    """The options of a bench that runs the daemon at several sizes, variants side by side."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes)
    parser.add_argument("--seconds", type=float, default=seconds, help=seconds_help)
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant, alternating")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="only the daemon as it ships")
    return parser


Column = tuple[str, Callable[[dict[str, float]], float | None], str]  # header, value of a run (None: n/a), format


def print_medians(results: Mapping[tuple[int, str], list[dict[str, float]]], columns: Sequence[Column]) -> None:
    """A Markdown table, a row per (size, variant): each cell the median of the runs (min–max if several)."""
    print("| checks | variant | " + " | ".join(name for name, _, _ in columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for (size, variant), runs in results.items():
        cells = []
        for _, value, fmt in columns:
            values = [v for r in runs if (v := value(r)) is not None]
            cell = fmt.format(statistics.median(values)) if values else ""
            if len(values) > 1:
                cell += f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
            cells.append(cell)
        print(f"| {size:,} | {variant} | " + " | ".join(cells) + " |")
