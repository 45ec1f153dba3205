"""Replicas' alert engines around a Redis outage (issue 10, item 4; alerts/voice.py, alerts/handover.py,
alerts/fencing.py): the replica that probes a check speaks for the incident that starts on it while its
owner cannot be reached, and hands it to the owner afterwards; a stale owner's state is refused; Redis back
empty gets everything back from memory, under fencing tokens that never restart from zero.

Two engines as two replicas (``Owners`` from test_alert_voice), a fake clock and sink, real Redis: the
shared one with a unique key prefix, or a private redis-server where Redis must lose its data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis_servers import OwnRedis
from test_alert_engine import T0, Clock, Sink
from test_alert_voice import Owners, config, continues_the_incident, fail, ok

from alerts.codec import state_from_json
from alerts.engine import AlertEngine
from alerts.model import AlertStatus
from alerts.outbox import Fence, Outbox, Record
from integration_kit.redact import Redactor
from monitor.metrics import Metrics

ACME = "acme/probe_down/api/critical"

PrivateRedis = tuple[redis.asyncio.Redis, OwnRedis, str]


@pytest.fixture
async def private_redis(own_redis: OwnRedis, prefix: str) -> AsyncIterator[PrivateRedis]:
    """A redis-server of this test's own, without persistence (a restart empties it), and a client of it."""
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url)
    yield client, own_redis, prefix
    await client.aclose()


def engine_for(owners: Owners, client: redis.asyncio.Redis, prefix: str, sink: Sink, clock: Clock,
               group_by: tuple[str, ...] = ("integration",), **probe_down: str) -> AlertEngine:
    return AlertEngine(config(prefix, group_by, **probe_down), metrics=Metrics(), redactor=Redactor(), redis=client,
                       sink=sink, clock=clock, autorun=False, ownership=owners)


# Grouped by integration, each integration's alerts have their own owner (fencing shard); grouped by alert
# name only, one replica owns them all (shard "*"): the handover goes to it either way.
@pytest.mark.parametrize("group_by", [("integration",), ("alert",)])
async def test_an_incident_starting_in_an_outage_is_told_by_its_prober_and_then_continued_by_its_owner(
    shared_redis: redis.asyncio.Redis, prefix: str, group_by: tuple[str, ...]
) -> None:
    clock = Clock()
    table = {"acme": "r1", "globex": "r1"}
    # r0 probes both checks; the owner got globex failing from it before the outage, acme healthy.
    prober = Owners("r0", table, probed={"acme/api", "globex/api"}, owner_saw={"acme/api": True, "globex/api": False})
    sinks = {"r0": Sink(), "r1": Sink()}
    r0 = engine_for(prober, shared_redis, prefix, sinks["r0"], clock, group_by, keep_firing_for="0s")
    r1 = engine_for(Owners("r1", table), shared_redis, prefix, sinks["r1"], clock, group_by, keep_firing_for="0s")
    for engine in (r0, r1):
        await engine.start()
        await engine.evaluate()

    prober.degraded = True  # Redis unreachable for r0: its results stay with it
    for n in range(3):
        fail(r0, "acme", T0 + 1 + n)
        fail(r0, "globex", T0 + 1 + n)
    clock.now = T0 + 5
    await r0.evaluate()
    told = [a.key for n in sinks["r0"].got for a in n.alerts]
    assert told == [ACME]  # not globex: the owner has that incident already
    assert prober.held == frozenset({"acme"})
    incident = sinks["r0"].got[0].incident

    prober.degraded = False  # Redis answers: r0 hands acme over, and then lets its results go to r1
    clock.now = T0 + 6
    await r0.evaluate()
    assert prober.held == frozenset() and not r0.voice.outage
    assert ACME not in r0.states
    await r1.evaluate()
    assert r1.states[ACME].status is AlertStatus.FIRING
    await continues_the_incident(r1, sinks["r1"], clock, ACME, T0 + 6)  # not told again; the resolve told once
    assert not await shared_redis.hlen(f"{prefix}handover")
    assert [n.incident for n in sinks["r1"].got] == [incident]  # the resolve belongs to the incident r0 told
    await r0.evaluate()
    assert [a.key for n in sinks["r0"].got for a in n.alerts] == [ACME]  # r0 said nothing more
    for engine in (r0, r1):
        await engine.close()


