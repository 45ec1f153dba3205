"""Making the scheduler's jobs match the config and this replica's share, a slice at a time.

A sync drops the jobs of checks no longer wanted (removed, disabled, or gone to another replica), adds the
new ones (their first runs from monitor/first_runs.py) and retimes the changed ones. At start and at a change
of share it runs as a task, a slice of jobs at a time, the loop turning in between: a takeover of thousands
of checks, or a 50,000-check start, held the loop, and the replica's heartbeats, for seconds (whose lease
then ran out, and the others took its checks over). A sync begun meanwhile supersedes it: the one under way
stops at the end of its slice.

``JobSync`` is the part of ``monitor.scheduler.Scheduler`` that does this (a base class: the sync reads and
writes the scheduler's jobs throughout); the scheduler runs the jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apscheduler.schedulers.base import STATE_RUNNING

from checks.base import CheckConfigBase, ProbeContext
from monitor import first_runs

if TYPE_CHECKING:
    import aiohttp

    from integration_kit.deadlines import Deadlines
    from integration_kit.redact import Redactor
    from integration_kit.token_cache import TokenCache
    from monitor.batching_scheduler import BatchingScheduler
    from monitor.cluster.placement import Placement
    from monitor.metrics import Metrics
    from monitor.settings import Config

log = logging.getLogger("monitor.scheduler")  # (the scheduler's work, under the scheduler's name)

JOBS_A_TURN = 500  # jobs a sync adds or removes between two turns of the loop (~25 ms of adding)
CHECKS_A_TURN = 5_000  # checks a sync looks up in the config and the share between two turns (~10 ms)


@dataclass(slots=True)
class Job:
    """What the scheduler keeps of one check's APScheduler job."""

    integration: str
    check: CheckConfigBase
    ctx: ProbeContext
    timing: tuple[float, float]  # (effective interval, jitter share) the APScheduler job was built with
    scheduled: float | None = None  # epoch seconds of the pending run's scheduled time
    last_started: float | None = None


def job_id(integration: str, check: str) -> str:
    return f"{integration}/{check}"


class JobSync:
    # The scheduler's (monitor/scheduler.py sets them in its __init__).
    config: Config
    placement: Placement | None
    metrics: Metrics
    redactor: Redactor
    session: aiohttp.ClientSession | None
    tokens: TokenCache | None
    deadlines: Deadlines
    on_removed: Callable[[str, str], None] | None
    _aps: BatchingScheduler
    _jobs: dict[str, Job]
    _syncs: int  # syncs of the jobs begun (_sync_steps); a paused one stops when it is no longer the last
    _syncing: asyncio.Task[None] | None  # the sync in slices under way (prepare, reshard)

    if TYPE_CHECKING:  # the scheduler's too: how a check's job is timed, added, retimed; its back-offs

        def _timing(self, integration: str, check: CheckConfigBase) -> tuple[float, float]: ...

        def _add_job(self, jid: str, job: Job, first: float) -> None: ...

        def _retime(self, jid: str, job: Job) -> None: ...

        def _forget_backoffs(self, config: Config) -> None: ...

    def _sync_jobs(self, config: Config) -> None:
        for _ in self._sync_steps(config):
            pass

    def _resync(self) -> None:
        """Start making the jobs match the config and share, a slice at a time. A sync still under way stops
        at the end of its slice: the share it was adding for is no longer the last (this one's is)."""
        self._syncs += 1  # (before the old one's next slice, which may come before this one's first)
        self._syncing = asyncio.get_running_loop().create_task(self._sync_in_slices())

    async def _sync_in_slices(self) -> None:
        # The config as the task begins, not as it was asked for: a reload asks (the cluster's listener) before it
        # applies the new config at once (``apply``); begun with the old one, the task, the last sync, dropped a
        # check the reload had just turned on (never to run again), or added back one it had turned off.
        steps = self._sync_steps(self.config)
        try:
            while True:
                running = self._aps.state == STATE_RUNNING  # (prepare's paused scheduler stays paused)
                if running:
                    self._aps.pause()  # no wake-up per job added; one on resume, at the slice's end
                try:
                    if next(steps, False) is False:  # (a slice yields None; the last one ends the steps)
                        return
                finally:
                    if running:
                        self._aps.resume()
                await asyncio.sleep(0)
        except Exception:
            log.exception("scheduler: making the jobs match the share of checks failed")

    def _sync_steps(self, config: Config) -> Iterator[None]:
        """Make the jobs match ``config`` (and this replica's share), pausing (a yield) every CHECKS_A_TURN checks
        looked up and every JOBS_A_TURN jobs removed, timed or added. Paused, it stops there if another sync
        began meanwhile: that one makes the jobs match."""
        self._syncs += 1
        this_sync = self._syncs
        placement = self.placement
        configured: dict[str, tuple[str, CheckConfigBase]] = {}
        wanted = configured if placement is None else {}
        for looked_up, (integration, check) in enumerate(config.iter_checks(), 1):
            if check.enabled:
                jid = job_id(integration, check.name)
                configured[jid] = (integration, check)
                if placement is not None and placement.probes(jid):
                    wanted[jid] = (integration, check)
            if looked_up % CHECKS_A_TURN == 0:
                yield
                if self._syncs != this_sync:
                    return
        for removed, jid in enumerate([j for j in self._jobs if j not in wanted], 1):
            job = self._jobs.pop(jid)
            if self._aps.get_job(jid) is not None:
                self._aps.remove_job(jid)
            # A check that moved to another replica still exists: only a removed one loses its series.
            if self.on_removed is not None and jid not in configured:
                self.on_removed(job.integration, job.check.name)
            if removed % JOBS_A_TURN == 0:
                yield
                if self._syncs != this_sync:
                    return
        self._forget_backoffs(config)

        new = [jid for jid in wanted if jid not in self._jobs]
        now = time.time()
        firsts: dict[str, float] = {}
        for _ in first_runs.first_runs(new, wanted, now, firsts, placement=placement, timing=self._timing,
                                       a_turn=JOBS_A_TURN):
            yield
            if self._syncs != this_sync:
                return
        contexts: dict[str, ProbeContext] = {}  # one per integration: it is all a context says (144 B a check)
        for added, jid in enumerate(new, 1):
            integration, check = wanted[jid]
            ctx = contexts.get(integration)
            if ctx is None:
                ctx = contexts[integration] = ProbeContext(
                    integration=integration, redactor=self.redactor, session=self.session, tokens=self.tokens,
                    deadlines=self.deadlines,
                )
            self._add_job(jid, Job(integration=integration, check=check, ctx=ctx,
                                   timing=self._timing(integration, check)), firsts[jid])
            if added % JOBS_A_TURN == 0:
                yield
                if self._syncs != this_sync:
                    return

        for jid, (integration, check) in wanted.items():
            job = self._jobs[jid]
            if job.check is check:
                continue
            job.check = check  # headers, expectations… apply from the next run
            if self._timing(integration, check) != job.timing:
                self._retime(jid, job)
