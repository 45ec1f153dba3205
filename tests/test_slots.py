"""monitor/slots.py, the probes' concurrency slots, side by side with ``asyncio.Semaphore`` (what it replaces):
the same runs arrive, finish and are cancelled at the same moments against both, and the same runs must hold
a slot, got in the same order; never more than the limit; once the loop has run, no run waits while a slot
is free; at the end every slot is back (a cancelled waiter, even one cancelled after a slot was handed to it
before it ran, leaks none)."""

from __future__ import annotations

import asyncio

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from monitor.slots import Slots


class Runs:
    """Runs sharing one limiter; each holds its slot until the test finishes or cancels it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limiter: Slots | asyncio.Semaphore) -> None:
        self.loop, self.limiter = loop, limiter
        self.granted: list[int] = []  # runs in the order they got a slot
        self.holding: set[int] = set()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.finished: dict[int, asyncio.Future[None]] = {}

    def arrive(self, run: int) -> None:
        self.finished[run] = self.loop.create_future()
        self.tasks[run] = self.loop.create_task(self.run(run))

    async def run(self, run: int) -> None:
        if isinstance(self.limiter, Slots):
            if not self.limiter.take():
                await self.limiter.wait()
        else:
            await self.limiter.acquire()
        self.granted.append(run)
        self.holding.add(run)
        try:
            await self.finished[run]
        finally:
            if run in self.holding:  # cancelled while holding (finished: the test released it)
                self.holding.discard(run)
                self.limiter.release()

    def finish(self, run: int) -> None:
        """The run ends now: its slot released at once (so a waiter may be handed it before it runs)."""
        self.holding.discard(run)
        self.limiter.release()
        self.finished[run].set_result(None)

    def cancel(self, run: int) -> None:
        self.tasks[run].cancel()


class SlotsAgainstSemaphore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.next_run = 0

    @initialize(limit=st.integers(min_value=1, max_value=3))
    def start(self, limit: int) -> None:
        self.limit = limit
        self.slots = Runs(self.loop, Slots(limit))
        self.semaphore = Runs(self.loop, asyncio.Semaphore(limit))
        self.both = (self.slots, self.semaphore)

    @rule()
    def arrive(self) -> None:
        for runs in self.both:
            runs.arrive(self.next_run)
        self.next_run += 1

    def finishing(self) -> list[int]:
        """Runs holding a slot that can still finish (not cancelled yet)."""
        return sorted(r for r in self.slots.holding if not self.slots.finished[r].done())

    @precondition(lambda self: self.finishing())
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from(self.finishing()))
        for runs in self.both:
            runs.finish(run)

    @precondition(lambda self: any(not t.done() for t in self.slots.tasks.values()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from(sorted(r for r, t in self.slots.tasks.items() if not t.done())))
        for runs in self.both:
            runs.cancel(run)

    @rule()
    def one_turn(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))

    @rule()
    def settle(self) -> None:
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))
        waiting = [r for r, t in self.slots.tasks.items() if not t.done() and r not in self.slots.holding]
        assert self.slots.limiter.free + len(self.slots.holding) == self.limit  # type: ignore[union-attr]
        assert not waiting or self.slots.limiter.free == 0  # type: ignore[union-attr]

    @invariant()
    def same_as_the_semaphore(self) -> None:
        if hasattr(self, "both"):
            assert self.slots.granted == self.semaphore.granted
            assert self.slots.holding == self.semaphore.holding
            assert len(self.slots.holding) <= self.limit

    def teardown(self) -> None:
        if hasattr(self, "both"):
            for runs in self.both:
                for task in runs.tasks.values():
                    task.cancel()
            for _ in range(5):
                self.loop.run_until_complete(asyncio.sleep(0))
            limiter = self.slots.limiter
            assert isinstance(limiter, Slots)
            assert limiter.free == self.limit and not limiter._waiters
        self.loop.close()


SlotsAgainstSemaphore.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_slots_behave_as_asyncio_semaphore = SlotsAgainstSemaphore.TestCase
