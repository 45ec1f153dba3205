"""The probes' concurrency slots (``monitor.max_concurrency``): a counter with a queue, for the scheduler.

Why not ``asyncio.Semaphore``: ``async with`` on it is two coroutines and a generator (``locked()``) per
run, 10.0 k instructions for a free slot at saturation (bench/README.md, 30 Nov 2026); here a free slot is
one plain call, and only a run that finds none free makes a future to wait on. The behaviour is the
semaphore's (Python 3.11), and tests/test_slots.py runs both side by side:

* at most ``limit`` slots are held; ``take`` a free one, else ``wait`` in line for one, then ``release``;
* first come, first served: a slot is not taken while someone waits in line, a released slot is handed to
  the first in line at once, and that run keeps its place until it runs (nobody takes a slot ahead of it);
* a waiter cancelled in line leaves it; one cancelled after a slot was handed to it (before it ran) hands
  the slot on: cancelling never leaks a slot.

The code follows the semaphore's step by step; what differs is only that a free slot with nobody in line
is taken without a coroutine.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    __slots__ = ("_waiters", "free")

    def __init__(self, limit: int) -> None:
        self.free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """A free slot now (True: ``release`` it when done); False if none is free or a run is in line."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """A slot, in line if need be (then ``release`` it); cancelled, it holds none. ``loop``: the running
        loop, when the caller has it (asking for it is a getpid system call on CPython 3.11; at saturation
        every run waits in line)."""
        if self.free > 0 and all(w.cancelled() for w in self._waiters):  # (in line: only the cancelled)
            self.free -= 1
            return
        waiter: asyncio.Future[None] = (loop or asyncio.get_running_loop()).create_future()
        self._waiters.append(waiter)
        try:
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        except asyncio.CancelledError:
            if not waiter.cancelled():  # handed a slot, cancelled before it ran: the next in line has it
                self.free += 1
                self._hand_on()
            raise
        if self.free > 0:
            self._hand_on()

    def release(self) -> None:
        self.free += 1
        self._hand_on()

    def _hand_on(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():  # (done: handed a slot already, or cancelled and leaving the line)
                self.free -= 1
                waiter.set_result(None)
                return
