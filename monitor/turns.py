"""Work done a slice at a time on the event loop: a generator yields between its slices and is driven here,
the loop handed back (one turn: heartbeats, probes, /healthz run) between two of them. The cluster works a
view's placement out (monitor/cluster/replica.py) and drops the series of integrations moved away
(monitor/cluster_runtime.py) this way."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")


async def in_turns(steps: Generator[None, None, T]) -> T:
    """Run ``steps`` to its end, a turn of the loop between two of its yields; what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(0)
