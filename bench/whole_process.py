"""The whole process at saturation, in instructions per probe (callgrind): the daemon as bench/probe_cpu.py
runs it, side by side with the bare uvloop loop and APScheduler running the bare request, in one run.

bench/scheduler_path.py counts a scheduled probe's own path; this counts everything the process does while
it probes (its scheduler's wake-ups, the metrics and status, the alert engine, timers, the allocator and
the cycle collector), so the deterministic figure is the one bench/probe_cpu.py reads in CPU time.

Each contender runs under callgrind (instrumentation off until the first counted window) against one
nginx, 32 probes in flight, a fresh connection per probe. Probes are counted by nginx (its stub_status,
read just before the counters are zeroed and just after they are read), so nothing is asked of the
counted process; a window ends after ``--probes`` probes. Under callgrind a process runs some 50 times
slower, so the daemon's clock is slowed by ``--dilation`` D to match: check intervals D s (2,000 checks
due each second natively), the alert evaluation every 15 D s, APScheduler's wake-up slack 20 D ms; time-
driven work then comes as often per probe as it does natively (what is not slowed: nginx's and the
kernel's answers, which come sooner per instruction than natively, for every contender alike).

Contenders (``--contenders``):
  bare_uvloop     bench/bare_aiohttp.py --uvloop: 32 workers each requesting in turn (the ceiling)
  apscheduler     bench/bare_aiohttp.py --scheduled 2000: the same request as 2,000 APScheduler jobs
  daemon          integration-monitor run, probe_cpu.py's config (2,000 checks, 32 in flight), as it ships
  daemon_no_engine  the same without the alert engine
  daemon_gc_off   the same with the cycle collector disabled once started (no young collections)
  daemon_before   the daemon of another checkout (``--before TREE``), to judge a change
The daemons count ``--windows`` windows in turn from their start-up on: the first ones while their
first runs build each check's state (probe_cpu.py's 8 s window starts 3 s after the daemon answers, before
its keeper freezes that state), the last ones once settled (frozen); each window's figure is printed.
``--profile DIR``: each window's profile too (callgrind_annotate, inclusive, by C function).
``--cache-sim``: callgrind's cache simulation too (bench/callgrind.py's CACHE_SIM: this machine's first and
second levels): first- and last-level misses a probe and callgrind's estimate of cycles a probe, what the
working set costs beside the instructions (the process runs some twice slower again: raise --dilation).
Usage: python bench/whole_process.py [--probes 1500] [--dilation 100] [--windows 2] [--json] [--profile DIR]
       [--before TREE] [--cache-sim] [--contenders ...]
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
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
from callgrind import Counted, callgrind, estimated_cycles
from common import free_port, nginx_target, wait_http
from probe_cpu import SATURATION_CHECKS, SATURATION_CONCURRENCY, daemon_config

HERE = Path(__file__).resolve().parent
CONTENDERS = ("bare_uvloop", "apscheduler", "daemon", "daemon_no_engine", "daemon_gc_off", "daemon_before")
DAEMONS = CONTENDERS[2:]
EVALUATION_INTERVAL = 15.0  # the daemon's default (monitor.evaluation_interval)
TIMEOUT = 60.0  # of the checks: no probe may time out under callgrind; a probe's deadline costs the same
FROZEN = "whole_process: frozen"  # the daemon's stderr, each time its keeper freezes (the child patches it)
SKIPPED = "whole_process: skipped "  # and the number of runs skipped so far, at SIGUSR1
SKIPPED_AT_MOST = 0.01  # runs skipped a probe in a window that is judged as keeping up
REQUESTS_RE = re.compile(rb"\s(\d+) (\d+) (\d+)\s")


def served(status_url: str) -> int:
    """Requests nginx has answered so far (its own stub_status requests included)."""
    with urllib.request.urlopen(status_url, timeout=30) as resp:
        match = REQUESTS_RE.search(resp.read())
    assert match is not None, "nginx stub_status gave no counters"
    return int(match.group(3))


def skipped_so_far(proc: subprocess.Popen[bytes], watch: StderrWatch) -> int:
    watch.skipped = None
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while watch.skipped is None:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the contender did not tell its skipped runs:\n" + "\n".join(watch.tail))
        time.sleep(0.05)
    return watch.skipped


class Window:
    """One counted window: instructions of the process and the probes nginx saw meanwhile."""

    def __init__(self, counted: Counted, status_url: str, cache_sim: bool) -> None:
        self.counted, self.status_url, self.cache_sim = counted, status_url, cache_sim

    def run(self, probes: int) -> tuple[dict[str, int], float, float, float]:
        """(counters: instructions ``Ir``, and the cache events with ``cache_sim``; probes, ± uncertainty,
        seconds) over a window of at least ``probes`` probes."""
        t0 = time.monotonic()
        before = served(self.status_url)
        self.counted.zero()
        zeroed = served(self.status_url)
        reads = 1  # stub_status requests counted by nginx since ``before`` (the one just read included)
        last = zeroed
        while last - zeroed - reads < probes:
            time.sleep(0.5)
            last = served(self.status_url)
            reads += 1
        events = self.counted.events() if self.cache_sim else {"Ir": self.counted.instructions()}
        after = served(self.status_url)
        reads_after = reads + 1
        # The probes of the window lie between (last - zeroed) and (after - before), less the status reads.
        low, high = last - zeroed - (reads - 1), after - before - reads_after
        return events, (low + high) / 2, (high - low) / 2, time.monotonic() - t0


@contextmanager
def contender(name: str, url: str, dilation: float, json_check: bool, tmp: Path,
              profile: str | None, before: str | None, cache_sim: bool) -> Iterator[subprocess.Popen[bytes]]:
    """The contender's process under callgrind, instrumentation off until the first window."""
    if name in DAEMONS:
        port = free_port()
        cfg = tmp / f"{name}.yaml"
        text = daemon_config(url, checks=SATURATION_CHECKS, interval=dilation, json_check=json_check,
                             concurrency=SATURATION_CONCURRENCY, port=port)
        text = text.replace("timeout: 5s", f"timeout: {TIMEOUT:g}s").replace(
            "monitor:\n", f"monitor:\n  evaluation_interval: {EVALUATION_INTERVAL * dilation:g}s\n", 1)
        cfg.write_text(text)
        argv = [sys.executable, __file__, "--as-daemon", name, "--dilation", str(dilation), "run", "-c", str(cfg)]
    else:
        argv = [sys.executable, __file__, "--as-bare", "--dilation", str(dilation), url, "--uvloop",
                "--seconds", "100000", "--concurrency", str(SATURATION_CONCURRENCY)]
        argv += ["--json"] if json_check else []
        if name == "apscheduler":
            argv += ["--scheduled", str(SATURATION_CHECKS), "--interval", str(dilation), "--warmup", "0"]
    out_file = str(Path(profile).resolve() / f"{name}.callgrind") if profile else "/dev/null"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if name == "daemon_before":
        if before is None:
            raise SystemExit("daemon_before needs --before TREE")
        env["PYTHONPATH"] = str(Path(before).resolve())  # its packages before this checkout's
    proc = subprocess.Popen(callgrind(argv, instrument_from_start=False, profile=out_file, cache_sim=cache_sim),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(60)


class StderrWatch:
    """The contender's stderr, read in a thread: counts freezes, keeps the last lines for errors."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.freezes = 0
        self.skipped: int | None = None
        self.tail: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith(FROZEN):
                self.freezes += 1
            elif line.startswith(SKIPPED):
                self.skipped = int(line[len(SKIPPED):])
            else:
                self.tail = [*self.tail[-20:], line]


def wait_for(condition: str, check: object, proc: subprocess.Popen[bytes], watch: StderrWatch,
             timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if proc.poll() is not None:
            raise SystemExit(f"the contender exited ({proc.returncode}) waiting for {condition}:\n"
                             + "\n".join(watch.tail))
        if time.monotonic() > deadline:
            raise SystemExit(f"no {condition} within {timeout:.0f} s:\n" + "\n".join(watch.tail))
        time.sleep(1)


def measure(name: str, url: str, status_url: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, float]]:
    """The contender's windows: instructions per probe, probes, uncertainty, freezes before the window."""
    out = []
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    with contender(name, url, args.dilation, args.json, tmp, args.profile, args.before, args.cache_sim) as proc:
        watch = StderrWatch(proc)
        start = served(status_url)
        wait_for("probes", lambda: served(status_url) > start + 2 * SATURATION_CONCURRENCY, proc, watch, 900)
        counted = Counted(proc.pid)
        windows = args.windows if name in DAEMONS else 1
        for n in range(windows):
            if name in DAEMONS and n == windows - 1:
                wait_for("freeze of the settled state", lambda: watch.freezes >= 2, proc, watch, 1800)
            skipped0 = skipped_so_far(proc, watch)
            events, probes, spread, seconds = Window(counted, status_url, args.cache_sim).run(args.probes)
            instructions = events["Ir"]
            skipped = skipped_so_far(proc, watch) - skipped0
            if args.profile:  # the window's profile, numbered after the file (.1, .2, …)
                subprocess.run(["callgrind_control", f"--dump={name} window {n}", str(proc.pid)],
                               capture_output=True, check=True, timeout=300)
            out.append({"per_probe": instructions / probes, "probes": probes, "spread": spread,
                        "rate": probes / seconds, "skipped": skipped / probes, "frozen": float(watch.freezes)})
            if args.cache_sim:
                out[-1].update({
                    "cycles": estimated_cycles(events) / probes,
                    "first_misses": (events["I1mr"] + events["D1mr"] + events["D1mw"]) / probes,
                    "last_misses": (events["ILmr"] + events["DLmr"] + events["DLmw"]) / probes,
                })
            print(f"  {name} window {n}: {instructions / probes / 1e3:.1f} k instructions a probe "
                  f"({probes:.0f} ± {spread:.0f} probes, {probes / seconds:.0f}/s, {skipped / probes:.2f} runs skipped "
                  f"a probe; freezes so far {watch.freezes})", flush=True)
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited ({proc.returncode}):\n" + "\n".join(watch.tail))
    return out


def count_skips(scheduler_class: type[Any]) -> None:
    """In the child: runs APScheduler skipped (their previous run still going, or past their grace), told on
    stderr at SIGUSR1. Counted where the daemon already listens (``Scheduler._on_skipped``) or, in a bare
    APScheduler, by one more listener (a mask test per event)."""
    skipped = [0]
    signal.signal(signal.SIGUSR1, lambda *_: print(f"{SKIPPED}{skipped[0]}", file=sys.stderr, flush=True))
    original = getattr(scheduler_class, "_on_skipped", None)

    def on_skipped(self: Any, event: Any) -> None:
        skipped[0] += 1
        if original is not None:
            original(self, event)

    if original is not None:
        scheduler_class._on_skipped = on_skipped
        return
    start = scheduler_class.start

    def started(self: Any, *args: Any, **kwargs: Any) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

        self.add_listener(lambda event: on_skipped(self, event), EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        start(self, *args, **kwargs)

    scheduler_class.start = started


def as_daemon(variant: str, dilation: float, argv: list[str]) -> None:
    """In the child: the daemon with its clock slowed by ``dilation`` and the variant's change."""
    import gc
    import logging

    from monitor import batching_scheduler, long_lived, scheduler, wiring
    from monitor.cli import main

    count_skips(scheduler.Scheduler)
    batching_scheduler.WAKEUP_SLACK *= dilation
    # First runs spread over the whole (dilated) interval, as natively: 2,000 checks at 1 s spread over 1 s.
    try:
        from monitor import first_runs  # (the scheduler's own module's constants in an older tree, --before)
    except ImportError:
        first_runs = scheduler  # type: ignore[assignment]
    first_runs.FIRST_RUN_WINDOW_MIN *= dilation
    first_runs.FIRST_RUN_RATE /= dilation
    long_lived.POLL_SECONDS *= dilation
    freeze = long_lived.freeze

    def announced_freeze() -> None:
        freeze()
        print(FROZEN, file=sys.stderr, flush=True)

    long_lived.freeze = announced_freeze  # App.run's, at start
    assert long_lived.keep_frozen.__kwdefaults__ is not None
    long_lived.keep_frozen.__kwdefaults__["freeze_now"] = announced_freeze  # the keeper's, once settled
    if variant == "daemon_no_engine":
        wiring.DEFAULT_COMPONENTS = tuple(f for f in wiring.DEFAULT_COMPONENTS if f is not wiring.alerts)
    if variant == "daemon_gc_off":
        long_lived.tune_young_collections = gc.disable
    logging.getLogger("monitor.long_lived").setLevel(logging.WARNING)
    sys.exit(main(argv))


def as_bare(dilation: float, argv: list[str]) -> None:
    from monitor import batching_scheduler

    count_skips(batching_scheduler.BatchingScheduler)
    batching_scheduler.WAKEUP_SLACK *= dilation
    sys.argv = [str(HERE / "bare_aiohttp.py"), *argv]
    runpy.run_path(str(HERE / "bare_aiohttp.py"), run_name="__main__")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS[:3]))
    parser.add_argument("--probes", type=int, default=1500, help="probes a window counts at least")
    parser.add_argument("--windows", type=int, default=2, help="of each daemon, the last one once settled")
    parser.add_argument("--dilation", type=float, default=100.0, help="the daemon's clock slowed this many times")
    parser.add_argument("--json", action="store_true", help="the JSON-assertion variant of the checks")
    parser.add_argument("--profile", metavar="DIR", help="write each window's callgrind profile there")
    parser.add_argument("--before", metavar="TREE", help="another checkout, the daemon_before contender")
    parser.add_argument("--cache-sim", action="store_true",
                        help="callgrind's cache simulation too: misses and estimated cycles a probe")
    parser.add_argument("--as-daemon", help=argparse.SUPPRESS)
    parser.add_argument("--as-bare", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.as_daemon:
        as_daemon(args.as_daemon, args.dilation, rest)
        return
    if args.as_bare:
        as_bare(args.dilation, rest)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the contender and nginx stopped on the way out
    started = time.monotonic()
    results: dict[str, list[dict[str, float]]] = {}
    with nginx_target() as url, tempfile.TemporaryDirectory() as tmp:
        status_url = url.rsplit("/", 1)[0] + "/nginx_status"
        wait_http(status_url)
        for name in args.contenders:
            results[name] = measure(name, url, status_url, args, Path(tmp))
    print()
    print(f"instructions per probe, the whole process (callgrind), {'JSON' if args.json else 'GET'}, "
          f"{SATURATION_CONCURRENCY} in flight, windows of {args.probes} probes, clock dilation "
          f"{args.dilation:g} ({time.monotonic() - started:.0f} s)\n")
    bare = results.get("bare_uvloop", [{"per_probe": float("nan"), "cycles": float("nan")}])[-1]
    base = bare["per_probe"]
    cache = (" first-level misses a probe | last-level misses a probe | k cycles a probe (callgrind's estimate) "
             "| × bare uvloop |" if args.cache_sim else "")
    print("| contender | window | k instructions a probe | × bare uvloop | runs skipped a probe |" + cache)
    print("|---|---|---|---|---|" + "---|---|---|---|" * args.cache_sim)
    behind = False
    for name, windows in results.items():
        for n, w in enumerate(windows):
            label = ("settled" if n == len(windows) - 1 else f"start-up {n + 1}") if name in DAEMONS else "steady"
            cache = (f" {w['first_misses']:,.0f} | {w['last_misses']:,.0f} | {w['cycles'] / 1e3:.1f} "
                     f"| {w['cycles'] / bare['cycles']:.2f} |" if args.cache_sim else "")
            print(f"| {name} | {label} | {w['per_probe'] / 1e3:.1f} | {w['per_probe'] / base:.2f} "
                  f"| {w['skipped']:.2f} |" + cache)
            behind = behind or w["skipped"] > SKIPPED_AT_MOST
    if behind:  # a skipped run costs ~1/8 of a probe (bench/README.md): such windows do not compare
        print(f"\nruns were skipped (more than {SKIPPED_AT_MOST} a probe): that contender did not keep up with "
              "its schedule under callgrind on this machine now; raise --dilation to compare like with like")


if __name__ == "__main__":
    main()
