"""Who is in the cluster at a given moment, from the member records read from Redis. Pure.

A member record says when the replica joined, from when it takes its share (``active_at``), when it
hands its share back (``leaving_at``, set on a graceful shutdown) and when its lease runs out
(``expires_at``: the last heartbeat plus the TTL). Joins and graceful leaves are announced ahead of time
(by one heartbeat and a half), so every replica, having read the record at its own heartbeat, switches at
the same instant: no check is run twice or skipped because two replicas learnt of the change at
different times. Only a crash (a lease running out) is noticed late, by up to the TTL.

All times here are epoch seconds on the *local* clock (Redis' clock converted with the measured offset).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    id: str
    incarnation: str  # random per process: two live processes claiming one id are told apart
    joined_at: float
    active_at: float
    expires_at: float
    leaving_at: float | None = None
    address: str = ""  # where its HTTP server listens (shown in /api/status)
    version: str = ""
    fleet: str = ""  # fingerprint of what decides placement: only members of one fleet share work

    def active(self, at: float) -> bool:
        return self.active_at <= at < self.expires_at and (self.leaving_at is None or at < self.leaving_at)


def active_ids(members: Iterable[Member], at: float, fleet: str | None = None) -> tuple[str, ...]:
    """Ids of the members (of ``fleet``, if given) that hold a share at ``at``, sorted."""
    return tuple(sorted(m.id for m in members if m.active(at) and (fleet is None or m.fleet == fleet)))


def next_change(members: Iterable[Member], after: float) -> float | None:
    """The next moment after ``after`` at which ``active_ids`` may change (an activation, a graceful
    leave or a lease running out), or None."""
    times = [t for m in members for t in (m.active_at, m.leaving_at, m.expires_at) if t is not None and t > after]
    return min(times, default=None)


def ran_until(previous: Member | None, *, switch: float, ttl: float, margin: float) -> float:
    """Up to when the previous prober of a check that moves to this replica at ``switch`` ran it: runs
    due from then on were done by nobody (the new prober catches up on the missed one at once).

    Announced changes (a join, a graceful leave) switch every replica at the same instant, so the previous
    prober ran everything due before the switch. A crashed one ran everything due until its last heartbeat
    (lease end minus TTL) and maybe no more — less ``margin``, for a run that was due but had not reached
    the vendor when the process died (a catch-up run then comes once too many rather than once too few).
    No previous prober at all (first start, a check just added): minus infinity, the check is due now.
    """
    if previous is None:
        return float("-inf")
    if previous.leaving_at is not None and previous.leaving_at <= switch:
        return previous.leaving_at
    if previous.expires_at <= switch:
        return previous.expires_at - ttl - margin
    return switch
