"""A member of a cluster whose Redis comes back empty, on a redis-server of the test's own: the failed runs in
a row kept for the next owner (monitor/cluster/streaks.py) are written back, and a membership Redis lost
between two heartbeats is no reason to give the share away (monitor/cluster/replica.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from redis_servers import OwnRedis
from waiting import until

from alerts.stats import Stats
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.cluster.placement import Change
from monitor.cluster.replica import Cluster
from monitor.cluster.streaks import Streaks
from monitor.metrics import Metrics
from monitor.recorder import Recorder
from monitor.settings import parse_config

CONFIG = """
monitor: {redis_url: 'redis://127.0.0.1:9/0', cluster: {replica_id: a, heartbeat: 100ms, ttl: 1s}}
integrations: {vendor: {checks: [{name: c, kind: http, url: 'http://127.0.0.1:9/'}]}}
"""
STREAK_KEY = "im:cluster:streak:vendor"
EPOCH_KEY = "im:alerts:epoch"


def failure(n: int) -> CheckResult:
    return CheckResult(integration="vendor", check="c", kind="http", ok=False, error_class=None,
                       detail=f"run {n}", started_at=float(n), duration=0.01, total_duration=0.01)


async def stored(client: redis.asyncio.Redis) -> dict[bytes, bytes]:
    """The streak hash, once it has an entry."""
    return await until(lambda: client.hgetall(STREAK_KEY), f"an entry in {STREAK_KEY}")


async def failed_three_times(client: redis.asyncio.Redis, recorder: Recorder, streaks: Streaks) -> None:
    """vendor/c fails three runs in a row, counted by its owner and stored."""
    for n in range(3):
        result = failure(n)
        recorder.record(result)
        streaks.noted(result)
    assert await stored(client) == {b"c": b"3"}


@pytest.fixture
def changes() -> list[Change]:
    return []


@pytest.fixture
def previous_count() -> int | None:
    """Failed runs in a row of vendor/c a previous owner left in Redis (None: nothing)."""
    return None


@pytest.fixture
async def owner(
    own_redis: OwnRedis, changes: list[Change], previous_count: int | None
) -> AsyncIterator[tuple[redis.asyncio.Redis, Cluster, Recorder, Streaks]]:
    """The only member of a cluster on our own redis-server, owning ``vendor``: (client, its membership,
    recorder, streaks); every change of its share goes to ``changes``."""
    await own_redis.start()
    client = redis.asyncio.Redis(host="127.0.0.1", port=own_redis.port)
    if previous_count is not None:
        await client.hset(STREAK_KEY, "c", previous_count)
    metrics = Metrics()
    recorder = Recorder(metrics, Redactor())
    cluster = Cluster(parse_config(CONFIG, env={}), redis=client, metrics=metrics)
    streaks = Streaks(client, cluster, metrics.probes, recorder.status)

    def changed(change: Change) -> None:  # as the daemon wires it (monitor/cluster_runtime.py)
        changes.append(change)
        streaks.lost(change.integrations_lost)
        streaks.gained(change.integrations_gained)

    cluster.on_change(changed)
    streaks.start()
    await cluster.start()
    try:
        await until(lambda: cluster.owns("vendor"), "a to own vendor")
        yield client, cluster, recorder, streaks
    finally:
        await streaks.close()
        await cluster.close()
        await client.aclose()


async def test_failure_streaks_are_written_back_when_redis_comes_back_empty(
    own_redis: OwnRedis, owner: tuple[redis.asyncio.Redis, Cluster, Recorder, Streaks]
) -> None:
    client, cluster, recorder, streaks = owner
    await failed_three_times(client, recorder, streaks)
    epoch = await client.get(EPOCH_KEY)
    assert epoch is not None  # read by the owner while it had a count in Redis
    await own_redis.stop()
    await until(lambda: cluster.degraded, "a heartbeat to fail")  # a keeps its share
    await own_redis.start()  # on the same port, with nothing in it (no persistence)
    assert await stored(client) == {b"c": b"3"}  # the owner noticed (the epoch changed) and wrote it back
    assert await client.get(EPOCH_KEY) not in (None, epoch) and cluster.owns("vendor")


async def test_a_membership_redis_lost_between_two_heartbeats_takes_no_share_away(
    owner: tuple[redis.asyncio.Redis, Cluster, Recorder, Streaks], changes: list[Change],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, cluster, _, _ = owner
    before = len(changes)
    await client.flushall()  # our own server: Redis as it comes back from a restart without persistence
    await until(lambda: client.zscore("im:cluster:members", "a"), "a to join again (the next heartbeat)",
                holds=lambda score: score is not None)
    # The member is back in Redis once the heartbeat's write is done, before the heartbeat has read the answer
    # and told what it makes of it: wait for the replica's word, not only for Redis.
    await until(lambda: "Redis lost this replica's membership" in caplog.text,
                "a to tell it joined again after Redis lost it")
    await until(lambda: cluster.status()["state"] == "member", "a to be a member again")
    assert changes[before:] == [] and cluster.owns("vendor")  # never paused: nothing lost, nothing to take over


async def test_a_heartbeat_that_fails_because_the_process_stood_still_is_a_pause_not_an_outage(
    owner: tuple[redis.asyncio.Redis, Cluster, Recorder, Streaks], caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP while a heartbeat waits for Redis: on SIGCONT its timeout goes off before the answer is read
    (uvloop runs due timers first). The lease ran out meanwhile, so the others may own the share now: that is
    a pause (own nothing until a heartbeat says where it stands), not an outage (keep everything). Taken for
    an outage, a resumed owner kept speaking for an integration from its stale alert state: the resolve of
    test_cluster_fencing's paused owner went out as a new post, not into the new owner's thread."""
    _, cluster, _, _ = owner
    ttl = cluster.cfg.ttl
    loop = asyncio.get_running_loop()
    beat, frozen = cluster.membership.beat, asyncio.Event()

    async def beat_through_a_standstill(*args: Any, **kwargs: Any) -> Any:
        if not frozen.is_set():
            frozen.set()
            loop.call_soon(time.sleep, ttl + 0.5)  # the whole process stands still while this beat is under way
            await asyncio.sleep(0.05)  # due long before the standstill ends, as the beat's timeout is
        return await beat(*args, **kwargs)

    cluster.membership.beat = beat_through_a_standstill  # type: ignore[method-assign]
    await until(frozen.is_set, "a heartbeat")
    await until(lambda: "stood still" in caplog.text, "the standstill noticed")
    assert not cluster.degraded and not cluster.owns("vendor")  # no outage: nothing held on to
    await until(lambda: cluster.owns("vendor"), "a to own vendor again")
    assert "keeping the current share" not in caplog.text



