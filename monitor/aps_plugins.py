"""APScheduler plug-ins the daemon's scheduler runs with (monitor/batching_scheduler.py), in place of its
defaults: the same behaviour, a fraction of their cost per run (bench/scheduler_path.py, bench/README.md).

At saturation every run passes through the executor (its task started and ended). It is plugged in where
APScheduler takes any executor (``executors=``); APScheduler itself and its scheduling loop are unchanged.
tests/test_aps_plugins.py holds it to its default.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from traceback import format_tb
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job
from apscheduler.util import iscoroutinefunction_partial


class RunExecutor(AsyncIOExecutor):
    """APScheduler's AsyncIOExecutor with each run's task the job's coroutine itself.

    The stock executor runs a coroutine job inside its ``run_coroutine_job`` wrapper: one more coroutine
    level that every wait of the run resumes through (a probe waits ~5 times), and per run a logger look-up
    and the misfire check in datetimes (~10 k instructions a run, bench/README.md). Here the same steps,
    in the same order for the scheduler's listeners: a run later than its ``misfire_grace_time`` is not
    started (EVENT_JOB_MISSED; checked when submitted, where the wrapper checks when its task first runs, a
    loop turn later), a run that raises (or is cancelled) is EVENT_JOB_ERROR with its traceback, else
    EVENT_JOB_EXECUTED with its return value; the same log lines. Jobs that are not coroutine functions, or
    with several run times at once (``coalesce=False``), go the stock way.

    Plugged in as APScheduler's executors are (``executors={"default": ...}``); the wrapper's behaviour it
    keeps is pinned by tests/test_aps_plugins.py.
    """

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        if len(run_times) != 1 or not iscoroutinefunction_partial(job.func):
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
                event = JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time, retval=retval)
            self._run_job_success(job.id, [event])

        task.add_done_callback(ended)
        self._pending_futures.add(task)


