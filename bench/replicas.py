"""Three replicas sharing 10,000 checks at 60 s against one daemon with the same checks (issue 10).

    .venv/bin/python bench/replicas.py [--checks 10000] [--seconds 60] [--callgrind]

Side by side in one run, against one local nginx and a private redis-server (never a shared one):

1. one daemon (a cluster of one: the same config, the same Redis);
2. three daemons (``r1``…``r3``) started together, once all three agree on the members.

For each: probes/s across the fleet (``integration_probe_runs_total``, which only an integration's owner
exports, summed over the replicas: each run counted once), CPU of each daemon (share of one core,
utime+stime from /proc) over the window, and Redis: commands per second by command (``INFO
commandstats`` deltas) and redis-server's own CPU over the window. Then one replica is SIGKILLed and the
handover is timed: from the SIGKILL to the later of the two survivors' switch to a view without it (the
instant each logs; a crash is noticed when the lease runs out: ``monitor.cluster.ttl``, 10 s by default).
Each setup is measured after the first runs (every check due at once at start) have been spread out.

``--callgrind`` runs the redis-server under callgrind (bench/callgrind.py) and reports its instructions per
second in each window instead of its CPU: deterministic on a loaded machine, where CPU time is not.

Needs nginx and redis-server (Debian packages; valgrind for ``--callgrind``). Takes about 5 minutes with the
defaults (``--seconds 30``: 4).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callgrind import Counted, callgrind
from common import cpu_seconds, daemon_command, free_port, nginx_target, require, wait_http
from scale import FIRST_RUN_RATE, RUNS_RE

STAT_RE = re.compile(r"^cmdstat_([^:]+):calls=(\d+),usec=(\d+)", re.M)
SWITCH_RE = re.compile(
    r"^(\S+ \S+) INFO +monitor\.cluster\.replica: cluster: members (\S+) → (\S+); this replica \(\S+\) probes (\d+)",
    re.M)
CPU_RE = re.compile(r"^used_cpu_(?:sys|user):([0-9.]+)", re.M)
LEASE_LOST_RE = re.compile(r"this replica's lease ran out|lost this replica's membership")
CATCH_UP_RE = re.compile(r"cluster: (\d+) check\(s\) taken over with a run due")


def config_text(url: str, checks: int, redis_url: str) -> str:
    lines = ["monitor:", f"  redis_url: {redis_url}", "  max_concurrency: 256", "integrations:"]
    per_integration = 100
    for i in range(checks):
        if i % per_integration == 0:
            lines += [f"  vendor{i // per_integration}:", "    checks:"]
        lines.append(f'      - {{name: c{i}, kind: http, url: "{url}", interval: 60s, timeout: 5s}}')
    return "\n".join(lines) + "\n"


@contextmanager
def private_redis(counted: bool) -> Iterator[tuple[int, Counted | None]]:
    """A redis-server of this bench's own; ``counted``: under callgrind, its instructions counted."""
    port = free_port()
    argv = [require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(callgrind(argv) if counted else argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        yield port, Counted(proc.pid) if counted else None
    finally:
        proc.terminate()
        proc.wait(10)


def redis_info(port: int) -> tuple[dict[str, tuple[int, int]], float, int]:
    """((calls, µs spent in the command) by command, redis-server CPU seconds, its pid)."""
    text = subprocess.run(["redis-cli", "-p", str(port), "info", "all"], capture_output=True, text=True).stdout
    calls = {name: (int(n), int(usec)) for name, n, usec in STAT_RE.findall(text)}
    pid = int(re.search(r"^process_id:(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    return calls, sum(float(x) for x in CPU_RE.findall(text)), pid


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(resp.read().decode())


class Replica:
    def __init__(self, name: str, config: Path, logs: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = (logs / f"{name}.log").open("wb")
        env = {**os.environ, "IM_MONITOR__CLUSTER__REPLICA_ID": name}
        self.proc = subprocess.Popen([*daemon_command(config), "--listen", f"127.0.0.1:{self.port}"], env=env,
                                     stdout=self.log, stderr=self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def runs(self) -> float:
        return sum(float(v) for v in RUNS_RE.findall(get(f"{self.url}/metrics")))

    def switches(self) -> list[tuple[float, str, str, int]]:
        """Every change of view this replica logged: (wall time, members before, members after, its share).
        Read from its log rather than /api/status, which is heavy with 10,000 checks."""
        out = []
        for stamp, old, new, share in SWITCH_RE.findall(Path(self.log.name).read_text(errors="replace")):
            day, ms = stamp.split(",")
            out.append((time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000, old, new, int(share)))
        return out

    def switched_at(self, before: str, after: str) -> float:
        """Wall time of this replica's first switch of view from ``before`` to ``after``."""
        for at, old, new, _ in self.switches():
            if (old, new) == (before, after):
                return at
        raise ValueError(f"{self.name} did not switch from {before} to {after}")

    def lease_losses(self) -> int:
        return len(LEASE_LOST_RE.findall(Path(self.log.name).read_text(errors="replace")))

    def catch_ups(self) -> list[int]:
        return [int(n) for n in CATCH_UP_RE.findall(Path(self.log.name).read_text(errors="replace"))]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        self.log.close()


def until(condition: object, within: float, what: str) -> float:
    """Seconds until ``condition()`` held (polled every 0.5 s)."""
    start = time.monotonic()
    while True:
        try:
            if condition():  # type: ignore[operator]
                return time.monotonic() - start
        except (OSError, ValueError, KeyError, IndexError):
            pass
        if time.monotonic() - start > within:
            raise SystemExit(f"not within {within:g} s: {what}")
        time.sleep(0.5)


class HealthWatch:
    """Polls each replica's /healthz every 0.2 s from a thread: how long an answer took is an outside view of
    how long the replica's event loop was held (its heartbeats wait as long)."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.answers: dict[str, list[tuple[float, float]]] = {r.name: [] for r in replicas}  # (asked at, took)
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(r,), daemon=True) for r in replicas]
        for t in self._threads:
            t.start()

    def _watch(self, replica: Replica) -> None:
        while not self._done.is_set() and replica.proc.poll() is None:
            t0 = time.monotonic()
            asked = time.time()
            with contextlib.suppress(OSError):  # 503 (unhealthy) or not listening yet: the wait still counts
                urllib.request.urlopen(f"{replica.url}/healthz", timeout=60).read()
            self.answers[replica.name].append((asked, time.monotonic() - t0))
            self._done.wait(0.2)

    def longest(self, start: float, end: float) -> dict[str, float]:
        """Each replica's longest answer to a /healthz asked between two instants (epoch seconds)."""
        return {name: round(max((took for at, took in answers if start <= at < end), default=0.0), 2)
                for name, answers in self.answers.items()}

    def stop(self) -> None:
        self._done.set()


def measure(replicas: list[Replica], redis_port: int, seconds: float, counted: Counted | None) -> dict[str, object]:
    runs0 = sum(r.runs() for r in replicas)
    cpu0 = [cpu_seconds(r.proc.pid) for r in replicas]
    calls0, rcpu0, _ = redis_info(redis_port)
    if counted is not None:
        counted.zero()
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    instructions = counted.instructions() / elapsed if counted is not None else None
    runs1 = sum(r.runs() for r in replicas)
    calls1, rcpu1, _ = redis_info(redis_port)
    calls1.pop("info", None)  # this script's own
    per_s = {c: tuple((after - before) / elapsed for after, before in zip(n, calls0.get(c, (0, 0)), strict=True))
             for c, n in calls1.items()}
    return {
        "probes_per_s": (runs1 - runs0) / elapsed,
        "cpu": [(cpu_seconds(r.proc.pid) - c) / elapsed for r, c in zip(replicas, cpu0, strict=True)],
        # command → (calls/s, µs/s inside the command; Lua scripts' inner commands are counted too)
        "redis_commands_per_s": {c: n for c, n in sorted(per_s.items(), key=lambda kv: -kv[1][0]) if n[0] > 0},
        "redis_cpu": (rcpu1 - rcpu0) / elapsed,
        "redis_instructions_per_s": instructions,
    }


def agreed(replicas: list[Replica], members: set[str], checks: int) -> bool:
    """Every replica's last logged view is ``members`` and their shares add up to every check."""
    last = [r.switches()[-1] for r in replicas]
    return all(set(view.split(",")) == members for _, _, view, _ in last) and sum(s for *_, s in last) == checks


def run(url: str, checks: int, seconds: float, logs: Path, counted: bool, fleet_only: bool
        ) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    with private_redis(counted) as (redis_port, counter):
        config = logs / "config.yaml"
        config.write_text(config_text(url, checks, f"redis://127.0.0.1:{redis_port}/0"))
        # 1. One daemon.
        if not fleet_only:
            solo = Replica("solo", config, logs)
            try:
                wait_http(f"{solo.url}/healthz", timeout=120)
                until(lambda: agreed([solo], {"solo"}, checks), 180, "the daemon to join")
                time.sleep(checks / FIRST_RUN_RATE + 5)  # the first runs (every check due at once) are spread out
                out["one daemon"] = measure([solo], redis_port, seconds, counter)
            finally:
                solo.stop()
        # 2. Three replicas.
        fleet = [Replica(f"r{n}", config, logs) for n in (1, 2, 3)]
        watch = HealthWatch(fleet)
        try:
            for r in fleet:
                wait_http(f"{r.url}/healthz", timeout=120)
            until(lambda: agreed(fleet, {"r1", "r2", "r3"}, checks), 180, "three replicas to agree")
            first_join = min(r.switches()[0][0] for r in fleet)
            agreed_at = max(r.switches()[-1][0] for r in fleet)
            time.sleep(checks / FIRST_RUN_RATE + 5)
            out["three replicas"] = measure(fleet, redis_port, seconds, counter)
            out["three replicas"]["agreed_s"] = agreed_at - first_join
            out["three replicas"]["join_healthz_s"] = watch.longest(first_join, agreed_at + 30)
            # 3. SIGKILL one: how long until the survivors cover every check.
            victim, survivors = fleet[0], fleet[1:]
            killed = time.time()
            victim.stop(signal.SIGKILL)
            until(lambda: agreed(survivors, {"r2", "r3"}, checks), 120, "the survivors to take over")
            out["three replicas"]["handover_s"] = max(r.switched_at("r1,r2,r3", "r2,r3") for r in survivors) - killed
            time.sleep(30)  # the survivors' catch-up runs
            out["three replicas"]["handover_healthz_s"] = watch.longest(killed, killed + 45)
        finally:
            watch.stop()
            print(f"lease losses: { {r.name: r.lease_losses() for r in fleet} }; catch-up runs logged: "
                  f"{ {r.name: r.catch_ups() for r in fleet} }", flush=True)
            for r in fleet:
                r.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window per setup")
    parser.add_argument("--callgrind", action="store_true",
                        help="run the redis-server under callgrind and count its instructions per second: "
                             "deterministic where its CPU time is not (a loaded machine); its CPU then means nothing")
    parser.add_argument("--fleet-only", action="store_true", help="skip the one daemon: the three replicas alone")
    parser.add_argument("--logs", type=Path, help="keep the daemons' logs in this directory")
    args = parser.parse_args()
    require("redis-cli")
    with nginx_target() as url, tempfile.TemporaryDirectory(prefix="im-bench-replicas-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        results = run(url, args.checks, args.seconds, logs, args.callgrind, args.fleet_only)
    report(results, args.checks, args.seconds)


def report(results: dict[str, dict[str, Any]], checks: int, seconds: float) -> None:
    print(f"\n{checks:,} checks at 60 s ({checks / 60:.0f} probes/s due), {seconds:g} s windows\n")
    print("| setup | probes/s, fleet | CPU per daemon (% of a core) | CPU, all daemons | Redis commands/s | "
          "redis-server CPU (% of a core) | handover after SIGKILL |")
    print("|---|---|---|---|---|---|---|")
    for setup, r in results.items():
        handover = f"{r['handover_s']:.1f} s" if "handover_s" in r else "—"
        print(f"| {setup} | {r['probes_per_s']:.0f} | {' / '.join(f'{100 * c:.1f}' for c in r['cpu'])} | "
              f"{100 * sum(r['cpu']):.1f} | {sum(n for n, _ in r['redis_commands_per_s'].values()):.1f} | "
              f"{100 * r['redis_cpu']:.2f} | {handover} |")
    fleet = results["three replicas"]
    print(f"\nthree replicas agreed {fleet['agreed_s']:.1f} s after the first one joined; longest /healthz answer "
          f"(s) from the first join to 30 s after agreeing: {fleet['join_healthz_s']}; in the 45 s from the SIGKILL "
          f"of r1: {fleet['handover_healthz_s']}")
    if "one daemon" not in results:
        return
    solo = results["one daemon"]
    names = sorted(set(solo["redis_commands_per_s"]) | set(fleet["redis_commands_per_s"]),
                   key=lambda c: -fleet["redis_commands_per_s"].get(c, (0, 0))[0])
    print("\nRedis by command: calls/s (µs/s inside the command), one daemon against three replicas\n")
    print("| command | one daemon | three replicas | added by coordination |")
    print("|---|---|---|---|")
    for c in [*names, "total"]:
        if c == "total":
            a, b = (tuple(map(sum, zip(*r["redis_commands_per_s"].values(), strict=True))) for r in (solo, fleet))
        else:
            a, b = solo["redis_commands_per_s"].get(c, (0, 0)), fleet["redis_commands_per_s"].get(c, (0, 0))
        print(f"| {c} | {a[0]:.2f} ({a[1]:.0f}) | {b[0]:.2f} ({b[1]:.0f}) | {b[0] - a[0]:+.2f} ({b[1] - a[1]:+.0f}) |")
    if fleet["redis_instructions_per_s"] is not None:
        a, b = solo["redis_instructions_per_s"], fleet["redis_instructions_per_s"]
        print(f"\nredis-server instructions/s (callgrind): {a / 1e6:.2f} M one daemon, {b / 1e6:.2f} M three replicas, "
              f"{(b - a) / 1e6:+.2f} M added by coordination")
        return
    added = fleet["redis_cpu"] - solo["redis_cpu"]
    print(f"\nredis-server CPU added by coordination: {100 * added:+.2f} % of a core "
          f"({100 * fleet['redis_cpu']:.2f} % against {100 * solo['redis_cpu']:.2f} %; target: < 1 %)")


if __name__ == "__main__":
    main()
