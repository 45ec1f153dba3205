"""APScheduler plug-ins the daemon's scheduler runs with (monitor/batching_scheduler.py), in place of its
defaults: the same behaviour, a fraction of their cost per run (bench/scheduler_path.py, bench/README.md).

At saturation every run passes through the job store (its next run time moved), the executor (its task
started and ended) and the trigger (asked for the next run); APScheduler's defaults spend most of
APScheduler's cost per run there. Each is plugged in where APScheduler takes any job store, executor or
trigger (``jobstores=``, ``executors=``, ``trigger=``); APScheduler itself and its scheduling loop are
unchanged. tests/test_aps_plugins.py holds each to its default.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from bisect import bisect_left
from datetime import datetime, timedelta
from traceback import format_tb
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import iscoroutinefunction_partial


class JitteredInterval(IntervalTrigger):
    """APScheduler's IntervalTrigger whose jittered next fire time is drawn once per previous one.

    For each run APScheduler asks the trigger twice for the fire time after the run's: once to see whether
    later runs are due too, then for the job's next run; with jitter each answer is a new random draw, and
    the first is thrown away (9.4 k instructions a call). Here the second call gets the first's answer: the
    same distribution of fire times, one draw a run. Any other question is answered afresh, a third one
    too: once it has been asked twice, the trigger forgets the question (the run's time, a datetime a check
    kept alive for nothing until the next run).
    """

    __slots__ = ("_answer", "_asked")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asked: datetime | None = None
        self._answer: datetime | None = None

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is not None and previous_fire_time is self._asked:
            answer, self._asked, self._answer = self._answer, None, None
            return answer
        answer = super().get_next_fire_time(previous_fire_time, now)
        self._asked, self._answer = previous_fire_time, answer
        return answer


class SortedJobStore(BaseJobStore):
    """APScheduler's MemoryJobStore with its look-ups done in C, and a run's move without shifting the store.

    The same store: jobs in memory, kept in order of next run time then id (paused jobs, with no next run
    time, last). MemoryJobStore finds a job's place by a binary search written in Python and turns each next
    run time into epoch seconds through a time tuple (``datetime_to_utc_timestamp``): moving one job to its
    next run cost 62 k instructions among 2,400 jobs, every run. Here each entry is ``(epoch seconds, id,
    job)``, searched by ``bisect`` on its first two (jobs are never compared), and the seconds are
    ``datetime.timestamp()`` (APScheduler's datetimes are aware).

    A run moves its job from the front of the order (due) to near the back (an interval later), and a run
    skipped moves it just the same. Deleting the old entry from the front of a list shifts every entry
    after it: 18 k instructions a move among 2,000 jobs, 83 k among 10,000 (bench/job_store.py). So an
    update leaves the old entry where it is, stale, and inserts the new one (near the back: little to
    shift); an entry is live while ``_by_id`` holds that very tuple. Stale entries are dropped in bulk: the
    due ones when ``get_due_jobs`` reads the front (one shift a wake-up, not one a run), those ahead of the
    first live one when ``get_next_run_time`` is asked (after the wake-up's moves), and all of them once
    they outnumber the live ones (a rebuild; memory stays within twice the jobs').
    """

    def __init__(self) -> None:
        super().__init__()
        # Sorted by (next run as epoch seconds, id); live and stale entries (ties of a stale and a live one
        # on both, in any order: only one entry of an id is live).
        self._entries: list[tuple[float, str, Job]] = []
        self._by_id: dict[str, tuple[float, str, Job]] = {}  # the live entry of each job
        self._stale = 0  # entries in _entries no longer live

    @staticmethod
    def _entry(job: Job) -> tuple[float, str, Job]:
        when = job.next_run_time
        return (math.inf if when is None else when.timestamp()), job.id, job

    def lookup_job(self, job_id: str) -> Job | None:
        entry = self._by_id.get(job_id)
        return None if entry is None else entry[2]

    def get_due_jobs(self, now: datetime) -> list[Job]:
        entries, by_id = self._entries, self._by_id
        end = bisect_left(entries, (math.nextafter(now.timestamp(), math.inf),))  # (those at or before now)
        due = [entry for entry in entries[:end] if by_id.get(entry[1]) is entry]
        if len(due) < end:  # the stale ones among them go (one shift of the list)
            entries[:end] = due
            self._stale -= end - len(due)
        return [entry[2] for entry in due]

    def get_next_run_time(self) -> datetime | None:
        entries, by_id = self._entries, self._by_id
        for index, entry in enumerate(entries):
            if by_id.get(entry[1]) is entry:
                if index:  # the stale ones ahead of it go (one shift of the list)
                    del entries[:index]
                    self._stale -= index
                return entry[2].next_run_time
        self.remove_all_jobs()  # (all stale: none live)
        return None

    def get_all_jobs(self) -> list[Job]:
        by_id = self._by_id
        return [entry[2] for entry in self._entries if by_id.get(entry[1]) is entry]

    def add_job(self, job: Job) -> None:
        if job.id in self._by_id:
            raise ConflictingIdError(job.id)
        self._insert(self._entry(job))

    def update_job(self, job: Job) -> None:
        if job.id not in self._by_id:
            raise JobLookupError(job.id)
        self._insert(self._entry(job))  # (the job's previous entry is stale from here on)
        self._dropped()

    def remove_job(self, job_id: str) -> None:
        if self._by_id.pop(job_id, None) is None:
            raise JobLookupError(job_id)
        self._dropped()

    def remove_all_jobs(self) -> None:
        self._entries, self._by_id, self._stale = [], {}, 0

    def shutdown(self) -> None:
        self.remove_all_jobs()

    def _insert(self, entry: tuple[float, str, Job]) -> None:
        self._entries.insert(bisect_left(self._entries, entry[:2]), entry)
        self._by_id[entry[1]] = entry

    def _dropped(self) -> None:
        """One more entry stale: once they outnumber the live ones, the list is rebuilt without them."""
        self._stale += 1
        if self._stale > len(self._by_id):
            by_id = self._by_id
            self._entries = [entry for entry in self._entries if by_id.get(entry[1]) is entry]
            self._stale = 0


COROUTINE_FUNCS_KEPT = 64  # job functions whose kind RunExecutor remembers


class RunExecutor(AsyncIOExecutor):
    """APScheduler's AsyncIOExecutor with each run's task the job's coroutine itself.

    The stock executor runs a coroutine job inside its ``run_coroutine_job`` wrapper: one more coroutine
    level that every wait of the run resumes through (a probe waits ~5 times), and per run a logger look-up
    and the misfire check in datetimes (~10 k instructions a run, bench/README.md). Here the same steps,
    in the same order for the scheduler's listeners: a run later than its ``misfire_grace_time`` is not
    started (EVENT_JOB_MISSED; checked when submitted, where the wrapper checks when its task first runs, a
    loop turn later), a run that raises (or is cancelled) is EVENT_JOB_ERROR with its traceback, else
    EVENT_JOB_EXECUTED with its return value, built only while a listener asks for it (none of the daemon's
    does: building and dispatching one was 12 k instructions a run; the listeners are read from the
    scheduler's ``_listeners``, APScheduler 3 has no public accessor); the same log lines. Jobs that are not
    coroutine functions, or with several run times at once (``coalesce=False``), go the stock way.

    Plugged in as APScheduler's executors are (``executors={"default": ...}``); the wrapper's behaviour it
    keeps, and the private attributes it reads, are pinned by tests/test_aps_plugins.py.
    """

    def __init__(self) -> None:
        super().__init__()
        # Asked once per job function (inspect: ~3 k instructions a run), of the last few functions only:
        # a reload, or an application adding and removing jobs, brings new ones (a closure, a partial, a
        # bound method of a new object), and a plain dict kept every one, and what it refers to, for ever.
        # The daemon's jobs all run one bound method.
        self._coroutine_funcs = functools.lru_cache(maxsize=COROUTINE_FUNCS_KEPT)(iscoroutinefunction_partial)

    def _is_coroutine(self, func: Any) -> bool:
        try:
            return self._coroutine_funcs(func)
        except TypeError:  # unhashable (defines __eq__ without __hash__, e.g. a dataclass's bound method)
            return iscoroutinefunction_partial(func)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        coroutine = self._is_coroutine(job.func)
        if len(run_times) != 1 or not coroutine:
            super()._do_submit_job(job, run_times)
            return
        run_time = run_times[0]
        late = time.time() - run_time.timestamp()
        if job.misfire_grace_time is not None and late > job.misfire_grace_time:
            self._logger.warning('Run time of job "%s" was missed by %s', job, timedelta(seconds=late))
            missed = JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time)
            # (after submit_job has counted this instance, as for a run that ended)
            self._eventloop.call_soon(self._run_job_success, job.id, [missed])
            return
        self._logger.info('Running job "%s" (scheduled at %s)', job, run_time)
        task = self._eventloop.create_task(job.func(*job.args, **job.kwargs))

        def ended(task: asyncio.Task[Any]) -> None:
            self._pending_futures.discard(task)
            try:
                retval = task.result()
            except BaseException as exc:  # (as the wrapper: a cancelled run too)
                self._logger.exception('Job "%s" raised an exception', job, exc_info=exc)
                event = JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time, exception=exc,
                                          traceback="".join(format_tb(exc.__traceback__)))
            else:
                self._logger.info('Job "%s" executed successfully', job)
                if not any(mask & EVENT_JOB_EXECUTED for _, mask in self._scheduler._listeners):
                    self._run_job_success(job.id, [])
                    return
                event = JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time, retval=retval)
            self._run_job_success(job.id, [event])

        task.add_done_callback(ended)
        self._pending_futures.add(task)


