"""When a check runs, in a cluster: at instants every replica computes alike, so a check can move from
one replica to another without being run twice or skipped.

Run *k* of a check is due at ``k × interval + phase + jitter_k`` (epoch seconds): the phase spreads the
checks over the interval, the jitter (``monitor.jitter``, a share of the interval, centred on zero) keeps
runs from locking into step with a vendor's own cycles, and both are drawn from a hash of the check's id
and *k*, not from a random generator, so every replica knows every check's timetable. The mean period is
exactly the interval. A replica that takes a check over continues its timetable; it only runs one at
once when the previous prober may have missed a due run (it crashed; see ``monitor.cluster.view``).

Alone (no cluster) the scheduler keeps APScheduler's jittered IntervalTrigger (monitor/aps_plugins.py).
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

from apscheduler.triggers.base import BaseTrigger

_MASK = (1 << 64) - 1
MAX_JITTER = 0.9  # share of the interval: beyond it two runs could swap order
ROUNDING = 1e-5  # seconds: more than a datetime's rounding, less than the gap between two runs


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit value from any 64-bit input."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _unit(x: int) -> float:
    """[0, 1) from a 64-bit value."""
    return (x >> 11) / float(1 << 53)


class GridTrigger(BaseTrigger):
    """An APScheduler trigger firing on a check's timetable (see the module docstring)."""

    __slots__ = ("interval", "jitter", "phase", "seed")

    def __init__(self, key: str, interval: float, jitter: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self.interval = float(interval)
        self.jitter = min(max(jitter, 0.0), MAX_JITTER) * self.interval
        self.seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        self.phase = _unit(_mix(self.seed)) * self.interval

    def point(self, k: int) -> float:
        """Epoch seconds of run ``k``."""
        offset = (_unit(_mix(self.seed ^ (k & _MASK))) - 0.5) * self.jitter if self.jitter else 0.0
        return k * self.interval + self.phase + offset

    def next_after(self, t: float) -> float:
        """The first run strictly after ``t``."""
        k = math.floor((t - self.phase) / self.interval) - 1
        while self.point(k) <= t:
            k += 1
        return self.point(k)

    def previous(self, t: float) -> float:
        """The last run at or before ``t``."""
        k = math.floor((t - self.phase) / self.interval) + 1
        while self.point(k) > t:
            k -= 1
        return self.point(k)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is None:
            return datetime.fromtimestamp(self.next_after(now.timestamp() - 1e-6), UTC)
        # A datetime holds microseconds: the previous run, rounded, may sit a hair before its exact instant.
        # Runs are at least a tenth of the interval apart, so anything within ROUNDING of it is that run.
        return datetime.fromtimestamp(self.next_after(previous_fire_time.timestamp() + ROUNDING), UTC)

    def __repr__(self) -> str:
        return f"<GridTrigger interval={self.interval:g}s jitter={self.jitter:g}s phase={self.phase:.3f}s>"
