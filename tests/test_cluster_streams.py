"""Results travelling to their integration's owner (monitor/cluster/streams.py), on a real Redis with real
memberships: one stream entry per owner and flush, in order, nothing lost unnoticed, nothing twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
import redis.asyncio
from redis_servers import OwnRedis, ReplyHoldingProxy
from waiting import until

from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.cluster import streams as streams_module
from monitor.cluster.placement import Assignment
from monitor.cluster.replica import Cluster
from monitor.cluster.result_codec import encode_batch
from monitor.cluster.streams import MAX_ENTRY, ResultStreams
from monitor.metrics import Metrics
from monitor.settings import parse_config

INTEGRATIONS = [f"vendor{n}" for n in range(8)]
NEVER = 3600.0  # a flush interval the tests never reach: they flush themselves


def config_text(prefix: str, name: str, moved: str = "") -> str:
    """``moved``: an integration whose check ``c`` requests another URL (a reload that retargets it)."""
    integrations = ", ".join(
        f"{i}: {{checks: [{{name: c, kind: http, url: 'http://127.0.0.1:9/{'elsewhere' if i == moved else ''}'}}]}}"
        for i in INTEGRATIONS)
    return (f"monitor: {{redis_url: 'redis://127.0.0.1:6379/0', cluster: {{replica_id: {name}, heartbeat: 100ms, "
            f"ttl: 1s, key_prefix: '{prefix}cluster:'}}}}\nintegrations: {{{integrations}}}\n")


def result(integration: str, n: int) -> CheckResult:
    return CheckResult(integration=integration, check="c", kind="http", ok=n % 3 != 0, error_class=None,
                       detail=f"run {n}", started_at=float(n), duration=0.01, total_duration=0.01)


@dataclass
class Replica:
    cluster: Cluster
    streams: ResultStreams
    metrics: Metrics
    recorded: list[CheckResult] = field(default_factory=list)

    def count(self, path: str) -> float:
        return self.metrics.registry.get_sample_value("integration_monitor_cluster_results_total",
                                                      {"path": path}) or 0.0

    def runs(self, integration: str) -> list[float]:
        return [r.started_at for r in self.recorded if r.integration == integration]


@pytest.fixture
async def replicas(shared_redis: redis.asyncio.Redis, prefix: str) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    """``await start(name, flush_every=…, streams=True)``: a member of a cluster on the shared Redis (its
    heartbeats running) and its result streams, started unless ``streams=False`` (the test then reads)."""
    async with AsyncExitStack() as stack:
        async def start(name: str, *, flush_every: float = NEVER, streams: bool = True,
                        client: redis.asyncio.Redis | None = None,
                        streams_client: redis.asyncio.Redis | None = None) -> Replica:
            """``client``: the Redis of its membership (the shared one by default); ``streams_client``:
            the one its result streams use (``client`` by default)."""
            config = parse_config(config_text(prefix, name), env={})
            metrics = Metrics()
            client = client or shared_redis
            cluster = Cluster(config, redis=client, metrics=metrics)
            recorded: list[CheckResult] = []
            replica = Replica(cluster, ResultStreams(streams_client or client, cluster, record=recorded.append,
                                                     redactor=Redactor(), metrics=metrics, flush_every=flush_every),
                              metrics, recorded)
            cluster.on_change(lambda change: replica.streams.taken_over(change.orphaned))  # as the daemon does
            if streams:
                replica.streams.start()
            await cluster.start()
            stack.push_async_callback(cluster.close)
            stack.push_async_callback(replica.streams.close)
            return replica
        yield start


async def two(start: Callable[..., Awaitable[Replica]], a_options: dict[str, object] | None = None,
              **b_options: object) -> tuple[Replica, Replica]:
    """Replicas ``a`` and ``b``, once both see both."""
    a, b = await start("a", **(a_options or {})), await start("b", **b_options)
    await until(lambda: all(m.cluster.members == ("a", "b") and m.cluster.may_run() for m in (a, b)),
                "a and b to agree on the members")
    return a, b


def owned(viewer: Replica, owner: str) -> list[str]:
    """The integrations ``owner`` owns in ``viewer``'s view."""
    return sorted(Assignment.compute(viewer.cluster.config, viewer.cluster.members, owner).owned(owner))


