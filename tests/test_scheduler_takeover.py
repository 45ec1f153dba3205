"""A change of this replica's share (a takeover) in the scheduler: its jobs are dropped and added a slice at a
time while the loop keeps turning (a replica's heartbeats share the loop), a later change arriving between
two slices wins, a check that left the share never runs from here, and the catch-up runs of checks taken
over from a crashed replica are spread at FIRST_RUN_RATE a second within their interval, not fired in a burst.

The placement is a stand-in with the ``Placement`` methods the scheduler asks (monitor/cluster/placement.py):
which checks this replica probes, and until when their previous prober ran the ones it took over."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from test_scheduler import Runner, config, make
from waiting import until

from monitor import job_sync
from monitor.cluster.grid import GridTrigger
from monitor.first_runs import FIRST_RUN_RATE
from monitor.scheduler import Scheduler

SLICE = 5  # JOBS_A_TURN in these tests


class Share:
    """The checks this replica probes, as the cluster tells the scheduler."""

    clustered = True
    degraded = False
    me = "r1"

    def __init__(self, checks: set[str], ran_until: dict[str, float] | None = None) -> None:
        self.checks = checks
        self.ran = ran_until or {}

    def probes(self, check_id: str) -> bool:
        return check_id in self.checks

    def ran_until(self, check_id: str) -> float:
        return self.ran.get(check_id, float("-inf"))

    def may_run(self) -> bool:
        return True


def ids(prefix: str, n: int) -> set[str]:
    return {f"a/{prefix}{i}" for i in range(n)}


def clustered(share: Share, checks: dict[str, list[tuple[str, str]]], runner: Runner) -> Scheduler:
    sched, _, _ = make(config(checks), runner)
    sched.use_placement(share)  # type: ignore[arg-type]
    return sched


class Turns:
    """Counts the loop's turns (a task that yields every turn) and, per turn, the jobs added and removed."""

    def __init__(self, sched: Scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
        self.turn = 0
        self.added: list[tuple[int, str]] = []  # (turn, job id)
        self.removed: list[int] = []
        aps = sched._aps
        add_job, remove_job = aps.add_job, aps.remove_job

        def adding(*args: Any, **kwargs: Any) -> Any:
            self.added.append((self.turn, kwargs["id"]))
            return add_job(*args, **kwargs)

        def removing(*args: Any, **kwargs: Any) -> Any:
            self.removed.append(self.turn)
            return remove_job(*args, **kwargs)

        monkeypatch.setattr(aps, "add_job", adding)
        monkeypatch.setattr(aps, "remove_job", removing)

    @contextmanager
    def ticking(self) -> Iterator[None]:
        async def tick() -> None:
            while True:
                self.turn += 1
                await asyncio.sleep(0)

        task = asyncio.get_running_loop().create_task(tick())
        try:
            yield
        finally:
            task.cancel()

    def most_in_one_turn(self, since: int = 0) -> int:
        per_turn = Counter(t for t, _ in self.added[since:]) + Counter(self.removed)
        return max(per_turn.values(), default=0)


async def test_a_takeover_drops_and_adds_its_jobs_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A takeover of 16,000+ checks added its jobs in one go from the cluster's listener: the loop held for
    seconds, the replica's heartbeats waited, its lease ran out and the fleet churned (bench/README.md).
    Each turn of the loop now drops or adds at most JOBS_A_TURN jobs."""
    monkeypatch.setattr(job_sync, "JOBS_A_TURN", SLICE)
    share = Share(ids("c", 20))
    runner = Runner()
    sched = clustered(share, {"a": [(f"c{i}", "1h") for i in range(60)]}, runner)
    sched.start()
    turns = Turns(sched, monkeypatch)
    try:
        await until(lambda: set(runner.calls) == ids("c", 20), what="the first share's runs")
        with turns.ticking():
            share.checks = ids("c", 60) - ids("c", 10)  # 10 lost, 40 gained
            sched.reshard()
            await until(lambda: sched.status()["jobs"] == 50 and len(turns.added) == 40, what="the new share's jobs")
        assert {sched._aps.get_job(j) is not None for j in share.checks} == {True}
        assert len(turns.removed) == 10
        assert turns.most_in_one_turn() <= SLICE, (turns.added, turns.removed)
        await until(lambda: set(runner.calls) == share.checks | ids("c", 10), what="every check of both shares ran")
    finally:
        await sched.stop(1.0)


async def test_a_change_of_share_between_two_slices_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second change arrives while the first one's jobs are still being added: from then on only jobs of
    the second share are added (the first sync stops at the end of its slice), and the jobs end up being
    exactly the second share's."""
    monkeypatch.setattr(job_sync, "JOBS_A_TURN", SLICE)
    share = Share(set())
    sched = clustered(share, {"a": [(f"c{i}", "1h") for i in range(60)]}, Runner())
    sched.start()
    turns = Turns(sched, monkeypatch)
    first_slice = asyncio.Event()
    add_job = sched._aps.add_job  # (Turns' count)

    def adding(*args: Any, **kwargs: Any) -> Any:
        job = add_job(*args, **kwargs)
        if len(turns.added) == SLICE:
            first_slice.set()  # the sync hands the loop back after this job: the change comes then
        return job

    monkeypatch.setattr(sched._aps, "add_job", adding)
    try:
        with turns.ticking():
            share.checks = ids("c", 40)
            sched.reshard()
            await first_slice.wait()
            second = len(turns.added)
            assert second == SLICE
            share.checks = ids("c", 60) - ids("c", 30)  # half of what the first change gained, now elsewhere
            sched.reshard()
            await until(lambda: set(sched._jobs) == share.checks, what="the second share's jobs")
        late = [jid for _, jid in turns.added[second:] if jid not in share.checks]
        assert not late, f"jobs of the superseded share added after the change: {late}"
        assert {j.id for j in sched._aps.get_jobs()} == share.checks
    finally:
        await sched.stop(1.0)


async def test_a_check_that_left_the_share_does_not_run_here_while_its_job_waits_to_be_dropped() -> None:
    """Between a change of share and the slice that drops a lost check's job, the job may come due: the run
    does not probe (the check's new prober runs it)."""
    share = Share(ids("c", 2))
    runner = Runner()
    sched = clustered(share, {"a": [("c0", "1h"), ("c1", "1h")]}, runner)
    sched.start()
    try:
        await until(lambda: set(runner.calls) == ids("c", 2), what="the first runs")
        share.checks = {"a/c1"}  # c0 moved away; its job is still here
        await sched._run("a/c0")
        await sched._run("a/c1")
        assert runner.calls == Counter({"a/c0": 1, "a/c1": 2})
    finally:
        await sched.stop(1.0)


@pytest.mark.parametrize(("checks", "interval"), [(400, "1h"), (400, "1s")])
async def test_catch_up_runs_are_spread_at_the_first_run_rate_within_their_interval(
    checks: int, interval: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks taken over from a crashed replica with a run due since it last ran them are caught up on at
    FIRST_RUN_RATE a second (a burst 1 ms apart was probes, results and alert work at once on a loop whose
    heartbeats waited), and each within its interval: the README's "picked up within TTL + one interval"."""
    share = Share(set())
    sched = clustered(share, {"a": [(f"c{i}", interval) for i in range(checks)]}, Runner(delay=3600))
    sched.start()
    firsts: list[float] = []
    add_job = sched._aps.add_job

    def adding(*args: Any, **kwargs: Any) -> Any:
        firsts.append(kwargs["next_run_time"].timestamp())
        return add_job(*args, **kwargs)

    monkeypatch.setattr(sched._aps, "add_job", adding)
    try:
        taken = ids("c", checks)
        seconds = 3600.0 if interval == "1h" else 1.0
        now = time.time()
        # Their previous prober ran them until before their last due run: each has a run to catch up on.
        share.ran = {j: GridTrigger(j, seconds, 0.0).previous(now) - 0.001 for j in taken}
        share.checks = taken
        taken_at = time.time()
        sched.reshard()
        await until(lambda: set(sched._jobs) == taken, what="the jobs of the checks taken over")
        firsts.sort()
        window = min(seconds, checks / FIRST_RUN_RATE)
        assert firsts[-1] - taken_at <= window + 0.5  # (the test's own turns between taken_at and the adding)
        assert firsts[-1] - firsts[0] >= window * (checks - 2) / checks, (firsts[0], firsts[-1], window)
        gaps = [b - a for a, b in itertools.pairwise(firsts)]
        assert max(gaps) <= 2 * window / checks
    finally:
        await sched.stop(0.0)
