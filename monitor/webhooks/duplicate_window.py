"""The share of duplicate webhook deliveries over a sliding window, from the ledger's cumulative totals."""

from __future__ import annotations

from collections import deque


class DuplicateWindow:
    """Share of duplicates among the deliveries of the last ``window`` seconds, from cumulative totals.

    Keeps the samples of the window plus the newest one before it (the baseline). Totals going down
    (keys deleted, Redis restarted without persistence) start the window afresh.
    """

    __slots__ = ("_samples", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, at: float, received: int, duplicates: int) -> None:
        if self._samples:
            _, last_received, last_duplicates = self._samples[-1]
            if received < last_received or duplicates < last_duplicates:
                self._samples.clear()
        self._samples.append((at, received, duplicates))
        while len(self._samples) >= 2 and self._samples[1][0] <= at - self.window:
            self._samples.popleft()

    def ratio(self, min_events: int) -> tuple[float | None, int]:
        """(duplicates ÷ deliveries, deliveries) over the window; ratio None below ``min_events``."""
        if len(self._samples) < 2:
            return None, 0
        _, base_received, base_duplicates = self._samples[0]
        _, received, duplicates = self._samples[-1]
        events = received - base_received
        if events < max(1, min_events):
            return None, events
        return (duplicates - base_duplicates) / events, events
