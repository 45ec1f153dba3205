"""Stopping a background task: cancel it and wait until it has unwound (its ``finally`` blocks ran).

One cancellation is not always enough: on Python 3.11 ``asyncio.wait_for`` (redis-py writes with it)
returns its inner result and drops a ``CancelledError`` that arrives in the same loop iteration
(python/cpython#86296), so a task cancelled once may simply go on — and a ``stop`` that cancels once and
then awaits, waits forever (that hung the daemon's shutdown). ``stop`` cancels again until the task has
ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_EVERY = 0.1  # seconds between cancellations of a task that has not ended yet
GIVE_UP_AFTER = 30.0  # a task that survives this long of cancelling is left behind (logged)


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None or a finished task is fine) and wait for it, cancelling again while it
    runs on; its cancellation is not re-raised here, any other exception it ends with is."""
    if task is None:
        return
    deadline = time.monotonic() + GIVE_UP_AFTER
    warned = False
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_EVERY)
        if task.done():
            break
        if not warned and task.cancelling() > 1:
            warned = True
            log.warning("task %s ignored a cancellation; cancelling it again", task.get_name())
        if time.monotonic() > deadline:
            log.error("task %s did not stop after %.0fs of cancelling; leaving it behind", task.get_name(),
                      GIVE_UP_AFTER)
            return
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def stop_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """``stop`` every task at once; what they end with is not re-raised (as ``gather(...,
    return_exceptions=True)``, which also marks it retrieved)."""
    await asyncio.gather(*(stop(task) for task in set(tasks)), return_exceptions=True)
