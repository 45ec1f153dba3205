"""Runs every enabled check on its interval (APScheduler 3 AsyncIOScheduler), one job per check.

Timing rules, and why:

* **Jitter.** ``monitor.jitter`` is a share of the interval. APScheduler adds ``uniform(0, jitter)`` to
  each fire time *measured from the previous (jittered) one*, so the trigger's base interval is
  ``interval × (1 − jitter/2)``: every gap is uniform in ``interval × [1 − j/2, 1 + j/2]`` and the mean
  period is exactly the configured interval. The random walk also de-phases checks over time. (The trigger
  is APScheduler's IntervalTrigger drawing once per run: monitor/aps_plugins.py.)
* **First runs.** Every check runs soon after start, but the first runs are spread, not fired at once
  (monitor/first_runs.py): 10,000 checks start at ~200/s.
* ``max_instances=1`` and ``coalesce=True``: a check never overlaps itself; runs missed while the
  previous one was still going collapse into one. ``misfire_grace_time`` is the check's interval: a run
  late by less than an interval still happens, later than that it is skipped (the next one is due).
* **Concurrency.** ``monitor.max_concurrency`` slots for all probes, first come first served
  (monitor/slots.py: ``asyncio.Semaphore``'s behaviour, cheaper to take).
* **Lag.** ``integration_monitor_scheduler_lag_seconds`` observes, per run, the time from the scheduled
  (jittered) fire time, taken from APScheduler's job-submitted event, to the moment the probe actually
  starts — after the concurrency slot is acquired, so a saturated limit shows up as lag.
* **Backoff hook.** ``set_interval_factor(integration, factor, reason)`` multiplies the intervals of an
  integration's checks (a quota reader slows probes when the quota is nearly used up). It shows in
  ``status()`` (→ /api/status) and in ``integration_probe_quota_backoff``.
* **In a cluster** (``placement``, monitor/cluster/): only the checks of this replica's share get a job,
  ``reshard()`` follows the share when it changes, and runs follow each check's timetable
  (``monitor.cluster.grid``), the same on every replica, so a check that moves neither runs twice nor
  skips a run; a check taken over from a replica that may have missed a due run runs soon (a catch-up,
  monitor/first_runs.py). A change of share is applied a slice of jobs at a time (a task, the loop turning
  in between: monitor/job_sync.py). No run starts while
  ``placement.may_run()`` is False (this replica may have lost its share while paused), nor for a check
  that left the share (its job may still wait for its slice to be removed). The back-off gauge is then the
  integration owner's to export.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.base import STATE_RUNNING

from checks import run_probe as default_run_probe
from checks.base import CheckConfigBase, ProbeContext, internal_failure, kind_of, retargets
from integration_kit.deadlines import Deadlines, DeadlineScope
from integration_kit.errors import ErrorClass
from integration_kit.results import CheckResult
from integration_kit.tasks import stop_all
from monitor import first_runs
from monitor.aps_plugins import JitteredInterval
from monitor.batching_scheduler import BatchingScheduler
from monitor.cluster.grid import GridTrigger
from monitor.job_sync import Job, JobSync, job_id
from monitor.metrics import remove_series
from monitor.slots import Slots

if TYPE_CHECKING:
    import aiohttp
    from apscheduler.triggers.base import BaseTrigger

    from integration_kit.redact import Redactor
    from integration_kit.token_cache import TokenCache
    from monitor.cluster.placement import Placement
    from monitor.metrics import Metrics
    from monitor.settings import Config

log = logging.getLogger(__name__)

ProbeRunner = Callable[[CheckConfigBase, ProbeContext], Awaitable[CheckResult]]

# A probe enforces its own deadline; this is the safety net for a probe that does not.
DEADLINE_OVERRUN = 5.0
MAX_RAISED_REMEMBERED = 10_000  # probe exceptions whose traceback was logged; past it, each is logged in full
# APScheduler logs a WARNING for every run it skips (the check's previous run still waiting for a
# concurrency slot, or a run that started later than its grace time). Overloaded, that is thousands
# of lines a second and a tenth of the CPU, right when CPU is short: below DEBUG these loggers are
# quietened, the skips are counted from APScheduler's events and summarised once a minute.
_PER_RUN_LOGGERS = ("apscheduler.scheduler", "apscheduler.executors.default")
SKIPPED_SUMMARY_EVERY = 60.0  # seconds


@dataclass(slots=True, frozen=True)
class Backoff:
    factor: float
    reason: str
    since: float


class Scheduler(JobSync):
    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics,
        redactor: Redactor,
        record: Callable[[CheckResult], None],
        run_probe: ProbeRunner = default_run_probe,
        on_removed: Callable[[str, str], None] | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.config = config
        # None or a daemon on its own: every check, APScheduler's jittered intervals (as before clusters).
        self.placement = placement if placement is not None and placement.clustered else None
        self.metrics = metrics
        self.redactor = redactor
        self.record = record
        self.run_probe = run_probe
        self.on_removed = on_removed
        self.session: aiohttp.ClientSession | None = None  # handed to probes; set by the app before start
        self.tokens: TokenCache | None = None  # OAuth2 tokens shared by the probes; set by the app before start
        self.deadlines = Deadlines()  # of every probe's attempts in flight: one timer for them all
        self._aps = BatchingScheduler(timezone=UTC)
        self._aps.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        self._aps.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._skipped = {EVENT_JOB_MAX_INSTANCES: 0, EVENT_JOB_MISSED: 0}
        self._skipped_since = time.monotonic()
        self._jobs: dict[str, Job] = {}
        self._backoff: dict[str, Backoff] = {}
        self._raised: set[tuple[str, str, str]] = set()  # (integration, check, exception type) logged in full
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._slots_limit = config.monitor.max_concurrency
        self._slots = Slots(self._slots_limit)
        self._stopping = False
        self._lag = metrics.scheduler_lag
        self._syncs = 0  # (monitor/job_sync.py)
        self._syncing: asyncio.Task[None] | None = None
        # Epoch seconds by which every job added so far has started its first run and passed its deadline:
        # the state those runs build is long-lived from then on (monitor/long_lived.py freezes it).
        self.settled_at = float("-inf")

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._aps.running and not self._stopping

    def start(self) -> None:
        """Add the jobs (those ``prepare`` has not), then start APScheduler once (one pass over all jobs, not one
        per job)."""
        self._sync_jobs(self.config)
        _quiet_per_run_loggers()
        if self._aps.running:
            self._aps.resume()  # started paused by prepare
        else:
            self._aps.start()
        log.info("scheduler started: %d check(s), max %d probe(s) in flight",
                 len(self._jobs), self.config.monitor.max_concurrency)

    async def prepare(self) -> None:
        """Add the jobs before ``start``, handing the loop back every JOBS_A_TURN of them (monitor/job_sync.py).
        At 50,000 checks adding them takes seconds (bench/start_path.py), and the loop's other tasks wait meanwhile: a
        replica's heartbeats too, whose lease (``monitor.cluster.ttl``) ran out while it started on a busy
        machine, and the others took its checks over. ``start`` adds what a change of share since asks for.

        APScheduler is started paused first: its jobs then go to the job store, which finds one by its id.
        Added to a scheduler not started, they wait in a list that it searches one by one for each job looked
        up or removed: a change of share meanwhile (50,000 checks down to a third) took minutes to apply."""
        if not self._aps.running:
            _quiet_per_run_loggers()  # (a line a job added, once started)
            self._aps.start(paused=True)  # (no run starts before ``start`` resumes it)
        self._resync()
        while self._syncing is not None and not self._syncing.done():  # (a reshard meanwhile starts another)
            await asyncio.wait({self._syncing})

    async def stop(self, grace: float) -> None:
        """Stop scheduling, let in-flight probes finish for up to ``grace`` seconds, cancel the rest."""
        if self._stopping:
            return
        self._stopping = True
        if self._syncing is not None:
            self._syncing.cancel()
        if self._aps.running:
            self._aps.pause()
        pending = {t for t in self._in_flight if not t.done()}
        if pending:
            log.info("waiting up to %.1fs for %d in-flight probe(s)", grace, len(pending))
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            log.warning("cancelling %d probe(s) still running after %.1fs", len(pending), grace)
            await stop_all(pending)
        if self._aps.running:
            self._aps.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback: let it run now
        log.info("scheduler stopped")

    def apply(self, config: Config) -> None:
        """Make the jobs match a new config: add new checks, drop removed ones, retime changed ones."""
        self.config = config
        if config.monitor.max_concurrency != self._slots_limit:
            # Probes in flight keep (and release) the old slots; new ones use the new limit.
            self._slots_limit = config.monitor.max_concurrency
            self._slots = Slots(self._slots_limit)
        running = self._aps.state == STATE_RUNNING  # (prepare's paused scheduler stays paused until start)
        if running:
            self._aps.pause()  # no wake-up per added job; one pass on resume
        try:
            self._sync_jobs(config)
        finally:
            if running:
                self._aps.resume()

    def check(self, config: Config) -> None:
        """Raise if ``config`` has a check that cannot be scheduled; changes nothing (a reload asks first)."""
        now = time.time()
        for integration, check in config.iter_checks():
            if check.enabled:
                timing = (check.interval * self.interval_factor(integration), config.monitor.jitter)
                self._trigger(timing, now, job_id(integration, check.name))

    # ---- the backoff hook ------------------------------------------------------------------------

    def set_interval_factor(self, integration: str, factor: float, reason: str = "") -> None:
        """Run ``integration``'s checks ``factor`` times less often (factor ≤ 1 restores the interval).

        Cheap when nothing changes, so a component may call it on every cycle.
        """
        factor = max(1.0, float(factor))
        current = self._backoff.get(integration)
        if factor == (current.factor if current else 1.0):
            if current is not None and current.reason != reason:
                self._backoff[integration] = Backoff(factor=factor, reason=reason, since=current.since)
            return
        if factor == 1.0:
            self._backoff.pop(integration, None)
            log.info("probes of %s back to their configured interval", integration)
        else:
            self._backoff[integration] = Backoff(
                factor=factor, reason=reason, since=current.since if current else time.time()
            )
            log.warning("probes of %s slowed down ×%g: %s", integration, factor, reason)
        if self.placement is None:  # in a cluster the owner's quota reader exports it
            self.metrics.probe_backoff.labels(integration).set(0 if factor == 1.0 else 1)
        for jid, job in self._jobs.items():
            if job.integration == integration:
                self._retime(jid, job)

    def interval_factor(self, integration: str) -> float:
        backoff = self._backoff.get(integration)
        return backoff.factor if backoff else 1.0

    # ---- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "jobs": len(self._jobs),
            "in_flight": len(self._in_flight),
            "max_concurrency": self.config.monitor.max_concurrency,
            "backoff": {
                name: {"interval_factor": b.factor, "reason": b.reason, "since": b.since}
                for name, b in self._backoff.items()
            },
        }

    def check_status(self, integration: str, check: str) -> dict[str, Any] | None:
        """Effective interval and next run of one check (None: not scheduled, e.g. disabled)."""
        jid = job_id(integration, check)
        job = self._jobs.get(jid)
        if job is None:
            return None
        aps_job = self._aps.get_job(jid)
        next_run = getattr(aps_job, "next_run_time", None) if aps_job else None
        return {
            "interval_seconds": job.timing[0],
            "next_run_at": next_run.timestamp() if next_run else None,
            "last_started_at": job.last_started,
        }

    # ---- internals -------------------------------------------------------------------------------

    def _add_job(self, jid: str, job: Job, first: float) -> None:
        """A new check's job, first run at ``first`` (epoch seconds); a sync adds them (monitor/job_sync.py)."""
        self._jobs[jid] = job
        self._aps.add_job(
            Scheduler._run, trigger=self._trigger(job.timing, first, jid), args=(self, jid), id=jid, name=jid,
            next_run_time=datetime.fromtimestamp(first, UTC), max_instances=1, coalesce=True,
            misfire_grace_time=max(1, round(job.timing[0])),
        )
        self.settled_at = max(self.settled_at, first + job.check.timeout + DEADLINE_OVERRUN)

    def _forget_backoffs(self, config: Config) -> None:
        """Drop the back-offs of integrations no longer in ``config``."""
        for integration in [i for i in self._backoff if i not in config.integrations]:
            del self._backoff[integration]
            if self.placement is None:
                remove_series(self.metrics.probe_backoff, integration)

    def use_placement(self, placement: Placement) -> None:
        """Join a cluster (before ``start``): only this replica's share, on the shared timetables."""
        if self._aps.running:
            raise RuntimeError("use_placement must come before start()")
        self.placement = placement if placement.clustered else None

    def reshard(self) -> None:
        """The share of checks changed (monitor/cluster/): drop and add jobs to match it, a slice at a time
        (a task; a takeover of 16,000 checks held the loop for seconds in one go, and a replica whose heartbeats
        wait loses its lease). Before ``prepare`` nothing to do: ``prepare`` and ``start`` build the jobs of the
        share as it is then (with the session and tokens); while ``prepare`` adds them, this sync takes over."""
        if self._aps.running and not self._stopping:
            self._resync()

    def _timing(self, integration: str, check: CheckConfigBase) -> tuple[float, float]:
        return check.interval * self.interval_factor(integration), self.config.monitor.jitter

    def _trigger(self, timing: tuple[float, float], start: float, jid: str = "") -> BaseTrigger:
        interval, jitter = timing
        if self.placement is not None:
            return GridTrigger(jid, interval, jitter)
        return JitteredInterval(
            seconds=interval * (1 - jitter / 2),
            jitter=interval * jitter or None,
            start_date=datetime.fromtimestamp(start, UTC),
            timezone=UTC,
        )

    def _retime(self, jid: str, job: Job) -> None:
        """New interval: the next run comes one new interval after the last start (or now if past)."""
        job.timing = self._timing(job.integration, job.check)
        now = time.time()
        trigger = self._trigger(job.timing, now, jid)
        if isinstance(trigger, GridTrigger):
            start = trigger.next_after(now)  # every replica moves to the same new timetable
        elif job.last_started is not None:
            start = max(now, job.last_started + job.timing[0])
        else:
            start = first_runs.soon(job.timing[0], now)
        if self._aps.get_job(jid) is None:
            return
        if not isinstance(trigger, GridTrigger):
            trigger = self._trigger(job.timing, start, jid)
        self._aps.modify_job(
            jid, trigger=trigger, next_run_time=datetime.fromtimestamp(start, UTC),
            misfire_grace_time=max(1, round(job.timing[0])),
        )

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        # Called synchronously right after APScheduler creates the run's task, before the task starts.
        job = self._jobs.get(event.job_id)
        if job is not None and event.scheduled_run_times:
            job.scheduled = event.scheduled_run_times[-1].timestamp()

    def _on_skipped(self, event: JobEvent) -> None:
        self._skipped[event.code] += 1
        now = time.monotonic()
        if now - self._skipped_since < SKIPPED_SUMMARY_EVERY:
            return
        busy, late = self._skipped[EVENT_JOB_MAX_INSTANCES], self._skipped[EVENT_JOB_MISSED]
        log.warning(
            "%d run(s) skipped in the last %.0fs: %d because the check's previous run was still waiting for one "
            "of the %d probe slots or running (monitor.max_concurrency), %d because they started later than their "
            "grace time (the daemon is short of CPU)", busy + late, now - self._skipped_since, busy,
            self._slots_limit, late,
        )
        self._skipped = dict.fromkeys(self._skipped, 0)
        self._skipped_since = now

    async def _run(self, jid: str) -> None:
        job = self._jobs.get(jid)
        if job is None or self._stopping:
            return
        if self.placement is not None and not (self.placement.may_run() and self.placement.probes(jid)):
            log.debug("run of %s skipped: this replica's membership is being checked, or the check left its share",
                      jid)
            return
        scheduled, job.scheduled = job.scheduled, None
        # Through the probes' timer, and the loop from the task: asking asyncio for either is a getpid system
        # call on CPython 3.11 (integration_kit/deadlines.py).
        task = self.deadlines.current_task()
        loop = task.get_loop() if task is not None else asyncio.get_running_loop()
        if task is not None:
            self._in_flight.add(task)
        try:
            slots = self._slots
            if not slots.take():
                await slots.wait(loop)
            try:
                if self._stopping:
                    return
                now = time.time()
                if scheduled is not None:
                    self._lag.observe(max(0.0, now - scheduled))
                job.last_started = now
                check = job.check
                result = await self._probe(job, loop)
            finally:
                slots.release()
            # A check removed by a reload while its probe ran: recording would bring its series back. One
            # pointed elsewhere meanwhile: the run told of the old endpoint, whose last values the reload
            # dropped (its certificate's expiry, status code: monitor/recorder.py ``retarget``).
            if self._jobs.get(jid) is job and (job.check is check or not retargets(check, job.check)):
                self.record(result)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Cut short by ``stop`` once the grace was over (it says so): the run just ends. Raised on, it
            # reached APScheduler, which logged an ERROR with a traceback at every shutdown with a slow probe.
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _probe(self, job: Job, loop: asyncio.AbstractEventLoop) -> CheckResult:
        check = job.check
        started = time.time()
        try:
            # On the probes' shared timer, like their attempts (an asyncio.timeout costs ~35 k instructions a
            # run, a scope ~8 k: bench/scheduler_path.py); raises TimeoutError just the same.
            with DeadlineScope(self.deadlines, loop.time() + check.timeout + DEADLINE_OVERRUN):
                return await self.run_probe(check, job.ctx)
        except TimeoutError:
            elapsed = time.time() - started
            log.error("probe %s/%s overran its %.1fs deadline; stopped after %.1fs",
                      job.integration, check.name, check.timeout, elapsed)
            return CheckResult(
                integration=job.integration, check=check.name, kind=kind_of(check), ok=False,
                error_class=ErrorClass.TIMEOUT,
                detail=f"timeout: probe overran its {check.timeout:g}s deadline",
                started_at=started, duration=elapsed, total_duration=elapsed, attempt_classes=(ErrorClass.TIMEOUT,),
            )
        except Exception as exc:
            # A probe reports target failures as results; an exception here is a bug in the probe (or in a
            # library it runs on). Recording nothing would hide it, and probe_down could never fire.
            return self._internal_failure(job, exc, started)

    def _internal_failure(self, job: Job, exc: Exception, started: float) -> CheckResult:
        """A failed run of class ``internal`` for a probe that raised; its traceback is logged once per check
        and kind of exception (the run repeats every interval; the count is in the probe error metrics)."""
        what = f"{type(exc).__module__}.{type(exc).__qualname__}"
        marker = (job.integration, job.check.name, what)
        if marker not in self._raised:
            if len(self._raised) < MAX_RAISED_REMEMBERED:
                self._raised.add(marker)
            log.error("probe %s/%s raised %s instead of returning a result; recorded as a failed run of class "
                      "'internal' (this traceback is logged once per check and exception type)",
                      job.integration, job.check.name, what, exc_info=exc)
        else:
            log.debug("probe %s/%s raised %s again", job.integration, job.check.name, what)
        return internal_failure(job.integration, job.check, exc, started, job.ctx.redactor)


# Every job runs Scheduler._run with (the scheduler, its check's id): one function for them all. APScheduler
# checks a job's function against its arguments as the job is added, through inspect.signature, which works
# a function's signature out again at each call (a bound method's twice over): 40 % of an add_job, a second
# and more of a 50,000-check start (bench/README.md). Worked out once here and carried by the function
# (inspect.signature returns a ``__signature__`` as is): the same check, on the same signature.
Scheduler._run.__signature__ = inspect.signature(Scheduler._run)  # type: ignore[attr-defined]


def _quiet_per_run_loggers() -> None:
    if not log.isEnabledFor(logging.DEBUG):
        for name in _PER_RUN_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
