"""Deadlines of many calls in flight on one timer: ``asyncio.timeout_at``'s behaviour, for a fraction of
its cost on a path taken once per call.

``asyncio.timeout_at`` schedules a timer per use and cancels it at the exit (a ``TimerHandle``, the
event loop's heap, a copied context, half a dozen Python frames): some 35,000 instructions per call on
a running loop, a quarter of what the kit's middleware added to a call (bench/kit_path.py). The calls
of one integration share its timeout, so their deadlines arrive nearly in order: here one timer, set
for the earliest deadline of a scope in flight, serves them all, and entering or leaving a scope only
adds it to a set or takes it out. When the timer fires, the scopes whose deadline has come are
expired — their task is cancelled, and the ``CancelledError`` leaves the scope as ``TimeoutError`` —
and the timer is set again for the earliest deadline left.

The cancellation is told apart from any other exactly as ``asyncio.timeout`` does: the scope notes the
task's pending cancellations when it is entered; at the exit, after its own cancellation is taken back
(``Task.uncancel``), a ``CancelledError`` with no other cancellation pending becomes ``TimeoutError``,
and any other is left to propagate.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType


class DeadlineScope:
    """``with DeadlineScope(deadlines, when):`` — raises ``TimeoutError`` out of the block if the running
    task is still inside at ``when`` (a ``loop.time()`` value). A plain (not async) context manager:
    entering and leaving it never waits."""

    __slots__ = ("_cancelling", "_owner", "_task", "deadline", "expired")

    def __init__(self, owner: Deadlines, deadline: float) -> None:
        self._owner = owner
        self.deadline = deadline
        self.expired = False
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def __enter__(self) -> DeadlineScope:
        owner = self._owner  # (the owner's bookkeeping done here, not in a method of its: a frame less per call)
        task = owner.current_task()
        if task is None:
            raise RuntimeError("a deadline scope is entered in a task")
        loop = task.get_loop()
        self._task = task
        self._cancelling = task.cancelling()
        owner.scopes.add(self)
        if self.deadline < owner.timer_at or loop is not owner.loop:  # (another loop: its timer is not ours)
            owner.arm(self.deadline, loop)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._owner.scopes.discard(self)
        if self.expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def expire(self) -> None:
        assert self._task is not None
        self.expired = True
        self._task.cancel()


class Deadlines:
    """The scopes in flight on one event loop's timer. One per user (an ``Integration``): not shared
    between threads."""

    def __init__(self) -> None:
        self.scopes: set[DeadlineScope] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        self.loop: asyncio.AbstractEventLoop | None = None

    def current_task(self) -> asyncio.Task[object] | None:
        """``asyncio.current_task()``, without a system call when it can: the task running now, found by the
        loop of this timer when that loop runs one. Asking for the running loop checks the process id (a
        ``getpid`` system call each time on CPython 3.11), and a loop that runs a task in this thread is the
        running loop (a ``Deadlines`` is not shared between threads). Raises as asyncio does outside a loop."""
        task = None if self.loop is None else asyncio.current_task(self.loop)
        return task if task is not None else asyncio.current_task(asyncio.get_running_loop())

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """``asyncio.get_running_loop()``, without a system call when it can (as ``current_task``)."""
        loop = self.loop
        if loop is not None and asyncio.current_task(loop) is not None:
            return loop
        return asyncio.get_running_loop()

    def arm(self, when: float, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.loop, self.timer_at = loop, when
        self._timer = loop.call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        """The timer set for ``when`` is due: expire every scope due by then (the loop runs a timer only
        once its time has come), and set the timer for the earliest deadline left."""
        self._timer, self.timer_at = None, math.inf
        soonest = math.inf
        for scope in [s for s in self.scopes if s.deadline <= when]:
            self.scopes.discard(scope)
            scope.expire()
        for scope in self.scopes:
            soonest = min(soonest, scope.deadline)
        if soonest < math.inf and self.loop is not None:
            self.arm(soonest, self.loop)
