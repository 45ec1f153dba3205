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
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

_THREAD_TOTAL = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)
_TOTALS_HEADER = re.compile(r"^\s*Totals:\s+(.+?)\s*$", re.MULTILINE)
_THREAD_ROW = re.compile(r"^\s*Th\s+\d+\s+([\d,\s]+?)\s*$", re.MULTILINE)
# Callgrind's cache simulation (``callgrind(..., cache_sim=True)``): first level 32 KiB each for instructions
# and data, and as the last level this machine's per-core second level (1 MiB; valgrind reads the shared
# L3 as the last level by default, which holds any working set here). The events, and callgrind's
# estimate of cycles from them (its documentation's weights: 10 a first-level miss, 100 a last-level one).
CACHE_SIM = ("--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64")
CACHE_EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
# ``callgrind_control`` asks the process through ``vgdb``, valgrind's gdbserver relay (FIFOs and a shared
# memory file in /tmp): vgdb takes a lock on that file, writes the request and waits for the process to read
# it; a process blocked in a system call (a worker waiting for its next step) is made to read it through
# ptrace after 100 ms. callgrind_control prints whatever vgdb answered and exits 0 whatever vgdb did: when vgdb
# could not get an answer (another vgdb speaking with the process: "Cannot acquire lock"; the process not yet
# done with the previous connection; "error reading packet") its reason goes to stderr, and stdout has the
# process's line but no totals (a zero that failed says "OK." all the same). Under load that happened now
# and then ("gave no totals"): such a request is made again, for up to CONTROL_WAIT seconds.
CONTROL_WAIT = 60.0  # seconds a request to one process may keep being retried
CONTROL_PAUSES = (0.1, 0.2, 0.5, 1.0, 2.0)  # seconds between tries (the last one repeated)
T = TypeVar("T")


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
        self._command("--instr=on")  # (a no-op unless started with instrument_from_start=False)
        self._command("--zero")

    def instructions(self) -> int:
        totals = self._read(("-e", "Ir"), lambda text: _THREAD_TOTAL.findall(text) or None)
        return sum(int(t.replace(",", "")) for t in totals)

    def events(self, names: Sequence[str] = CACHE_EVENTS) -> dict[str, int]:
        """The counters of ``names`` (all its threads summed); a cache event needs ``cache_sim``."""

        def parse(text: str) -> dict[str, int] | None:
            header, rows = _TOTALS_HEADER.search(text), _THREAD_ROW.findall(text)
            if header is None or not rows:
                return None
            columns = header.group(1).split()
            values = [[int(v.replace(",", "")) for v in row.split()] for row in rows]
            return {name: sum(row[columns.index(name)] for row in values) for name in names}

        return self._read(("-e", ",".join(names)), parse)

    def _command(self, *args: str) -> None:
        """A request whose only answer is whether vgdb delivered it: on stderr, nothing but its "sending
        command" line."""
        self._read(args, lambda text: True, failed=_vgdb_failed)

    def _read(self, args: Sequence[str], parse: Callable[[str], T | None],
              failed: Callable[[str], bool] = lambda stderr: False) -> T:
        """``parse`` of callgrind_control's answer to ``args``, asked again while it has none (see
        CONTROL_WAIT); a RuntimeError with what callgrind_control and vgdb said if it still has none."""
        started, tries = time.monotonic(), 0
        while True:
            tries += 1
            proc = subprocess.run(["callgrind_control", *args, str(self.pid)], capture_output=True, text=True,
                                  check=True, timeout=120)
            value = None if failed(proc.stderr) else parse(proc.stdout)
            if value is not None:
                return value
            waited = time.monotonic() - started
            pause = CONTROL_PAUSES[min(tries, len(CONTROL_PAUSES)) - 1]
            alive = _alive(self.pid)
            if not alive or waited + pause > CONTROL_WAIT:
                raise RuntimeError(
                    f"callgrind_control {' '.join(args)} gave no answer for pid {self.pid} in {tries} tries over "
                    f"{waited:.1f}s{'' if alive else ' (the process is gone)'}; "
                    f"stdout: {proc.stdout.strip()!r}; stderr: {proc.stderr.strip()!r}")
            time.sleep(pause)


def _vgdb_failed(stderr: str) -> bool:
    """vgdb said more than "sending command …": it could not deliver the request (e.g. "Cannot acquire lock")."""
    return any(line.strip() and not line.startswith("sending command ") for line in stderr.splitlines())


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (not exited, nor a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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
