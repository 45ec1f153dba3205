"""A change of the cluster's view, worked out ahead: the placement of an announced join or leave, or of a member
that stopped beating, is computed a slice at a time before its instant (``Cluster._anticipate``), so at the
instant the replica only switches to it. The placement in slices is the same function of the view as in one
go (replicas agree without talking), and a guess that does not come true is not used. What the listeners of a
change do for each check of the integrations that moved away is done a slice at a time too."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import until

from monitor import cluster_runtime
from monitor.cluster import placement
from monitor.cluster.placement import Assignment, Change, Solo, check_id, shard_key
from monitor.cluster.rendezvous import owner, owners
from monitor.cluster.replica import Cluster
from monitor.cluster.view import Member
from monitor.cluster_runtime import ClusterRuntime
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)


def fleet_config(sizes: list[int], disabled: set[int], group_by_integration: bool = True) -> Config:
    lines = ["monitor: {redis_url: 'redis://127.0.0.1:1/0', cluster: {replica_id: r0}}", "integrations:"]
    n = 0
    for i, size in enumerate(sizes):
        lines += [f"  i{i}:", "    checks:"] if size else [f"  i{i}:", "    checks: []"]
        for j in range(size):
            enabled = "false" if n in disabled else "true"
            lines.append(f"      - {{name: c{j}, kind: http, url: 'https://x.example/{j}', enabled: {enabled}}}")
            n += 1
    if not group_by_integration:
        lines.append("alerting: {group_by: [alert]}")
    return parse_config("\n".join(lines) + "\n", env={})


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=6), disabled=st.sets(st.integers(0, 70)),
       members=st.lists(names, max_size=5, unique=True), grouped=st.booleans(), slice_size=st.integers(1, 7))
def test_the_placement_in_slices_is_the_placement_of_the_view(
    sizes: list[int], disabled: set[int], members: list[str], grouped: bool, slice_size: int
) -> None:
    config = fleet_config(sizes, disabled, grouped)
    view = tuple(sorted(members))
    me = view[0] if view else "r0"
    original, placement.CHECKS_A_SLICE = placement.CHECKS_A_SLICE, slice_size
    try:
        steps, pauses = Assignment.in_slices(config, view, me), 0
        while True:
            try:
                next(steps)
                pauses += 1
            except StopIteration as done:
                sliced = done.value
                break
    finally:
        placement.CHECKS_A_SLICE = original
    enabled = [check_id(i, c.name) for i, c in config.iter_checks() if c.enabled]
    expected_checks = {cid: owner(cid, view) or "" for cid in enabled} if view else {}
    expected_owners = ({i: owner(shard_key(i, config.alerting.group_by), view) or "" for i in config.integrations}
                       if view else {})
    for assignment in (sliced, Assignment.compute(config, view, me)):
        assert assignment.members == view
        assert dict(assignment.check_owner) == expected_checks
        assert dict(assignment.integration_owner) == expected_owners
        assert assignment.share == frozenset(cid for cid, who in expected_checks.items() if who == me)
    assert pauses == (len(enabled) // slice_size if view else 0)  # a pause every slice_size checks placed


@given(keys=st.lists(names, max_size=30, unique=True), members=st.lists(names, max_size=6, unique=True))
def test_owners_of_many_keys_at_once_are_each_key_s_owner(keys: list[str], members: list[str]) -> None:
    assert owners(keys, members) == ({key: owner(key, members) for key in keys} if members else {})


NOW = 1000.0


def cluster_of(config: Config) -> Cluster:
    return Cluster(config, redis=redis.asyncio.Redis(host="127.0.0.1", port=1), metrics=Metrics(), clock=lambda: NOW)


def member(cluster: Cluster, name: str, *, active_at: float = 0.0, expires_at: float = NOW + 10,
           leaving_at: float | None = None) -> Member:
    return Member(id=name, incarnation=f"{name}-1", joined_at=0.0, active_at=active_at, expires_at=expires_at,
                  leaving_at=leaving_at, fleet=cluster.fleet)


async def worked_out_ahead(cluster: Cluster) -> None:
    cluster._anticipate(NOW)
    task = cluster._ahead_task
    assert task is not None  # the guess is being worked out
    cluster._anticipate(NOW)  # the next heartbeat, the same guess: not begun again (on a busy loop, never done)
    assert cluster._ahead_task is task
    await asyncio.wait({task})


@pytest.mark.parametrize("change", ["a join", "a graceful leave", "a member that stopped beating"])
async def test_an_announced_change_is_worked_out_before_its_instant_and_only_switched_to_then(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fleet_config([40] * 5, set())
    cluster = cluster_of(config)
    steady = [member(cluster, "r0"), member(cluster, "r1")]
    cluster._records = tuple(steady)
    cluster._apply(NOW, members=("r0", "r1"))
    if change == "a join":
        cluster._records = (*steady, member(cluster, "r2", active_at=NOW + 3))
        at, view = NOW + 3.01, ("r0", "r1", "r2")
    elif change == "a graceful leave":
        cluster._records = (steady[0], member(cluster, "r1", leaving_at=NOW + 3))
        at, view = NOW + 3.01, ("r0",)
    else:  # its lease, last renewed 5 s ago (heartbeat 2 s, TTL 10 s), runs out in 5 s unless it beats again
        cluster._records = (steady[0], member(cluster, "r1", expires_at=NOW + 5))
        at, view = NOW + 5.01, ("r0",)
    await worked_out_ahead(cluster)
    expected = Assignment.compute(config, view, "r0")
    changes = []
    cluster.on_change(changes.append)

    def not_at_the_instant(*args: object) -> Assignment:
        raise AssertionError("the placement was worked out at the instant of the change, in one go")

    monkeypatch.setattr(Assignment, "compute", not_at_the_instant)
    cluster._apply(at)
    assert cluster.members == view
    assert cluster.share == expected.share
    assert dict(cluster._assignment.check_owner) == dict(expected.check_owner)
    assert dict(cluster._assignment.integration_owner) == dict(expected.integration_owner)
    assert len(changes) == 1 and changes[0]


async def test_a_guess_that_does_not_come_true_is_not_used() -> None:
    config = fleet_config([40] * 5, set())
    cluster = cluster_of(config)
    steady = [member(cluster, "r0"), member(cluster, "r1")]
    cluster._records = tuple(steady)
    cluster._apply(NOW, members=("r0", "r1"))
    cluster._records = (steady[0], member(cluster, "r1", expires_at=NOW + 5))  # r1 missed heartbeats…
    await worked_out_ahead(cluster)
    cluster._records = tuple(steady)  # …beat again: the guess is not kept
    cluster._anticipate(NOW)
    assert cluster._ahead is None and cluster._ahead_task is not None and cluster._ahead_task.done()
    cluster._records = (*steady, member(cluster, "r2", active_at=NOW + 3))  # r2 joins
    cluster._apply(NOW + 3.01)
    assert cluster.members == ("r0", "r1", "r2")
    assert cluster.share == Assignment.compute(config, ("r0", "r1", "r2"), "r0").share
    # A reload between the guess and the instant: the placement of the new config, not of the old one.
    cluster._records = (*steady, member(cluster, "r2"), member(cluster, "r3", active_at=NOW + 3))
    await worked_out_ahead(cluster)
    reloaded = fleet_config([40] * 6, set())
    cluster.on_config(reloaded)  # (the others reloaded too: their records carry the new config's fingerprint)
    cluster._records = (*(member(cluster, m) for m in ("r0", "r1", "r2")), member(cluster, "r3", active_at=NOW + 3))
    cluster._apply(NOW + 3.01)
    assert cluster.members == ("r0", "r1", "r2", "r3")
    assert cluster.share == Assignment.compute(reloaded, ("r0", "r1", "r2", "r3"), "r0").share


class Recorder:
    """The recorder's ``forget``, each call noted with the loop's turn it came in."""

    def __init__(self) -> None:
        self.turn = 0
        self.forgotten: list[tuple[int, str, str]] = []

    def forget(self, integration: str, check: str) -> None:
        self.forgotten.append((self.turn, integration, check))

    async def count_turns(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turn += 1


async def test_the_series_of_integrations_moved_away_go_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third of 50,000 checks forgotten in one go held the loop ~0.07 s at a change of view. One moved back
    before its turn came is forgotten at once, before a result of its can be recorded here again."""
    monkeypatch.setattr(cluster_runtime, "CHECKS_FORGOTTEN_A_TURN", 10, raising=False)
    config = fleet_config([4] * 8, set())
    runtime = ClusterRuntime(config, Solo("r0"))
    recorder = Recorder()
    changed = runtime._changed(None, recorder)  # type: ignore[arg-type]
    counting = asyncio.get_running_loop().create_task(recorder.count_turns())
    try:
        changed(Change(integrations_lost=frozenset(f"i{i}" for i in range(7))))
        changed(Change(integrations_gained=frozenset({"i6"})))  # back here before its series went
        assert {(i, c) for _, i, c in recorder.forgotten} <= {("i6", f"c{j}") for j in range(4)}
        back = [(i, c) for _, i, c in recorder.forgotten]
        await until(lambda: len(recorder.forgotten), "every moved check forgotten", holds=lambda n: n >= 28)
        await runtime.close()
    finally:
        counting.cancel()
    assert sorted(back) == [("i6", f"c{j}") for j in range(4)]  # at once, within the change that brought it back
    assert sorted((i, c) for _, i, c in recorder.forgotten) == sorted(
        (f"i{i}", f"c{j}") for i in range(7) for j in range(4))
    per_turn = Counter(turn for turn, _, _ in recorder.forgotten[len(back):])  # (the task's)
    assert len(per_turn) >= 2 and max(per_turn.values()) <= 10 + 4 - 1  # (an integration's checks in one turn)