async def send(sender: Replica, integration: str, runs: range) -> None:
    """``sender`` probed these runs of the integration's check, then flushes."""
    for n in runs:
        sender.streams.route(result(integration, n))
    await sender.streams.flush()


async def entries(client: redis.asyncio.Redis, replica: Replica) -> int:
    return int(await client.xlen(replica.streams.stream(replica.cluster.me)))


async def test_results_reach_their_owner_in_order_one_stream_entry_per_flush(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis
) -> None:
    a, b = await two(replicas)
    theirs, mine = owned(a, "b")[0], owned(a, "a")[0]
    for n in range(300):
        a.streams.route(result(theirs, n))
        a.streams.route(result(mine, n))
    assert a.runs(mine) == list(range(300))  # owned here: recorded at once, never sent
    await a.streams.flush()
    assert await entries(shared_redis, b) == 1  # 300 results, one XADD
    await until(lambda: len(b.recorded) == 300, "b to record a's 300 results")
    assert b.runs(theirs) == list(range(300))
    assert (a.count("sent"), b.count("received"), b.count("lost"), b.count("unreadable")) == (300, 300, 0, 0)


async def test_results_trimmed_away_before_the_owner_read_them_are_counted_lost_the_rest_arrive_once_in_order(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis
) -> None:
    a, b = await two(replicas, streams=False)
    theirs = owned(a, "b")[0]
    assert await b.streams.read() == 0  # b starts reading: from here on
    await send(a, theirs, range(10))
    assert await b.streams.read() == 1
    # b falls behind: one flush of 1,200 results takes three entries, and the first is trimmed away
    # before b reads (the stream is capped, and b is far behind).
    await send(a, theirs, range(10, 1210))
    assert await entries(shared_redis, b) == 1 + 3 and MAX_ENTRY == 500
    await shared_redis.xtrim(b.streams.stream("b"), maxlen=2, approximate=False)
    assert await b.streams.read() == 2
    assert b.runs(theirs) == list(range(10)) + list(range(510, 1210))
    assert (b.count("received"), b.count("lost"), b.count("unreadable")) == (710, 500, 0)


async def test_an_unreadable_entry_or_result_is_skipped_and_counted_and_the_rest_arrive(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis
) -> None:
    a, b = await two(replicas)
    theirs = owned(a, "b")[0]
    await send(a, theirs, range(5))
    await until(lambda: len(b.recorded) == 5, "the first batch")
    stream = b.streams.stream("b")
    await shared_redis.xadd(stream, {"x": "not an entry of ours"})
    await shared_redis.xadd(stream, {"s": "other", "q": "0", "n": "1", "b": "[not json"})
    good = json.loads(encode_batch([(result(theirs, 5), 0, None)], Redactor()))[0]
    await shared_redis.xadd(stream, {"s": "other", "q": "1", "n": "2", "b": json.dumps([["x", {}], good])})
    await send(a, theirs, range(6, 10))
    await until(lambda: len(b.recorded) == 10, "everything readable to arrive")
    assert b.runs(theirs) == list(range(10))
    assert (b.count("received"), b.count("unreadable"), b.count("lost")) == (10, 3, 0)


async def test_an_owner_change_before_the_flush_sends_results_to_the_owner_of_the_moment(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis
) -> None:
    a, b = await two(replicas)
    theirs = owned(a, "b")
    for n in range(20):
        a.streams.route(result(theirs[n % len(theirs)], n))
    await b.cluster.leave(5.0)  # b goes while a's results for it wait: a owns everything then
    await until(lambda: a.cluster.members == ("a",), "a to see b gone")
    await a.streams.flush()
    assert sorted(r.started_at for r in a.recorded) == list(range(20))
    assert await entries(shared_redis, b) == 0 and a.count("sent") == 0


