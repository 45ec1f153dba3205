"""monitor/aps_plugins.py, held to APScheduler's own defaults side by side: the job store to MemoryJobStore
under the same random operations, the executor to AsyncIOExecutor by the events a scheduler's listeners get
from the same jobs (returning, raising, missed, cancelled), the trigger to IntervalTrigger draw for draw."""

from __future__ import annotations

import asyncio
import gc
import random
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from apscheduler.events import EVENT_ALL, EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.aps_plugins import COROUTINE_FUNCS_KEPT, JitteredInterval, RunExecutor, SortedJobStore

BASE = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
IDS = st.sampled_from([f"job{i}" for i in range(6)])
# Next run times that tie, differ by a microsecond, or are absent (a paused job).
WHEN = st.one_of(st.none(), st.integers(min_value=0, max_value=4).map(lambda n: BASE + timedelta(microseconds=n)),
                 st.integers(min_value=-3, max_value=3).map(lambda n: BASE + timedelta(hours=n)))
# ("due" and "next" change nothing a caller sees, but the store drops its stale entries then.)
OPS = st.lists(st.tuples(st.sampled_from(["add", "update", "remove", "remove_all", "due", "next"]), IDS, WHEN),
               max_size=40)


def outcome(store: Any, op: str, job_id: str, when: datetime | None) -> str:
    job = SimpleNamespace(id=job_id, next_run_time=when)  # (all a job store reads of a job)
    try:
        if op == "add":
            store.add_job(job)
        elif op == "update":
            store.update_job(job)
        elif op == "remove":
            store.remove_job(job_id)
        elif op == "due":
            return repr([job.id for job in store.get_due_jobs(when or BASE)])
        elif op == "next":
            return repr(store.get_next_run_time())
        else:
            store.remove_all_jobs()
    except (ConflictingIdError, JobLookupError) as exc:
        return type(exc).__name__
    return "ok"


def view(store: Any) -> tuple[Any, ...]:
    ids = [job.id for job in store.get_all_jobs()]
    due = {n: [job.id for job in store.get_due_jobs(BASE + timedelta(microseconds=n))] for n in (-1, 0, 2, 4)}
    looked_up = {i: getattr(store.lookup_job(i), "next_run_time", "absent") for i in [*ids, "nobody"]}
    return ids, due, store.get_next_run_time(), looked_up


def within_twice(store: SortedJobStore) -> bool:
    """The store keeps at most as many stale entries as jobs (its memory within twice the jobs')."""
    return len(store._entries) <= 2 * len(store.get_all_jobs())


