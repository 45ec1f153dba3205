"""Supervised loops (integration_kit/supervisor.py): a crash is logged, counted and the loop restarted with
back-off; /readyz-style readiness while it crashes; close() always ends the loops — even one that loses
its cancellation, as Python 3.11's asyncio.wait_for does when the cancellation and its result meet."""

from __future__ import annotations

import asyncio
import logging

import pytest
from waiting import until

from integration_kit.retry import Backoff
from integration_kit.supervisor import Supervisor
from integration_kit.tasks import stop, stop_all


def test_backoff_doubles_with_equal_jitter_up_to_the_cap_and_starts_over() -> None:
    low, high = Backoff(first=1.0, cap=8.0, rand=lambda: 0.0), Backoff(first=1.0, cap=8.0, rand=lambda: 1.0)
    assert [low.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [high.failed() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    high.succeeded()
    assert high.failed() == 1.0
    with pytest.raises(ValueError, match="0 < first <= cap"):
        Backoff(first=0.0)


async def test_a_crashing_loop_is_logged_counted_restarted_and_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    crashes: list[int] = []
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise KeyError("token sk_live_SECRET in a bad key")
        await asyncio.Event().wait()  # the 4th run stays up

    sup = Supervisor("webhooks", on_crash=lambda: crashes.append(1), first_backoff=0.01, max_backoff=0.02,
                     stable_after=0.3, redact=lambda text: text.replace("sk_live_SECRET", "[REDACTED]"))
    with caplog.at_level(logging.INFO, logger="integration_kit.supervisor"):
        sup.start("webhook-reader", loop)
        await until(lambda: runs, "4 runs", holds=lambda n: n == 4)
        ok, reason = sup.ready()
        assert not ok and "loop webhook-reader crashed 3 time(s)" in reason and "sk_live_SECRET" not in reason
        status = sup.status()["loops"]["webhook-reader"]
        assert status["crashes"] == 3 and status["running"] and "KeyError" in status["last_error"]
        await until(sup.ready, "ready again", holds=lambda ready: ready[0])  # stable again after stable_after
        await sup.close(grace=0)
    assert len(crashes) == 3
    # The traceback once, then one line per repeat of the same error.
    assert caplog.text.count("Traceback") == 1
    assert caplog.text.count("crashed again") == 2


async def test_a_loop_that_returns_has_finished_and_is_not_restarted() -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1

    sup = Supervisor("quota", first_backoff=0.01)
    sup.start("once", loop)
    await until(lambda: not sup.running("once"), "once to have stopped")
    # A window in which a restart would come: 5 backoffs (10 ms). Timers fire in the order they are due, so a
    # restart, due first, is never overtaken by this wake-up however loaded the machine.
    await asyncio.sleep(0.05)
    assert runs == 1 and sup.ready() == (True, "")
    await sup.close()


class Stubborn:
    """A loop that never looks at ``stopping`` and loses its first ``lost`` cancellations (as a loop
    whose cancellation meets a result in Python 3.11's asyncio.wait_for does)."""

    def __init__(self, lost: int) -> None:
        self.lost = lost
        self.swallowed = 0
        self.waits = 0  # waits begun: a cancellation from then on is one it swallows

    async def __call__(self) -> None:
        while True:
            try:
                self.waits += 1
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.swallowed += 1
                if self.swallowed > self.lost:
                    raise


async def test_close_stops_a_loop_that_swallows_its_cancellation() -> None:
    sup, stubborn = Supervisor("alerts"), Stubborn(lost=2)
    sup.start("stubborn", stubborn)
    await until(lambda: stubborn.waits, "the loop waiting")
    await asyncio.wait_for(sup.close(grace=0.05), 10)  # a single cancel-and-wait would hang here forever
    assert stubborn.swallowed == 3 and not sup.running("stubborn")


async def test_sleep_returns_false_at_once_when_stopping_and_wakes_on_its_event() -> None:
    sup = Supervisor("x")
    wake = asyncio.Event()
    sleeper = asyncio.ensure_future(sup.sleep(3600, wake=wake))
    # Nothing outside says it sleeps: its first step is a ready callback, which the loop runs before any
    # timer (this 10 ms one included) however loaded the machine.
    await asyncio.sleep(0.01)
    wake.set()
    assert await asyncio.wait_for(sleeper, 5) is True
    sleeper = asyncio.ensure_future(sup.sleep(3600))
    await asyncio.sleep(0.01)  # (as above)
    await sup.close()
    assert await asyncio.wait_for(sleeper, 5) is False


async def test_report_says_whether_the_components_own_work_succeeds() -> None:
    states: list[bool] = []
    sup = Supervisor("quota", on_state=states.append, redact=lambda text: text.replace("pw", "[REDACTED]"))
    sup.report(False, "Redis read failed: auth pw rejected")
    assert sup.status()["ok"] is False and sup.status()["problem"] == "Redis read failed: auth [REDACTED] rejected"
    sup.report(True)
    assert states == [False, True] and sup.status()["problem"] is None
    await sup.close()


async def test_stop_ends_a_task_that_swallows_its_cancellation() -> None:
    stubborn = Stubborn(lost=1)
    task = asyncio.ensure_future(stubborn())
    await until(lambda: stubborn.waits, "the task waiting")
    await asyncio.wait_for(stop(task), 10)  # cancel-once-and-await would hang here forever
    assert task.cancelled() and stubborn.swallowed == 2
    await stop(None)


async def test_cancel_stops_a_loop_that_swallows_its_cancellation_without_waiting_for_close() -> None:
    """A reader whose config a reload removed: if its cancellation is lost it must not run on until close()."""
    sup, stubborn = Supervisor("quota"), Stubborn(lost=1)
    sup.start("stubborn", stubborn)
    await until(lambda: stubborn.waits, "the loop waiting")
    sup.cancel("stubborn")
    await until(lambda: stubborn.swallowed, "2 cancellations swallowed", holds=lambda n: n == 2)
    await until(lambda: [t for t in asyncio.all_tasks() if t.get_name().startswith("stubborn")],
                "no stubborn task left", holds=lambda left: not left)
    await sup.close()


async def test_stop_all_ends_every_task_and_re_raises_nothing() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    waiting = asyncio.Event()

    async def swallows_once() -> None:
        try:
            waiting.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)

    tasks = [asyncio.ensure_future(fails()), asyncio.ensure_future(swallows_once())]
    await until(waiting.is_set, "the second task waiting (the first, started before it, has failed)")
    await asyncio.wait_for(stop_all(tasks), 10)
    assert isinstance(tasks[0].exception(), RuntimeError) and tasks[1].cancelled()
