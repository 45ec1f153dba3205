"""monitor/batching_scheduler.py relies on APScheduler 3's private ``AsyncIOScheduler._start_timer``: these
tests fail loudly, naming that module, when an APScheduler upgrade renames the hook, changes its signature
or stops arming the wake-up through it."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta
from importlib.metadata import version

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.batching_scheduler import WAKEUP_SLACK, BatchingScheduler

UPGRADE = "APScheduler changed under monitor/batching_scheduler.py (see its docstring): "


def test_the_hook_is_there_with_the_signature_it_overrides() -> None:
    assert version("apscheduler").split(".")[0] == "3", UPGRADE + "not APScheduler 3 any more"
    hook = getattr(AsyncIOScheduler, "_start_timer", None)
    assert callable(hook), UPGRADE + "AsyncIOScheduler._start_timer is gone"
    assert list(inspect.signature(hook).parameters) == ["self", "wait_seconds"], UPGRADE + "new signature"


async def test_apscheduler_arms_its_wake_up_through_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float | None] = []  # what APScheduler asked our override for
    armed: list[float | None] = []  # what our override passed on to AsyncIOScheduler

    def spy(self: AsyncIOScheduler, wait_seconds: float | None) -> None:
        armed.append(wait_seconds)

    own = BatchingScheduler._start_timer

    def recording(self: BatchingScheduler, wait_seconds: float | None) -> None:
        asked.append(wait_seconds)
        own(self, wait_seconds)

    monkeypatch.setattr(AsyncIOScheduler, "_start_timer", spy)
    monkeypatch.setattr(BatchingScheduler, "_start_timer", recording)
    scheduler = BatchingScheduler(timezone=UTC)
    scheduler.add_job(lambda: None, "date", run_date=datetime.now(UTC) + timedelta(hours=1))
    scheduler.start()
    try:
        await asyncio.sleep(0)  # AsyncIOScheduler processes its jobs in a loop callback
        pending = [w for w in asked if w is not None]
        assert pending, UPGRADE + "the wake-up for a pending job is no longer armed through _start_timer"
        assert 3500 < pending[-1] <= 3600  # the job an hour from now
        assert [w for w in armed if w is not None] == [w + WAKEUP_SLACK for w in pending]
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