def test_stale_entries_never_outnumber_the_jobs() -> None:
    """Entries left behind where no read of the front drops them (a job retimed earlier and earlier, its old
    entries later than any due) are dropped once they outnumber the jobs."""
    store = SortedJobStore()
    for i in range(3):
        store.add_job(SimpleNamespace(id=f"c{i}", next_run_time=BASE + timedelta(hours=1)))
    for minutes in range(59, 0, -1):
        store.update_job(SimpleNamespace(id="c0", next_run_time=BASE + timedelta(minutes=minutes)))
        assert within_twice(store)
        assert store.get_next_run_time() == BASE + timedelta(minutes=minutes)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_the_job_store_is_memory_job_store(ops: list[tuple[str, str, datetime | None]]) -> None:
    ours, theirs = SortedJobStore(), MemoryJobStore()
    for op, job_id, when in ops:
        assert outcome(ours, op, job_id, when) == outcome(theirs, op, job_id, when), (op, job_id, when)
        assert view(ours) == view(theirs)
        assert within_twice(ours)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=60), st.lists(st.tuples(
    st.integers(min_value=0, max_value=40),  # ms to the next wake-up
    st.lists(st.integers(min_value=0, max_value=1500), max_size=60),  # each due job's next run, ms after now
    st.lists(st.tuples(st.sampled_from(["add", "update", "remove"]), st.integers(min_value=0, max_value=80),
                       st.integers(min_value=-200, max_value=1500)), max_size=4),  # others: config reloads
), max_size=30))
def test_the_job_store_is_memory_job_store_as_the_scheduler_uses_it(
    jobs: int, wakeups: list[tuple[int, list[int], list[tuple[str, int, int]]]]
) -> None:
    """APScheduler's use at saturation: at each wake-up the due jobs, in order, each moved to its next run
    (a run or a skipped one: the move is the same), then the next wake-up's time; between wake-ups jobs
    added, retimed (to any time, the past too) and removed. Many moves between the reads of the front, so
    stale entries pile up and are dropped as they would be in a daemon."""
    ours, theirs = SortedJobStore(), MemoryJobStore()
    for i in range(jobs):
        when = BASE + timedelta(milliseconds=i * 1000 // jobs)
        assert outcome(ours, "add", f"c{i}", when) == outcome(theirs, "add", f"c{i}", when) == "ok"
    now = BASE
    for wait, moves, others in wakeups:
        now += timedelta(milliseconds=wait)
        due = [job.id for job in theirs.get_due_jobs(now)]
        assert [job.id for job in ours.get_due_jobs(now)] == due
        for job_id, later in zip(due, [*moves, *[1000] * len(due)], strict=False):
            when = now + timedelta(milliseconds=later)
            assert outcome(ours, "update", job_id, when) == outcome(theirs, "update", job_id, when) == "ok"
        assert ours.get_next_run_time() == theirs.get_next_run_time()
        for op, i, ms in others:
            when = now + timedelta(milliseconds=ms)
            assert outcome(ours, op, f"c{i}", when) == outcome(theirs, op, f"c{i}", when)
        assert view(ours) == view(theirs)
        assert within_twice(ours)


@dataclass
class Unhashable:
    """A job function's owner that defines ``__eq__`` without ``__hash__`` (any dataclass): its bound
    methods, and it as a callable, cannot be dict keys."""

    value: int

    async def method(self) -> int:
        return self.value

    def __call__(self) -> int:
        return self.value


async def events_of(executor: AsyncIOExecutor) -> list[tuple[Any, ...]]:
    """What a scheduler's listeners hear of the jobs run by ``executor``: one returns, one raises, one is
    past its grace time, one is still running at shutdown (cancelled); and jobs whose function cannot be
    hashed (a coroutine method of an unhashable object, that object as a plain callable, a partial of it),
    which return."""
    heard: list[JobEvent] = []
    scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": executor})
    scheduler.add_listener(heard.append, EVENT_ALL)
    ran = asyncio.Event()
    hangs = asyncio.Event()
    unhashable = ("unhashable_method", "unhashable_callable", "unhashable_partial")
    ended = asyncio.Event()

    def end_heard(event: JobEvent) -> None:
        if {e.job_id for e in heard if e.code in (EVENT_JOB_EXECUTED, EVENT_JOB_ERROR)} >= set(unhashable):
            ended.set()

    scheduler.add_listener(end_heard, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    async def returns() -> int:
        ran.set()
        return 7

    async def raises() -> None:
        raise ValueError("no")

    async def hanging() -> None:
        hangs.set()
        await asyncio.Event().wait()

    now = datetime.now(UTC)
    for name, func, late in (("returns", returns, 0), ("raises", raises, 0), ("missed", returns, 10),
                             ("hanging", hanging, 0), ("unhashable_method", Unhashable(8).method, 0),
                             ("unhashable_callable", Unhashable(9), 0),
                             ("unhashable_partial", partial(Unhashable(10).method), 0)):
        scheduler.add_job(func, "date", run_date=now - timedelta(seconds=late), id=name, misfire_grace_time=5)
    scheduler.start()
    await asyncio.wait_for(asyncio.gather(ran.wait(), hangs.wait(), ended.wait()), 10)
    for _ in range(5):
        await asyncio.sleep(0)
    scheduler.shutdown(wait=False)
    for _ in range(5):
        await asyncio.sleep(0)
    return sorted(
        (e.code, e.job_id, round(getattr(e, "scheduled_run_time", now).timestamp() - now.timestamp()),
         getattr(e, "retval", None),
         type(getattr(e, "exception", None)).__name__, bool(getattr(e, "traceback", None)))
        for e in heard if isinstance(e, JobEvent)
    )


async def test_the_executor_tells_the_listeners_what_asyncio_executor_tells() -> None:
    theirs = await events_of(AsyncIOExecutor())
    assert len(theirs) >= 7 * 2  # each job added and submitted (or missed), ended; a cancel heard
    assert await events_of(RunExecutor()) == theirs


async def test_a_run_is_the_jobs_own_task() -> None:
    """What the executor is for: no coroutine between the run's task and the job (each wait of a probe
    resumes every level)."""
    seen: list[str] = []
    ran = asyncio.Event()

    async def job() -> None:
        task = asyncio.current_task()
        assert task is not None
        seen.append(task.get_coro().__qualname__)  # type: ignore[union-attr]
        ran.set()

    scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": RunExecutor()})
    scheduler.add_job(job, "date", run_date=datetime.now(UTC))
    scheduler.start()
    try:
        await asyncio.wait_for(ran.wait(), 30)  # (the job's run)
        assert seen == [job.__qualname__]
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)


@pytest.mark.parametrize("jitter", [None, 30.0])
def test_the_trigger_draws_once_per_run(jitter: float | None) -> None:
    """APScheduler asks twice for the fire time after a run's (to see whether more are due, then for the
    next run): the same answer both times, the one IntervalTrigger gives to its first question."""
    kwargs: dict[str, Any] = {"seconds": 60, "jitter": jitter, "start_date": BASE, "timezone": UTC}
    ours, theirs = JitteredInterval(**kwargs), IntervalTrigger(**kwargs)
    previous = BASE
    for _ in range(5):
        random.seed(previous.timestamp())
        expected = theirs.get_next_fire_time(previous, previous)
        random.seed(previous.timestamp())
        first = ours.get_next_fire_time(previous, previous)
        assert first == expected
        assert ours.get_next_fire_time(previous, previous) == first  # asked again: not drawn again
        # A third time (APScheduler never asks one): a question of its own, drawn as IntervalTrigger draws it;
        # the trigger remembers nothing of the run once asked twice.
        random.seed(previous.timestamp() + 1)
        expected = theirs.get_next_fire_time(previous, previous)
        random.seed(previous.timestamp() + 1)
        assert ours.get_next_fire_time(previous, previous) == expected
        assert ours.get_next_fire_time(previous, previous) == expected  # (and that one asked twice)
        random.seed(1)
        expected = theirs.get_next_fire_time(None, BASE)
        random.seed(1)
        assert ours.get_next_fire_time(None, BASE) == expected  # (another question: answered afresh)
        assert first is not None
        previous = first


async def test_runs_end_alike_whether_or_not_a_listener_asks_for_executed_events() -> None:
    """The executor builds no EVENT_JOB_EXECUTED event while no listener asks for one, and still counts each
    run's end (a job with max_instances=1 runs again); a listener added later hears the next runs'."""
    runs: list[int] = []
    second, heard_one = asyncio.Event(), asyncio.Event()
    heard: list[JobEvent] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 2:
            second.set()

    def listener(event: JobEvent) -> None:
        heard.append(event)
        heard_one.set()

    scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": RunExecutor()})
    scheduler.add_job(job, "interval", seconds=0.05, max_instances=1, misfire_grace_time=None,
                      next_run_time=datetime.now(UTC))
    scheduler.start()
    try:
        await asyncio.wait_for(second.wait(), 30)  # (the first run's end was counted: the second not skipped)
        scheduler.add_listener(listener, EVENT_JOB_EXECUTED)
        await asyncio.wait_for(heard_one.wait(), 30)
        assert {e.code for e in heard} == {EVENT_JOB_EXECUTED}
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)


async def test_the_executor_keeps_no_job_function_for_ever() -> None:
    """RunExecutor remembers whether each job's function is a coroutine function. Jobs come and go (a reload
    adds new ones: a closure, a partial, a bound method of a new object), and it kept every function it had
    seen, and all it refers to, as long as the scheduler lived: only the last few are kept."""
    done = asyncio.Event()
    ran: list[int] = []
    first: weakref.ref[Any] | None = None

    def job_of(n: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            ran.append(n)
            if len(ran) == COROUTINE_FUNCS_KEPT * 2:
                done.set()
        return job

    scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": RunExecutor()})
    scheduler.start()
    try:
        for n in range(COROUTINE_FUNCS_KEPT * 2):  # one job a reload, each with a function of its own
            job = job_of(n)
            if n == 0:
                first = weakref.ref(job)
            scheduler.add_job(job, "date", run_date=datetime.now(UTC), misfire_grace_time=None)
            del job
        await asyncio.wait_for(done.wait(), 30)
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
    gc.collect()
    assert sorted(ran) == list(range(COROUTINE_FUNCS_KEPT * 2))
    assert first is not None and first() is None, "the first job's function is still referred to"
