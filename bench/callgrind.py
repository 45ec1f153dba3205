"""Instruction counts of child processes between two points of a benchmark, from valgrind's callgrind.

On a shared machine (other processes on the same cores, a VM's steal time) CPU time of a step can vary
by half from run to run; the number of instructions it executes does not. A process started with
``callgrind(argv)`` runs some 50 times slower; ``Counted(pid)`` zeroes its counters and reads them
(``callgrind_control``), so a benchmark counts exactly the steps it wants and nothing of the start-up.
Instructions are not time (a cache miss costs more than an add), so they compare like with like: the
same kind of work done more or less often, not different programs. Needs Debian's ``valgrind``.

A counted benchmark is two processes: a worker under callgrind that announces each step (``step``) and
waits, and this side (``drive``), which zeroes the counters of every counted process, lets the step run
and reads the counters when the worker reports it done.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence

_THREAD_TOTAL = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)
_TOTALS_HEADER = re.compile(r"^\s*Totals:\s+(.+?)\s*$", re.MULTILINE)
_THREAD_ROW = re.compile(r"^\s*Th\s+\d+\s+([\d,\s]+?)\s*$", re.MULTILINE)
# Callgrind's cache simulation (``callgrind(..., cache_sim=True)``): first level 32 KiB each for instructions
# and data, and as the last level this machine's per-core second level (1 MiB; valgrind reads the shared
# L3 as the last level by default, which holds any working set here). The events, and callgrind's
# estimate of cycles from them (its documentation's weights: 10 a first-level miss, 100 a last-level one).
CACHE_SIM = ("--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64")
CACHE_EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")


def estimated_cycles(events: dict[str, int]) -> int:
    first = events["I1mr"] + events["D1mr"] + events["D1mw"]
    last = events["ILmr"] + events["DLmr"] + events["DLmw"]
    return events["Ir"] + 10 * first + 100 * last


def callgrind(argv: Sequence[str], *, instrument_from_start: bool = True, profile: str = "/dev/null",
              cache_sim: bool = False) -> list[str]:
    """``argv`` under callgrind, writing no profile (only the live counters are read) unless ``profile``
    names the file (callgrind's ``--callgrind-out-file``, dumps numbered after it).
    ``instrument_from_start=False``: nothing is counted until ``Counted.zero`` first turns the counting
    on (a worker that builds a big state first builds it some ten times faster). ``cache_sim``: the cache
    misses too (``CACHE_SIM``, read by ``Counted.events``), the process some twice slower again."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    later = [] if instrument_from_start else ["--instr-atstart=no"]
    cache = list(CACHE_SIM) if cache_sim else []
    return ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={profile}", *later, *cache, *argv]


class Counted:
    """The instruction counter of one process started with ``callgrind`` (all its threads)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def zero(self) -> None:
        self._control("--instr=on")  # (a no-op unless started with instrument_from_start=False)
        self._control("--zero")

    def instructions(self) -> int:
        totals = _THREAD_TOTAL.findall(self._control("-e", "Ir"))
        if not totals:
            raise RuntimeError(f"callgrind_control gave no totals for pid {self.pid}")
        return sum(int(t.replace(",", "")) for t in totals)

    def events(self, names: Sequence[str] = CACHE_EVENTS) -> dict[str, int]:
        """The counters of ``names`` (all its threads summed); a cache event needs ``cache_sim``."""
        text = self._control("-e", ",".join(names))
        header, rows = _TOTALS_HEADER.search(text), _THREAD_ROW.findall(text)
        if header is None or not rows:
            raise RuntimeError(f"callgrind_control gave no totals for pid {self.pid}")
        columns = header.group(1).split()
        values = [[int(v.replace(",", "")) for v in row.split()] for row in rows]
        return {name: sum(row[columns.index(name)] for row in values) for name in names}

    def _control(self, *args: str) -> str:
        return subprocess.run(
            ["callgrind_control", *args, str(self.pid)], capture_output=True, text=True, check=True, timeout=120
        ).stdout


def step(name: str) -> None:
    """Worker side: announce a step and wait until the counters are zeroed."""
    print(f"ready\t{name}", flush=True)
    sys.stdin.readline()


def step_done(note: object = "") -> None:
    """Worker side: the step is over; ``note`` (a round trip count, say) goes back with the counts."""
    print(f"done\t{note}", flush=True)


def steps_over() -> None:
    print("end", flush=True)


def drive(argv: Sequence[str], others: Sequence[Counted] = (), *,
          instrument_from_start: bool = True) -> dict[str, list[tuple[list[int], str]]]:
    """Run the worker ``argv`` under callgrind; per step name, for each time it ran: the instructions of
    the worker and of each of ``others`` during the step, and the worker's note."""
    child = subprocess.Popen(callgrind(argv, instrument_from_start=instrument_from_start), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    counted = [Counted(child.pid), *others]
    results: dict[str, list[tuple[list[int], str]]] = {}
    assert child.stdin is not None and child.stdout is not None
    try:
        for line in child.stdout:
            if line.startswith("end"):
                break
            _, name = line.rstrip("\n").split("\t", 1)
            for process in counted:
                process.zero()
            child.stdin.write("go\n")
            child.stdin.flush()
            reply = child.stdout.readline()
            if not reply.startswith("done\t"):
                break  # the worker failed (its traceback is on stderr)
            note = reply.rstrip("\n").split("\t", 1)[1]
            results.setdefault(name, []).append(([p.instructions() for p in counted], note))
    finally:
        child.wait(timeout=600)
    if child.returncode != 0:
        raise SystemExit(f"the counted worker failed ({child.returncode})")
    return results


def drive_trees(argv: Sequence[str], before: str | None, *, floor: Sequence[str] = (),
                instrument_from_start: bool = True) -> list[tuple[str, dict[str, list[tuple[list[int], str]]]]]:
    """``drive`` of this tree's worker (``floor`` added to its argv: the peer's steps run once, there)
    and, with ``before``, of another checkout's (``PYTHONPATH=before``): (label suffix, its counts) each."""
    runs = []
    for suffix, tree in [("", None)] + ([(" (before)", before)] if before else []):
        saved = dict(os.environ)
        if tree is not None:
            os.environ["PYTHONPATH"] = tree
        try:
            runs.append((suffix, drive([*argv, *(floor if tree is None else ())],
                                       instrument_from_start=instrument_from_start)))
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return runs


def print_layers(counts: dict[str, list[tuple[list[int], str]]], *, per: str, base: str, note: str) -> None:
    """The table of a benchmark counted layer by layer (``drive``'s answer, each step's note the number
    of ``per`` it did): the worker's instructions per ``per``, median (min–max) of the step's rounds, what
    each layer adds to ``base`` and its ratio to it."""
    per_item = {name: sorted(c[0] / int(n) for c, n in samples) for name, samples in counts.items()}
    floor = statistics.median(per_item[base])
    print(f"instructions per {per} (callgrind, this process only), {note}\n")
    print(f"| layer | k instructions per {per} (min–max) | added to {base} (k) | × {base} |")
    print("|---|---|---|---|")
    for name, values in per_item.items():
        med = statistics.median(values)
        spread = f"{values[0] / 1e3:.1f}–{values[-1] / 1e3:.1f}"
        print(f"| {name} | {med / 1e3:.1f} ({spread}) | {(med - floor) / 1e3:+.1f} | {med / floor:.2f} |")
