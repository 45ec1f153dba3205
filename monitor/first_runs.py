"""When a check's new job first runs (monitor/scheduler.py adds the jobs; monitor/job_sync.py decides which).

Every check runs soon after start, but the first runs are spread, not fired at once: check *i* of *n*
starts at ``window × (i + U(0,1)) / n`` with ``window = max(2 s, n / 200 per s)``, capped by its own
interval. Small configs all run within 2 s; 10,000 checks start at ~200/s.

In a cluster (monitor/cluster/) a check taken over runs on its timetable (``monitor.cluster.grid``), the same
on every replica, so a check that moves neither runs twice nor skips a run. A check nobody ran yet (a first
start, a check just added) runs soon, spread as above; one whose due run its previous prober may have missed
(it crashed: ``Placement.ran_until``) runs soon too, a catch-up, the catch-ups spread at FIRST_RUN_RATE a
second, each within its interval.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from monitor.cluster.grid import GridTrigger

if TYPE_CHECKING:
    from checks.base import CheckConfigBase
    from monitor.cluster.placement import Placement

log = logging.getLogger("monitor.scheduler")  # (the scheduler's decisions, under the scheduler's name)

FIRST_RUN_WINDOW_MIN = 2.0  # seconds over which the first runs of a small config are spread
FIRST_RUN_RATE = 200.0  # first runs per second for large configs

Wanted = dict[str, tuple[str, "CheckConfigBase"]]  # job id → (integration, check) of the jobs a sync wants


def first_runs(
    new: list[str], wanted: Wanted, now: float, out: dict[str, float], *, placement: Placement | None,
    timing: Callable[[str, CheckConfigBase], tuple[float, float]], a_turn: int,
) -> Iterator[None]:
    """When each new job first runs (epoch seconds, into ``out``): alone, soon, spread; in a cluster as the
    module docstring says. ``timing`` gives a check's (interval, jitter share) as its job is built with.

    Catch-ups spread at FIRST_RUN_RATE, not 1 ms apart: 10,000 catch-ups at once were a burst of probes,
    results and alert work on a loop whose heartbeats then waited: on a loaded machine the fleet lost leases in
    turn and never settled (a takeover still picks a check up within TTL + interval of the crash). A pause (a
    yield) every ``a_turn`` checks taken over, whose timetables are worked out: 8,000 of them held the loop for
    ~0.1 s."""
    if placement is None:
        out.update(spread(new, wanted, now))
        return
    fresh, catch_up = [], []
    taken = 0
    for jid in new:
        since = placement.ran_until(jid)
        if since == float("-inf"):
            fresh.append(jid)  # spread below: no timetable needed (at a first start, every check)
            continue
        taken += 1
        if taken % a_turn == 0:
            yield
        integration, check = wanted[jid]
        grid = GridTrigger(jid, *timing(integration, check))
        if grid.previous(now) >= since:
            catch_up.append(jid)
        else:
            out[jid] = grid.next_after(now)
    out.update(spread(fresh, wanted, now))
    out.update(spread(catch_up, wanted, now, shortest=0.0))
    if catch_up:
        log.info("cluster: %d check(s) taken over with a run due since their previous prober last ran them: "
                 "run within %.1fs", len(catch_up), max(out[jid] for jid in catch_up) - now)


def spread(jobs: list[str], wanted: Wanted, now: float, shortest: float | None = None) -> dict[str, float]:
    """``jobs``' first runs spread over ``max(shortest, len(jobs) / FIRST_RUN_RATE)`` seconds from ``now``, each
    within its interval (``shortest``: FIRST_RUN_WINDOW_MIN unless given)."""
    window = max(FIRST_RUN_WINDOW_MIN if shortest is None else shortest, len(jobs) / FIRST_RUN_RATE)
    return {
        jid: now + min(wanted[jid][1].interval, window) * (n + random.random()) / len(jobs)
        for n, jid in enumerate(jobs)
    }


def soon(interval: float, now: float) -> float:
    """The first run of a job retimed before its first run: within the first-run window (or its interval)."""
    return now + random.uniform(0, min(interval, FIRST_RUN_WINDOW_MIN))