@pytest.mark.parametrize("previous_count", [5])
async def test_a_count_taken_over_continues_in_the_status_as_in_the_metric(
    owner: tuple[redis.asyncio.Redis, Cluster, Recorder, Streaks]
) -> None:
    """The new owner of an integration continues each check's failed runs in a row from what the previous
    owner stored: /api/status's ``consecutive_failures`` too, not only ``integration_probe_consecutive_failures``
    (they disagreed after every handover: the status entry counted from the takeover)."""
    _, _, recorder, streaks = owner
    series = recorder.metrics.probes.series("vendor", "c")
    await until(lambda: series.streak == 5, "the count seeded")
    for n in range(2):
        result = failure(n)
        recorder.record(result)
        streaks.noted(result)
    status = recorder.status.get("vendor", "c")
    assert series.streak == 7
    assert status is not None and status.as_dict()["consecutive_failures"] == 7


@pytest.mark.parametrize("removed", ["check", "integration"])
async def test_a_reload_that_removes_a_check_forgets_its_count_here_and_in_redis(
    owner: tuple[redis.asyncio.Redis, Cluster, Recorder, Streaks], removed: str
) -> None:
    """A check (or its whole integration) removed by a reload: its count stayed in the tracker's tables and in
    the Redis hash, and a check of the same name added later, taken over, continued the dead one's streak."""
    client, cluster, recorder, streaks = owner
    await failed_three_times(client, recorder, streaks)
    after = CONFIG.replace("{name: c,", "{name: d,") if removed == "check" else CONFIG.replace("vendor", "other")
    config = parse_config(after, env={})
    cluster.on_config(config)  # as the daemon's reload does, then retains what is still configured
    kept = {(i, c.name) for i, c in config.iter_checks() if c.enabled}
    streaks.retain(kept, {("vendor", "c")})
    await until(lambda: client.exists(STREAK_KEY), f"{STREAK_KEY} deleted", holds=lambda found: not found)
    # (the tracker's own tables: what a later count of a check named so would start from)
    tables = (streaks._failing, streaks._pending, streaks._since_gain)
    assert not any(("vendor", "c") in table for table in tables)


def test_the_alert_statistics_continue_a_count_given_before_or_after_the_first_run_here() -> None:
    """``Stats.continue_streak`` (the daemon calls it through ``Recorder.continued`` when the streaks are
    seeded): the probe_down rule's count goes on from the previous owner's, whether the seed comes before
    this replica recorded a run of the check or after it recorded some failures (they are in the count)."""
    def count(stats: Stats) -> int:
        checked = stats.check("vendor", "c")
        assert checked is not None
        return checked.consecutive_failures

    before = Stats()
    before.continue_streak("vendor", "c", 5)
    before.add(failure(10))
    assert count(before) == 6

    after = Stats()
    after.add(failure(10))
    after.continue_streak("vendor", "c", 6)  # the stored 5 and the failure recorded here
    after.add(failure(11))
    assert count(after) == 7

    recovered = Stats()
    recovered.continue_streak("vendor", "c", 5)
    recovered.add(CheckResult(integration="vendor", check="c", kind="http", ok=True, error_class=None, detail="",
                              started_at=10.0, duration=0.01, total_duration=0.01))
    recovered.add(failure(11))
    assert count(recovered) == 1  # a success ended the streak: the next failure starts a new one
