"""Memory per check: the daemon's RSS once every check has run, and who holds the bytes (tracemalloc).

Same config as scale.py (500 integrations × 100 HTTP checks against one local nginx, one in a hundred
refused with 401; the alert engine on, Slack configured: the tests' fake Slack on loopback), but checks
every ``--interval`` (default 600 s): the state a check's first run builds is what stays, and a probe
rate the traced daemon can keep up with leaves nothing in flight to blur the count.

Two measures per size, each in a fresh process:
  - ``rss``: the daemon as it ships (``integration-monitor run``), no tracing: RSS and its peak
    (VmHWM) once every check has had its first run (the first runs are spread at 200/s, plus 15 s);
  - ``traced`` (``--traced-sizes``; tracemalloc slows the daemon several times: 5 minutes for 2,000 checks
    on a loaded machine, where 10,000 took over an hour): the daemon
    in-process with tracemalloc on from before the config is parsed, until every check has a result and
    no probe is in flight; then the live bytes, grouped by the innermost frame of the project's own code
    that allocated them (``HOLDERS``), divided by the number of checks. Fixed costs (imports, the
    event loop) are spread over the checks too: compare sizes, or compare per holder.

``--before TREE`` runs the same measures against another checkout (e.g. main before a change:
``git archive main monitor checks alerts integration_kit | tar -x -C /tmp/before``) with
``PYTHONPATH=TREE``, and prints it side by side with this tree.
Usage: python bench/memory.py [--sizes 10000 50000] [--traced-sizes 10000] [--before TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import free_port, nginx_target, rss_bytes, wait_http
from scale import FIRST_RUN_RATE, config_text, fake_slack

# Who holds an allocation: the first rule matching the innermost frame of the project's own code.
HOLDERS = (
    ("monitor/settings/", "config models (pydantic)"),
    ("checks/http_config.py", "derived and cached on the check (request plan, retry policy)"),
    ("checks/base.py", "derived and cached on the check (request plan, retry policy)"),
    ("checks/", "probe path (the last result, its outcome)"),
    ("monitor/scheduler.py", "scheduler jobs (APScheduler job + trigger, _Job, ProbeContext)"),
    ("monitor/status.py", "status store"),
    ("monitor/probe_series.py", "metric series"),
    ("monitor/recorder.py", "metric series"),
    ("alerts/stats.py", "alert statistics"),
    ("alerts/", "alert engine (rules, states)"),
    ("monitor/", "daemon, other"),
    ("integration_kit/", "integration kit"),
)
PACKAGES = ("monitor/", "checks/", "alerts/", "integration_kit/")
OTHER = "no project frame (imports, event loop, aiohttp, APScheduler's own)"


def config_file(tmp: str, url: str, size: int, interval: str, slack_api: str) -> tuple[Path, int]:
    port = free_port()
    cfg = Path(tmp) / "config.yaml"
    cfg.write_text(config_text(url, size, port, slack_api).replace("interval: 60s", f"interval: {interval}"))
    return cfg, port


def tree_env(tree: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(tree).resolve()), env.get("PYTHONPATH")) if p)
    return env


def checks_run(port: int) -> int:
    """Checks with a result so far: their integration_probe_success series (one per check that ran)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as resp:
        return sum(1 for line in resp if line.startswith(b"integration_probe_success{"))


def hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_rss(url: str, slack_api: str, size: int, interval: str, tree: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg, port = config_file(tmp, url, size, interval, slack_api)
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(cfg)], env=tree_env(tree),
                                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # not this tree's
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=900)
            loaded = rss_bytes(proc.pid)
            time.sleep(size / FIRST_RUN_RATE + 15)
            unscraped = rss_bytes(proc.pid)
            ran = checks_run(port)
            for _ in range(30):  # a loaded machine: the first runs may still be catching up
                if ran >= size:
                    break
                time.sleep(10)
                ran = checks_run(port)
            return {"checks run": ran, "RSS, config loaded": loaded / 2**20,
                    "RSS, first runs, not scraped yet": unscraped / 2**20,
                    "RSS, every check run, scraped": rss_bytes(proc.pid) / 2**20,
                    "peak RSS (VmHWM)": hwm_bytes(proc.pid) / 2**20}
        finally:
            proc.terminate()
            proc.wait(120)


