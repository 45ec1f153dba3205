"""Config reloads of a component whose ``on_config`` hook is synchronous but whose rebuild is not: each
rebuild runs as a task after the previous one finished, so reloads apply one at a time, in order, and a
failing one is logged while the previous config keeps running."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class OrderedReloads:
    def __init__(self, name: str) -> None:
        self._name = name  # what is reloaded, for the task name and the log
        self._last: asyncio.Task[None] | None = None

    def submit(self, apply: Callable[[], Awaitable[None]]) -> None:
        previous = self._last

        async def reload() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await apply()
            except Exception:
                log.exception("applying the new %s config failed; the previous one keeps running", self._name)

        self._last = asyncio.get_running_loop().create_task(reload(), name=f"{self._name}-reload")

    async def wait(self) -> None:
        """Until every submitted reload has finished (before closing)."""
        if self._last is not None:
            await asyncio.gather(self._last, return_exceptions=True)