async def test_a_result_whose_integration_moved_on_while_it_travelled_is_passed_on_once(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis
) -> None:
    a, b = await two(replicas, flush_every=0.05)
    at_a, at_b = owned(a, "a")[0], owned(a, "b")[0]
    # An entry from a sender whose view was older (it thought b owned both): b keeps its own, passes
    # the other on to a, and keeps one that was passed on once already rather than send it round again.
    batch = [(result(at_a, 0), 0, None), (result(at_b, 1), 0, None), (result(at_a, 2), 1, None),
             (result(at_a, 3), 0, None)]
    await shared_redis.xadd(b.streams.stream("b"), {"s": "stale", "q": 0, "n": 4, "b": encode_batch(batch, Redactor())})
    # b counts what it passed on once Redis confirmed its flush, and a may read the entry before b has that
    # answer (Redis hands a its blocked read as it runs b's XADD): wait for both ends, not for a alone.
    await until(lambda: (len(a.recorded), len(b.recorded), b.count("sent")),
                "results to settle (2 recorded at each end) and b's flush to be confirmed (sent)",
                holds=lambda seen: seen[0] == 2 and seen[1] == 2 and seen[2] > 0)
    assert a.runs(at_a) == [0, 3] and b.runs(at_b) == [1] and b.runs(at_a) == [2]
    assert (b.count("received"), b.count("sent"), a.count("received")) == (4, 2, 2)


@pytest.fixture
async def held_replies(own_redis: OwnRedis) -> AsyncIterator[tuple[redis.asyncio.Redis, ReplyHoldingProxy,
                                                                     redis.asyncio.Redis]]:
    """(a client of our own redis-server, a proxy in front of it that can hold replies back, a client
    through that proxy)."""
    await own_redis.start()
    proxy = ReplyHoldingProxy(own_redis.port)
    await proxy.start()
    direct = redis.asyncio.Redis(host="127.0.0.1", port=own_redis.port)
    proxied = redis.asyncio.Redis(host="127.0.0.1", port=proxy.port)
    try:
        yield direct, proxy, proxied
    finally:
        await proxied.aclose()
        await proxy.close()
        await direct.aclose()


