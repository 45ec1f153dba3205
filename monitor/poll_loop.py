"""The read loop of the Redis readers (webhooks, real traffic): one read every interval, backoff after
failed reads (``min_backoff`` doubling up to ``max_backoff``), an early read when woken (a config
reload), and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from integration_kit.tasks import stop


class PollLoop:
    def __init__(
        self,
        read_once: Callable[[], Awaitable[bool]],
        *,
        interval: Callable[[], float],
        name: str,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self._read_once = read_once
        self._interval = interval
        self._name = name
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._failures = 0  # consecutive failed reads
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop(task)

    async def _run(self) -> None:
        while True:
            ok = await self._read_once()
            self._failures = 0 if ok else self._failures + 1
            delay = self._interval() if ok else min(self._max_backoff, self._min_backoff * 2 ** (self._failures - 1))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the event is
                # set (close() then waits forever: found with the cluster, which wakes readers on a handover).
                async with asyncio.timeout(delay):
                    await self._wake.wait()
