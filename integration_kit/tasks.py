"""Stopping a background task: cancel it and wait until it has unwound (its ``finally`` blocks ran)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None or a finished task is fine) and wait for it; its cancellation is not re-raised
    here, any other exception it ends with is."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
