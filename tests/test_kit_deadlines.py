"""Deadline scopes on one shared timer (integration_kit.deadlines): what asyncio.timeout_at does — a block
still running at its deadline leaves with TimeoutError, never before it; any other cancellation stays a
cancellation — for many scopes in flight, entered in any order of deadlines, on any event loop."""

from __future__ import annotations

import asyncio
import math

import pytest
from waiting import until

from integration_kit.deadlines import Deadlines, DeadlineScope


async def outlive(deadlines: Deadlines, deadline: float, log: list[str], name: str) -> None:
    """Stay in a scope until the deadline ends it; note when (by name) and check it was not early."""
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError), DeadlineScope(deadlines, deadline):
        await asyncio.sleep(30)
    assert loop.time() >= deadline, f"{name} ended {deadline - loop.time():.3f}s before its deadline"
    log.append(name)


async def test_a_block_that_outlives_its_deadline_leaves_with_timeout_error_and_no_cancellation_left() -> None:
    deadlines, log = Deadlines(), []
    await outlive(deadlines, asyncio.get_running_loop().time() + 0.05, log, "a")
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # its own cancellation taken back
    await asyncio.sleep(0.01)  # and nothing pending that would cancel the next wait
    assert log == ["a"] and deadlines.scopes == set()


async def test_a_block_done_in_time_is_left_alone_and_the_timer_serves_the_next_one() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    for _ in range(3):
        with DeadlineScope(deadlines, loop.time() + 1.0):
            await asyncio.sleep(0)
    assert deadlines.scopes == set() and deadlines.timer_at < math.inf
    # Past the timer's time: due before this sleep's, it fires first however late the loop wakes.
    await asyncio.sleep(deadlines.timer_at - loop.time() + 0.05)
    assert deadlines.timer_at == math.inf  # the timer fired, found nothing to end, and was not set again
    log: list[str] = []
    await outlive(deadlines, loop.time() + 0.05, log, "late")  # a scope after that still has its deadline
    assert log == ["late"]


async def test_scopes_in_flight_end_in_the_order_of_their_deadlines_whatever_the_order_they_began() -> None:
    deadlines, log = Deadlines(), []
    now = asyncio.get_running_loop().time()
    offsets = {"third": 0.30, "first": 0.05, "second": 0.15}  # entered in this order: the timer is moved earlier
    await asyncio.gather(*(outlive(deadlines, now + offset, log, name) for name, offset in offsets.items()))
    assert log == ["first", "second", "third"]


async def waiting_in_a_scope(deadlines: Deadlines, deadline: float) -> asyncio.Task[None]:
    """A task that has entered a scope and waits in it (until cancelled)."""
    entered = asyncio.Event()

    async def call() -> None:
        with DeadlineScope(deadlines, deadline):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(call())
    await entered.wait()
    return task


async def test_a_short_deadline_entered_after_a_long_one_ends_while_the_long_one_runs_on() -> None:
    deadlines, log = Deadlines(), []
    loop = asyncio.get_running_loop()
    long_task = await waiting_in_a_scope(deadlines, loop.time() + 60)
    await outlive(deadlines, loop.time() + 0.05, log, "short")
    assert log == ["short"] and not long_task.done()
    long_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_task


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    task = await waiting_in_a_scope(deadlines, asyncio.get_running_loop().time() + 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.scopes == set()


async def test_a_cancellation_from_outside_that_meets_the_deadline_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    scope = DeadlineScope(deadlines, loop.time() + 0.05)

    async def call() -> None:
        with scope:
            loop.call_at(scope.deadline, task.cancel)  # due at the same turn of the loop as the scope's timer
            await asyncio.sleep(30)

    task = asyncio.create_task(call())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scope.expired  # both cancelled it: the other one wins, as with asyncio.timeout


async def test_a_deadline_already_past_ends_the_block_at_its_first_wait() -> None:
    deadlines, log = Deadlines(), []
    await outlive(deadlines, asyncio.get_running_loop().time() - 1, log, "past")
    assert log == ["past"]


def test_one_deadlines_serves_one_event_loop_after_another() -> None:
    """A service's Integration may outlive an event loop (asyncio.run twice, a test per loop): a timer
    armed on the old loop never fires, so the new loop gets its own."""
    deadlines = Deadlines()

    async def leave_a_timer_armed() -> float:
        loop = asyncio.get_running_loop()
        with DeadlineScope(deadlines, loop.time() + 0.3):
            await asyncio.sleep(0)
        return loop.time() + 0.3

    armed_until = asyncio.run(leave_a_timer_armed())  # the loop closes before its timer fires
    log: list[str] = []

    async def second() -> None:
        deadline = max(asyncio.get_running_loop().time(), armed_until) + 0.05  # after the dead timer's time
        await outlive(deadlines, deadline, log, "second loop")

    asyncio.run(second())
    assert log == ["second loop"]


async def test_a_scope_outside_a_task_is_refused() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    result: list[BaseException] = []

    def in_a_callback() -> None:  # runs on the loop, but in no task
        try:
            with DeadlineScope(deadlines, loop.time() + 1):
                pass
        except RuntimeError as exc:
            result.append(exc)

    loop.call_soon(in_a_callback)
    await until(lambda: result, "the callback's error")
    assert [str(e) for e in result] == ["a deadline scope is entered in a task"]


def test_the_task_and_loop_it_finds_are_asyncios_on_every_loop() -> None:
    """``current_task`` and ``running_loop`` answer as asyncio does (they only skip its system call): before
    any timer, on the timer's loop, on a later loop while the timer's is closed, in a callback (no task)."""
    deadlines = Deadlines()
    seen: list[bool] = []

    def same() -> None:
        seen.append(deadlines.current_task() is asyncio.current_task()
                    and deadlines.running_loop() is asyncio.get_running_loop())

    async def on_a_loop() -> None:
        same()  # (the first loop: no timer yet; later ones: the timer of a closed loop)
        with DeadlineScope(deadlines, asyncio.get_running_loop().time() + 5):
            same()  # (the timer's loop)
            asyncio.get_running_loop().call_soon(same)  # (no task: current_task is None)
            await asyncio.sleep(0.01)

    asyncio.run(on_a_loop())
    asyncio.run(on_a_loop())
    assert seen == [True] * 6
    with pytest.raises(RuntimeError):  # no loop running: as asyncio
        deadlines.current_task()
    with pytest.raises(RuntimeError):
        deadlines.running_loop()