async def test_a_flush_that_timed_out_after_redis_took_it_is_sent_again_and_the_owner_counts_each_result_once(
    held_replies: tuple[redis.asyncio.Redis, ReplyHoldingProxy, redis.asyncio.Redis],
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    direct, proxy, proxied = held_replies
    # a's results go through the proxy; both memberships (and b's reading) talk to Redis directly.
    a, b = await two(replicas, {"client": direct, "streams_client": proxied}, client=direct)
    theirs = owned(a, "b")[0]
    proxy.hold("XADD")
    await send(a, theirs, range(50))  # Redis runs the XADD; its reply comes too late: the flush times out
    assert await entries(direct, b) == 1
    assert a.recorded == [] and (a.count("sent"), a.count("kept")) == (0, 0)  # not recorded here as well
    proxy.release()
    await a.streams.flush()  # the same entry again: same sender, same numbers
    assert await entries(direct, b) == 2 and a.count("sent") == 50
    await until(lambda: b.count("duplicate") == 50, "b to read both entries")
    assert b.runs(theirs) == list(range(50)) and a.recorded == []
    assert (b.count("received"), b.count("lost"), a.count("kept")) == (50, 0, 0)


async def test_results_of_a_failed_flush_whose_owner_left_go_to_the_new_owner_and_nothing_counts_as_lost(
    held_replies: tuple[redis.asyncio.Redis, ReplyHoldingProxy, redis.asyncio.Redis],
    replicas: Callable[..., Awaitable[Replica]],
) -> None:
    direct, proxy, proxied = held_replies
    a, b = await two(replicas, {"client": direct, "streams_client": proxied}, client=direct, streams=False)
    theirs = owned(a, "b")[0]
    proxy.hold("XADD")
    await send(a, theirs, range(5))  # maybe with b, maybe not: b never reads it and leaves
    proxy.release()
    await b.cluster.leave(5.0)
    await until(lambda: a.cluster.members == ("a",), "a to see b gone")
    await a.streams.flush()
    assert a.runs(theirs) == list(range(5))  # a owns everything now: recorded here, once
    assert await entries(direct, b) == 1 and (a.count("sent"), a.count("lost")) == (0, 0)


async def test_a_crashed_owners_unread_results_are_recorded_once_by_each_integrations_new_owner_before_newer_ones(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis
) -> None:
    a, b, c = [await replicas(name, streams=False) for name in "abc"]  # each reads when the test says
    await until(lambda: all(m.cluster.members == ("a", "b", "c") for m in (a, b, c)),
                "a, b and c to agree on the members")
    orphans = owned(a, "c")
    assert orphans
    assert await a.streams.read() == await b.streams.read() == 0  # a and b start reading their streams
    # Two probers sent c results of its integrations that c never read; one entry came twice (a flush that
    # seemed to fail, sent again).
    stream, numbers = c.streams.stream("c"), {"p": 0, "q": 0}
    for integration in orphans:
        for sender, runs in (("p", range(10)), ("q", range(10, 20))):
            fields = {"s": sender, "q": numbers[sender], "n": 10,
                      "b": encode_batch([(result(integration, n), 0, None) for n in runs], Redactor())}
            numbers[sender] += 10
            await shared_redis.xadd(stream, fields)
    await shared_redis.xadd(stream, fields)
    await c.cluster.close()  # gone without announcing a leave, as after a crash: nobody reads its stream now
    await until(lambda: a.cluster.members == b.cluster.members == ("a", "b"), "a and b to see c gone")
    heirs = {integration: a if integration in owned(a, "a") else b for integration in orphans}
    for integration, heir in heirs.items():
        heir.streams.route(result(integration, 20))  # the heir probed it: newer than what c's stream holds
        assert heir.runs(integration) == []  # held back until c's stream is read
    await a.streams.read()
    await b.streams.read()
    for integration, heir in heirs.items():
        other = b if heir is a else a
        assert heir.runs(integration) == list(range(21)), integration
        assert other.runs(integration) == [], integration
    assert a.count("recovered") + b.count("recovered") == 20 * len(orphans)
    for replica in (a, b):  # each heir read the whole stream, the entry sent again too (and dropped it)
        assert replica.count("duplicate") == (10 if replica in heirs.values() else 0)
    assert a.count("received") == b.count("received") == 0


async def test_a_leaving_replica_passes_on_what_is_still_unread_in_its_stream_when_it_closes(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await two(replicas)
    theirs = owned(a, "b")[0]
    monkeypatch.setattr(streams_module, "READ_GAP", NEVER)  # after a read that took something, nobody reads again
    await send(a, theirs, range(1))
    await until(lambda: len(b.recorded), "b to record the first result (then pause)", holds=lambda n: n == 1)
    await b.cluster.leave(5.0)
    await until(lambda: a.cluster.members == ("a",), "a to see b gone")
    # A flush made just before the leave took effect, arriving after it: b has not read it when it closes.
    late = {"s": "late", "q": 0, "n": 1, "b": encode_batch([(result(theirs, 1), 0, None)], Redactor())}
    await shared_redis.xadd(b.streams.stream("b"), late)
    await b.streams.close()
    await until(lambda: a.runs(theirs), "a to get the result b passed on", holds=lambda runs: runs == [1])
    assert b.runs(theirs) == [0] and (b.count("received"), b.count("sent")) == (2, 1)


async def test_results_of_the_endpoint_a_reload_pointed_a_check_away_from_are_dropped_by_its_owner(
    replicas: Callable[..., Awaitable[Replica]], shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """The owner of an integration reloaded a config that points one of its checks at another URL: results of
    runs against the old URL, still in its stream or sent by a prober that had not reloaded yet, told of the
    old endpoint. Recorded, they were counted against the new one (its status code, its certificate's
    expiry, the alert engine's windows). The owner drops them (counted as stale); results of the check's
    endpoint as the owner has it now, and those of an older replica that stamps no endpoint, arrive as before."""
    a, b = await two(replicas, streams=False)
    theirs = owned(a, "b")[0]
    assert await b.streams.read() == 0  # b reads its stream from here on, when the test says
    await send(a, theirs, range(3))  # probed at the old URL; still unread in b's stream when b reloads
    b.cluster.on_config(parse_config(config_text(prefix, "b", moved=theirs), env={}))
    for n in range(3, 5):
        a.streams.route(result(theirs, n))  # a probed the old URL again before it reloaded too
    a.cluster.on_config(parse_config(config_text(prefix, "a", moved=theirs), env={}))
    for n in range(5, 7):
        a.streams.route(result(theirs, n))  # and the new one after (one config again: nobody's view changes)
    await a.streams.flush()
    # From a replica of the version before, which tells no endpoint (``None``: no ``tf`` in the entry).
    older = {"s": "older", "q": 0, "n": 1, "b": encode_batch([(result(theirs, 7), 0, None)], Redactor())}
    assert "tf" not in older["b"]
    await shared_redis.xadd(b.streams.stream("b"), older)
    assert await b.streams.read() == 3
    assert b.runs(theirs) == [5, 6, 7]
    assert (b.count("received"), b.count("stale"), b.count("unreadable")) == (8, 5, 0)

