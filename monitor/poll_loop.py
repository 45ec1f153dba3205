"""The read loop of the Redis readers (webhooks, real traffic): one read every interval, back-off after
failed reads (``integration_kit.retry.Backoff``: ``min_backoff`` doubling up to ``max_backoff``), an early
read when woken (a config reload), run under the component's ``Supervisor`` (a crash is logged, counted
and the loop restarted; closing always stops it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from integration_kit.retry import Backoff
from integration_kit.supervisor import Supervisor


class PollLoop:
    def __init__(
        self,
        read_once: Callable[[], Awaitable[bool]],
        *,
        interval: Callable[[], float],
        name: str,
        supervisor: Supervisor,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self._read_once = read_once
        self._interval = interval
        self._name = name
        self._supervisor = supervisor
        self.backoff = Backoff(first=min_backoff, cap=max_backoff)  # .failures: failed reads in a row
        self._wake = asyncio.Event()

    def start(self) -> None:
        if not self._supervisor.running(self._name):
            self._supervisor.start(self._name, self._run)

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        await self._supervisor.close(grace=0.0)

    async def _run(self) -> None:
        while True:
            if await self._read_once():
                self.backoff.succeeded()
                delay = self._interval()
            else:
                delay = self.backoff.failed()
            self._wake.clear()
            if not await self._supervisor.sleep(delay, wake=self._wake):
                return
