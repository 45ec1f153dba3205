"""An overloaded scheduler: runs that cannot start are skipped, counted and summarised, not logged one
WARNING per run (thousands a second at 10,000 checks, and a tenth of the CPU when it is scarce)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_scheduler import Runner, config, make

from monitor import scheduler as scheduler_module


async def test_skipped_runs_are_summarised_not_logged_per_run(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "SKIPPED_SUMMARY_EVERY", 0.3)
    # Every 50 ms, a probe that takes 400 ms: most runs find the previous one still going.
    runner = Runner(delay=0.4)
    sched, recorded, _ = make(config({"a": [("slow", "50ms")]}), runner)
    with caplog.at_level(logging.INFO):
        sched.start()
        try:
            await asyncio.sleep(1.0)
        finally:
            await sched.stop(2.0)
    per_run = [r for r in caplog.records if r.name.startswith("apscheduler") and r.levelno >= logging.WARNING]
    assert per_run == []
    ours = [r.getMessage() for r in caplog.records if r.name == "monitor.scheduler"]
    summaries = [message for message in ours if "skipped" in message]
    assert summaries, "no summary of the skipped runs"
    assert "previous run was still waiting" in summaries[0]
    # The runs that did happen, never overlapping (the skipped ones were skipped, not run alongside).
    assert len(recorded) >= 1 and runner.max_active["a/slow"] == 1
