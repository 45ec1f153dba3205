"""monitor/long_lived.py: the daemon's long-lived objects frozen out of the cycle collector's sight once the
first runs have built them, again for jobs added later; a reload collects what the old config left."""

from __future__ import annotations

import asyncio
import gc
import signal
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_support import daemon, daemon_config, need_console_script, route_target, write
from targets import Reply, Target
from waiting import until

from integration_kit.tasks import stop
from monitor import long_lived

NOW = 1_000_000.0


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(long_lived, "POLL_SECONDS", 0.001)


class Jobs:
    """The scheduler's ``settled_at`` as the keeper sees it, with a count of how often it looked."""

    def __init__(self, settled_at: float = float("-inf")) -> None:
        self.settled_at = settled_at
        self.looks = 0

    def __call__(self) -> float:
        self.looks += 1
        return self.settled_at


async def looks_more(jobs: Jobs, n: int) -> None:
    seen = jobs.looks
    await until(lambda: jobs.looks >= seen + n, f"{n} more looks at settled_at")


async def test_freezes_once_the_jobs_settled_and_again_for_jobs_added_later(fast_polls: None) -> None:
    jobs, freezes = Jobs(), []
    keeper = asyncio.create_task(
        long_lived.keep_frozen(jobs, clock=lambda: NOW, freeze_now=lambda: freezes.append(jobs.settled_at))
    )
    try:
        await looks_more(jobs, 5)
        assert freezes == []  # no job yet
        jobs.settled_at = NOW - 1  # the first runs are done
        await until(lambda: len(freezes) == 1, "a freeze once settled")
        await looks_more(jobs, 5)
        assert freezes == [NOW - 1]  # nothing new: not again
        jobs.settled_at = NOW - 0.5  # a reload added checks, and their first runs are done too
        await until(lambda: len(freezes) == 2, "a freeze for the new jobs")
        assert freezes == [NOW - 1, NOW - 0.5]
    finally:
        await stop(keeper)


async def test_jobs_added_while_waiting_are_waited_for_too() -> None:
    """settled_at moves on while the keeper sleeps until the first target: one freeze, after the later one."""
    targets = iter([NOW + 0.05, NOW + 0.1, NOW + 0.1])  # asked: before the sleep, after it, after the next
    freezes: list[float] = []
    asked: list[float] = []

    def settled_at() -> float:
        asked.append(next(targets, NOW + 0.1))
        return asked[-1]

    keeper = asyncio.create_task(
        long_lived.keep_frozen(settled_at, clock=lambda: NOW, freeze_now=lambda: freezes.append(asked[-1]))
    )
    try:
        await until(lambda: len(freezes) == 1, "one freeze")
        assert freezes == [NOW + 0.1] and asked[:3] == [NOW + 0.05, NOW + 0.1, NOW + 0.1]
    finally:
        await stop(keeper)


class Cycle:
    """A container in a reference cycle: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's objects back in the collector's sight


def collected(ref: Callable[[], object]) -> bool:
    gc.collect()
    return ref() is None


def test_a_frozen_cycle_outlives_collections_until_the_reload_refreeze(unfrozen: None) -> None:
    """What freezing costs and what bounds it: a cycle frozen alive is not freed by a collection once
    it is garbage; the reload's refreeze (unfreeze, collect, freeze) frees it."""
    young = Cycle()
    young_ref = weakref.ref(young)
    del young
    long_lived.freeze()  # collects the young garbage first: not frozen with the rest
    assert young_ref() is None and gc.get_freeze_count() > 0

    alive = Cycle()
    alive_ref = weakref.ref(alive)
    long_lived.freeze()
    del alive
    assert not collected(alive_ref)
    long_lived.refreeze()
    assert alive_ref() is None and gc.get_freeze_count() > 0


async def test_the_daemon_freezes_after_its_first_runs_and_after_a_reload_adds_checks(
    target: Target, tmp_path: Path
) -> None:
    need_console_script()
    route_target(target)
    later = target.route("/later", Reply(json={"data": {"id": "later"}}))
    config = write(tmp_path / "monitor.yaml", daemon_config(target, interval="1s"))
    async with daemon(config) as d:
        # The checks' first runs within 2 s, each deadline 2 s + the scheduler's 5 s margin.
        await until(lambda: d.log.count("first runs done") == 1, "the freeze after the first runs", within=60)
        extra = (
            "  more:\n    checks:\n"
            f"      - {{name: later, kind: http, url: '{later}', interval: 1s, timeout: 1s}}\n"
        )
        write(config, daemon_config(target, interval="1s", extra=extra))
        d.proc.send_signal(signal.SIGHUP)
        await until(lambda: len(target.hits("/later")) > 0 and d.log.count("first runs done") == 2,
                    "the freeze after the added check's first run", within=60)
        hits = len(target.hits("/later"))
        await until(lambda: len(target.hits("/later")) > hits + 2, "probes running on after the freezes")
        assert await d.finish(signal.SIGTERM) == 0
    assert "Traceback" not in d.log
