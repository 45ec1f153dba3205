"""A /metrics scrape being written goes before the alert evaluation's slices on the event loop.

Why: both hand the loop back every ~5 ms (the scrape between pieces, the evaluation between slices), so
a scrape written while a full evaluation runs shares the loop with it turn for turn and takes about
twice as long (10,000 checks: a full pass is ~0.3-0.7 s of slices, a scrape ~0.1 s; bench/scrape.py
``--evaluating``). Both are on a fixed beat (Prometheus' scrape interval, ``evaluation_interval``), so a
daemon whose phase makes them meet has every scrape slow, not one now and then. A scrape has a client
waiting for it under a timeout; an evaluation that ends a tenth of a second later changes nothing. So
while a scrape is written, the evaluation's hand-backs (``hand_back``) wait for it to end; the probes
are not held (they run between the scrape's pieces as before).

For at most ``limit`` seconds per scrape: a scrape that takes longer (a slow or stalled client: its
writes wait for the socket, not for the loop) does not hold the evaluation any longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

PRIORITY_SECONDS = 2.0  # a 50,000-check scrape takes ~1.3 s on a quiet machine (bench/README.md)


class ScrapePriority:
    def __init__(self, limit: float = PRIORITY_SECONDS) -> None:
        self.limit = limit
        self._ends: list[float] = []  # per scrape being written: when its priority ends (monotonic)
        self._waiting: list[asyncio.Future[None]] = []

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around the writing of one scrape."""
        end = time.monotonic() + self.limit
        self._ends.append(end)
        try:
            yield
        finally:
            self._ends.remove(end)
            if not self._ends:
                waiting, self._waiting = self._waiting, []
                for future in waiting:
                    if not future.done():
                        future.set_result(None)

    async def hand_back(self) -> None:
        """One turn of the loop for everything else; then, while a scrape is written (within its
        priority), wait until it is done."""
        await asyncio.sleep(0)
        while self._ends and (left := max(self._ends) - time.monotonic()) > 0:
            future = asyncio.get_running_loop().create_future()
            self._waiting.append(future)
            try:
                async with asyncio.timeout(left):
                    await future
            except TimeoutError:
                with contextlib.suppress(ValueError):  # (gone if the scrape ended meanwhile)
                    self._waiting.remove(future)