async def test_a_run_from_before_the_outage_that_reaches_the_owner_after_the_handover_does_not_resolve_it(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """The prober's flush that failed as Redis went away is sent again once it answers, after the handover:
    its last healthy run, older than the incident, arrives at the owner as the first run it has of the
    check. Judged as news, it resolved the incident while the check still failed, and the next failures
    posted it again as a new one."""
    clock = Clock()
    table = {"acme": "r1", "globex": "r1"}
    prober = Owners("r0", table, probed={"acme/api"}, owner_saw={"acme/api": True})
    sinks = {"r0": Sink(), "r1": Sink()}
    r0 = engine_for(prober, shared_redis, prefix, sinks["r0"], clock, keep_firing_for="0s")
    r1 = engine_for(Owners("r1", table), shared_redis, prefix, sinks["r1"], clock, keep_firing_for="0s")
    for engine in (r0, r1):
        await engine.start()
        await engine.evaluate()
    prober.degraded = True
    for n in range(3):
        fail(r0, "acme", T0 + 1 + n)
    clock.now = T0 + 5
    await r0.evaluate()
    assert [a.key for n in sinks["r0"].got for a in n.alerts] == [ACME]
    prober.degraded = False
    clock.now = T0 + 6
    await r0.evaluate()  # hands acme over
    await r1.evaluate()  # takes it
    assert r1.states[ACME].status is AlertStatus.FIRING

    ok(r1, "acme", T0 + 0.5)  # the run before the outage, its flush confirmed only now
    await continues_the_incident(r1, sinks["r1"], clock, ACME, since=T0 + 6)  # the runs sent to it since
    for engine in (r0, r1):
        await engine.close()


async def test_the_alert_state_of_an_owner_that_lost_its_integration_without_knowing_is_refused(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    clock = Clock()
    sinks = {"r0": Sink(), "r1": Sink()}
    stale = Owners("r0", {"acme": "r0", "globex": "r1"})  # r0 never hears that acme moved
    r0 = engine_for(stale, shared_redis, prefix, sinks["r0"], clock, keep_firing_for="0s")
    r1 = engine_for(Owners("r1", {"acme": "r1", "globex": "r1"}), shared_redis, prefix, sinks["r1"], clock,
                    keep_firing_for="0s")
    await r0.start()
    for n in range(3):
        fail(r0, "acme", T0 + n)
    clock.now = T0 + 5
    await r0.evaluate()
    assert [a.key for n in sinks["r0"].got for a in n.alerts] == [ACME]

    await r1.start()
    r1.ownership_changed(["acme"], [])
    await r1.evaluate()  # takes acme's fencing token and its incident
    assert r1.states[ACME].status is AlertStatus.FIRING

    ok(r0, "acme", T0 + 6)
    clock.now = T0 + 7
    await r0.evaluate()  # r0 judges acme resolved and saves that under its old token: refused
    assert r0.states.get(ACME) is None or r0.states[ACME].status is not AlertStatus.FIRING
    stored = state_from_json((await shared_redis.hget(f"{prefix}state", ACME)).decode())
    assert stored.status is AlertStatus.FIRING
    for engine in (r0, r1):
        await engine.close()


async def test_redis_back_empty_gets_the_state_back_and_a_token_from_before_never_matches(
    private_redis: PrivateRedis,
) -> None:
    client, server, prefix = private_redis
    clock = Clock()
    sink = Sink()
    owner = engine_for(Owners("r0", {"acme": "r0", "globex": "r0"}), client, prefix, sink, clock)
    await owner.start()
    for n in range(3):
        fail(owner, "acme", T0 + n)
    clock.now = T0 + 5
    await owner.evaluate()
    before = int(await client.hget(f"{prefix}fence", "acme"))
    outbox = Outbox(client, log_prefix=prefix)
    assert await outbox.may_send(Record("console|acme", None, Fence("acme", before)))

    await server.stop()
    clock.now = T0 + 6
    await owner.evaluate()  # Redis down: judged from memory, nothing saved
    await server.start()  # no persistence: empty
    assert not await client.exists(f"{prefix}state", f"{prefix}nflog", f"{prefix}fence")
    clock.now = T0 + 7
    await owner.evaluate()
    stored = state_from_json((await client.hget(f"{prefix}state", ACME)).decode())
    assert stored.status is AlertStatus.FIRING
    assert await client.hexists(f"{prefix}nflog", "console|acme")
    after = int(await client.hget(f"{prefix}fence", "acme"))
    assert after != before and after > before
    # A notification planned under the token from before the loss is refused; the new one may go.
    assert not await outbox.may_send(Record("console|acme", None, Fence("acme", before)))
    assert await outbox.may_send(Record("console|acme", None, Fence("acme", after)))
    assert sink.got and len(sink.got) == 1  # and nothing was told twice
    await owner.close()


@pytest.mark.parametrize("before", ["an earlier outage", "a blip between two evaluations", "its own time as owner"])
async def test_the_outage_voice_judges_only_the_runs_of_this_outage(
    shared_redis: redis.asyncio.Redis, prefix: str, before: str
) -> None:
    """The prober's engine keeps what it recorded of a check owned elsewhere: the runs of an earlier outage
    (however short: one no evaluation saw too), or those of its own time as the owner. Between them and
    this outage the runs went to the owner, and were healthy; counted as one streak, one failure now added
    to one then read as "down, 2 failed runs in a row" and the outage voice paged for a check that had
    failed once."""
    clock = Clock()
    table = {"acme": "r1", "globex": "r1"}
    if before == "its own time as owner":
        table["acme"] = "r0"
    prober = Owners("r0", table, probed={"acme/api"}, owner_saw={"acme/api": True})
    sinks = {"r0": Sink(), "r1": Sink()}
    r0 = engine_for(prober, shared_redis, prefix, sinks["r0"], clock)
    r1 = engine_for(Owners("r1", table), shared_redis, prefix, sinks["r1"], clock)
    for engine in (r0, r1):
        await engine.start()
        await engine.evaluate()
    if before != "its own time as owner":
        prober.degraded = True
        fail(r0, "acme", T0 + 1)  # one failure: not down
        if before == "an earlier outage":
            clock.now = T0 + 2
            await r0.evaluate()
        prober.degraded = False  # (a blip: over before the engine evaluated again)
        clock.now = T0 + 3
        await r0.evaluate()
    else:
        fail(r0, "acme", T0 + 1)
        clock.now = T0 + 2
        await r0.evaluate()
        table["acme"] = "r1"  # a replica joined: acme moved to r1
        r0.ownership_changed([], ["acme"])
        r1.ownership_changed(["acme"], [])
        clock.now = T0 + 3
        await r0.evaluate()
    for n in range(5):  # healthy runs, sent to the owner
        ok(r1, "acme", T0 + 4 + n)
    clock.now = T0 + 10
    await r1.evaluate()

    prober.degraded = True  # Redis goes away again: acme fails once
    fail(r0, "acme", T0 + 11)
    clock.now = T0 + 12
    await r0.evaluate()
    assert sinks["r0"].got == [] and sinks["r1"].got == []
    assert not r0.voice.outage
    fail(r0, "acme", T0 + 13)  # and twice: down, told by the prober
    clock.now = T0 + 14
    await r0.evaluate()
    assert [a.key for n in sinks["r0"].got for a in n.alerts] == [ACME]
    for engine in (r0, r1):
        await engine.close()
