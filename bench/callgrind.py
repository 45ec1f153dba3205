"""Instruction counts of child processes between two points of a benchmark, from valgrind's callgrind.

On a shared machine (other processes on the same cores, a VM's steal time) CPU time of a step can vary
by half from run to run; the number of instructions it executes does not. A process started with
``callgrind(argv)`` runs some 50 times slower; ``Counted(pid)`` zeroes its counters and reads them
(``callgrind_control``), so a benchmark counts exactly the steps it wants and nothing of the start-up.
Instructions are not time (a cache miss costs more than an add), so they compare like with like: the
same kind of work done more or less often, not different programs. Needs Debian's ``valgrind``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence

_THREAD_TOTAL = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)


def callgrind(argv: Sequence[str]) -> list[str]:
    """``argv`` under callgrind, writing no profile (only the live counters are read)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    return ["valgrind", "-q", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]


class Counted:
    """The instruction counter of one process started with ``callgrind`` (all its threads)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def zero(self) -> None:
        self._control("--zero")

    def instructions(self) -> int:
        totals = _THREAD_TOTAL.findall(self._control("-e", "Ir"))
        if not totals:
            raise RuntimeError(f"callgrind_control gave no totals for pid {self.pid}")
        return sum(int(t.replace(",", "")) for t in totals)

    def _control(self, *args: str) -> str:
        return subprocess.run(
            ["callgrind_control", *args, str(self.pid)], capture_output=True, text=True, check=True, timeout=120
        ).stdout