def measure_traced(size: int, interval: str, tree: str | None, frames: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(size), "--interval", interval, "--frames", str(frames)],
        env=tree_env(tree), capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def holder(frames: tracemalloc.Traceback) -> tuple[str, str]:
    """(holder, site) of an allocation: the innermost frame in the project's packages."""
    for frame in reversed(frames):  # oldest first: walk from the allocation outwards
        name = frame.filename.replace(os.sep, "/")
        if "site-packages" in name:
            continue
        for package in PACKAGES:
            at = name.rfind("/" + package)
            if at >= 0:
                rel = name[at + 1:]
                site = f"{rel}:{frame.lineno}"
                return next(h for prefix, h in HOLDERS if rel.startswith(prefix)), site
    return OTHER, ""


async def traced_daemon(size: int, interval: str, url: str, slack_api: str) -> dict[str, float]:
    from monitor.app import App
    from monitor.settings import parse_config

    with tempfile.TemporaryDirectory() as tmp:
        text = config_file(tmp, url, size, interval, slack_api)[0].read_text()
    config = parse_config(text)
    del text
    app = App(config)
    await app.start()
    try:
        while True:  # every check has a result and nothing is in flight: only long-lived state is left
            if len(app.status_store.keys()) >= size and not app.scheduler.status()["in_flight"]:
                break
            await asyncio.sleep(1)
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    finally:
        await app.close()
    by_holder: dict[str, float] = collections.Counter()
    by_site: dict[str, float] = collections.Counter()
    for stat in snapshot.statistics("traceback"):
        name, site = holder(stat.traceback)
        by_holder[name] += stat.size / size
        if site:
            by_site[site] += stat.size / size
    top_sites = {f"site {s}": b for s, b in collections.Counter(by_site).most_common(15)}
    return {"traced total": sum(by_holder.values()), **dict(by_holder), **top_sites}


def worker(size: int, interval: str, frames: int) -> None:
    from fake_slack import FakeSlack

    tracemalloc.start(frames)
    with nginx_target() as url:
        async def run() -> dict[str, float]:
            slack = await FakeSlack().start()
            try:
                return await traced_daemon(size, interval, url, slack.api_url)
            finally:
                await slack.close()

        got = asyncio.run(run())
    print(json.dumps(got))


def side_by_side(title: str, rows: dict[str, dict[str, float]], unit: str) -> None:
    variants = list(rows)
    keys: list[str] = []
    for got in rows.values():
        keys += [k for k in got if k not in keys]
    print(f"\n{title}")
    print("| | " + " | ".join(variants) + (" | change |" if len(variants) == 2 else " |"))
    print("|---" * (len(variants) + 1 + (len(variants) == 2)) + "|")
    for key in keys:
        values = [rows[v].get(key) for v in variants]
        u = "" if key == "checks run" else f" {unit}"
        cells = [f"{v:,.0f}{u}" if v is not None else "" for v in values]
        if len(values) == 2:
            a, b = values
            cells.append(f"{b - a:+,.0f}{u}" if a is not None and b is not None else "")
        print(f"| {key} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10000, 50000], help="checks, RSS measure")
    parser.add_argument("--traced-sizes", type=int, nargs="*", default=[10000], help="checks, tracemalloc measure")
    parser.add_argument("--interval", default="600s", help="every check's interval")
    parser.add_argument("--frames", type=int, default=16, help="tracemalloc frames per allocation")
    parser.add_argument("--before", metavar="TREE", help="also measure this checkout (PYTHONPATH=TREE), first")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.interval, args.frames)
        return
    trees = ({"before": args.before} if args.before else {}) | {"this tree": None}
    rss: dict[int, dict[str, dict[str, float]]] = collections.defaultdict(dict)
    traced: dict[int, dict[str, dict[str, float]]] = collections.defaultdict(dict)
    with nginx_target() as url, fake_slack() as slack:
        for size in args.sizes:
            for name, tree in trees.items():
                rss[size][name] = got = measure_rss(url, slack.api_url, size, args.interval, tree)
                print(f"  rss {size} checks, {name}: {got}", flush=True)
    for size in args.traced_sizes:
        for name, tree in trees.items():
            traced[size][name] = got = measure_traced(size, args.interval, tree, args.frames)
            print(f"  traced {size} checks, {name}: {got['traced total']:.0f} B/check", flush=True)
    for size, rows in rss.items():
        side_by_side(f"RSS, {size:,} checks, every check run once (MB)", rows, "MB")
    for size, rows in traced.items():
        side_by_side(f"Live bytes per check by holder (tracemalloc), {size:,} checks", rows, "B")


if __name__ == "__main__":
    main()
