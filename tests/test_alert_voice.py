"""Two alert engines sharing one Redis store, as two replicas of the daemon do (alerts/voice.py): each speaks
only for the integrations it owns, leaves the others' alerts alone, tells of its own health under its own
name, and an engine that takes an integration over continues its incident instead of starting a new one.
Fake clock, fake sink, the real shared Redis (unique key prefix)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import redis.asyncio
import yaml
from test_alert_engine import T0, Clock, Sink

from alerts.engine import AlertEngine
from alerts.model import AlertStatus
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config


@dataclass
class Owners:
    """The daemon's placement as the engine reads it: who owns which integration."""

    me: str
    table: dict[str, str] = field(default_factory=dict)
    clustered: bool = True
    degraded: bool = False  # Redis unreachable: the outage voice speaks for what this replica probes
    probed: set[str] = field(default_factory=set)  # check ids this replica probes
    owner_saw: dict[str, bool] = field(default_factory=dict)  # check id → last result the owner got was ok
    held: frozenset[str] = frozenset()

    def owns(self, integration: str) -> bool:
        return self.table.get(integration) == self.me

    def probes(self, check_id: str) -> bool:
        return check_id in self.probed

    def owner_saw_failing(self, check_id: str) -> bool:
        return self.owner_saw.get(check_id) is False

    def hold_results(self, integrations: frozenset[str]) -> None:
        self.held = integrations


def config(key_prefix: str, group_by: tuple[str, ...] = ("integration",), **probe_down: str) -> Config:
    integrations = {
        name: {"checks": [{"name": "api", "kind": "http", "url": f"https://{name}.test/x", "interval": "15s"}],
               "alerts": {"probe_down": {"consecutive_failures": 2, **probe_down}}}
        for name in ("acme", "globex")
    }
    raw = {"integrations": integrations,
           "alerting": {"key_prefix": key_prefix, "group_wait": "0s", "group_by": list(group_by)}}
    return parse_config(yaml.safe_dump(raw), env={})


def fail(engine: AlertEngine, integration: str, at: float) -> None:
    engine.on_result(CheckResult(integration=integration, check="api", kind="http", ok=False,
                                 error_class=ErrorClass.HTTP_5XX, detail="http_5xx: 503", started_at=at,
                                 duration=0.1, total_duration=0.1, status_code=503))


def ok(engine: AlertEngine, integration: str, at: float) -> None:
    engine.on_result(CheckResult(integration=integration, check="api", kind="http", ok=True, error_class=None,
                                 detail="", started_at=at, duration=0.1, total_duration=0.1, status_code=200))


def replicas(cfg: Config, client: redis.asyncio.Redis, clock: Clock,
             table: dict[str, str]) -> tuple[dict[str, AlertEngine], dict[str, Sink]]:
    """Engines of replicas r0 and r1 sharing ``client``, owning what ``table`` says, and their sinks."""
    sinks = {name: Sink() for name in ("r0", "r1")}
    engines = {
        name: AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), redis=client, sink=sinks[name],
                          clock=clock, autorun=False, ownership=Owners(name, table))
        for name in ("r0", "r1")
    }
    return engines, sinks


async def continues_the_incident(owner: AlertEngine, sink: Sink, clock: Clock, key: str, since: float) -> None:
    """The owner that took ``key``'s incident over judges the check's runs from ``since`` on as the rest of
    it: the check still fails, nothing is told; it recovers, the resolve is told once."""
    fail(owner, "acme", since + 0.5)
    clock.now = since + 1
    await owner.evaluate()
    assert owner.states[key].status is AlertStatus.FIRING
    for n in range(2):
        fail(owner, "acme", since + 1 + n)
    clock.now = since + 3
    await owner.evaluate()
    assert sink.got == []  # neither resolved nor posted again
    ok(owner, "acme", since + 4)
    clock.now = since + 5
    await owner.evaluate()
    assert [(a.key, a.status) for n in sink.got for a in n.alerts] == [(key, AlertStatus.RESOLVED)]


async def test_each_replica_speaks_for_what_it_owns_and_a_takeover_keeps_the_incident(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    client = shared_redis
    cfg = config(prefix)
    clock = Clock()
    table = {"acme": "r0", "globex": "r1"}
    sinks = {name: Sink() for name in ("r0", "r1")}
    engines = {
        name: AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), redis=client, sink=sinks[name], clock=clock,
                          autorun=False, ownership=Owners(name, table))
        for name in ("r0", "r1")
    }
    for engine in engines.values():
        await engine.start()
    # Both replicas receive every result (in the daemon the owner does); each speaks for its own.
    for n in range(3):
        for engine in engines.values():
            fail(engine, "acme", T0 + n)
            fail(engine, "globex", T0 + n)
    clock.now = T0 + 5
    for engine in engines.values():
        await engine.evaluate()
    told = {name: [a.integration for n in sink.got for a in n.alerts] for name, sink in sinks.items()}
    assert told == {"r0": ["acme"], "r1": ["globex"]}
    assert set(engines["r0"].status()["alerts"]["firing"]) == {"acme/probe_down/api/critical"}

    # r0 goes away; r1 takes acme over: it loads the incident r0 left in the store and sends nothing new.
    table["acme"] = "r1"
    engines["r1"].ownership_changed(["acme"], [])
    engines["r0"].ownership_changed([], ["acme"])
    clock.now = T0 + 20
    fail(engines["r1"], "acme", T0 + 19)  # the first result it sees of acme: one failure, not yet "down"
    await engines["r1"].evaluate()
    assert [n.group_key for n in sinks["r1"].got] == ["globex"]
    assert engines["r1"].states["acme/probe_down/api/critical"].status is AlertStatus.FIRING
    # …and the resolve comes from the new owner, once.
    engines["r1"].on_result(CheckResult(integration="acme", check="api", kind="http", ok=True, error_class=None,
                                        detail="", started_at=T0 + 30, duration=0.1, total_duration=0.1,
                                        status_code=200))
    clock.now = T0 + 400
    await engines["r1"].evaluate()
    resolved = [a for n in sinks["r1"].got for a in n.alerts if a.status is AlertStatus.RESOLVED]
    assert [a.key for a in resolved] == ["acme/probe_down/api/critical"]
    await engines["r0"].evaluate()
    assert [n.group_key for n in sinks["r0"].got] == ["acme"]  # r0 said nothing more
    for engine in engines.values():
        await engine.close()


async def test_each_replica_tells_of_its_own_health_under_its_own_name(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    client = shared_redis
    cfg = config(prefix)
    clock = Clock()
    engine = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), redis=client, sink=Sink(), clock=clock,
                         autorun=False, ownership=Owners("pod-7", {}))
    assert engine.voice.monitor == "_monitor@pod-7"
    assert not engine.voice.integration("_monitor@pod-8") and not engine.voice.integration("acme")
    alone = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), redis=client, sink=Sink(), clock=clock,
                        autorun=False)
    assert alone.voice.monitor == "_monitor" and alone.voice.integration("acme")


async def test_an_integration_gained_back_is_not_judged_by_what_this_replica_saw_before_it_left(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    # r1 owned acme at first (a healthy result), lost it to r0, which saw acme go down and told it; r0 dies
    # and acme comes back to r1: its last result of acme is stale, it must neither resolve the incident
    # nor start a new one.
    cfg = config(prefix, keep_firing_for="0s")
    clock = Clock()
    table = {"acme": "r1", "globex": "r1"}
    engines, sinks = replicas(cfg, shared_redis, clock, table)
    for engine in engines.values():
        await engine.start()
    engines["r1"].on_result(CheckResult(integration="acme", check="api", kind="http", ok=True, error_class=None,
                                        detail="", started_at=T0, duration=0.1, total_duration=0.1,
                                        status_code=200))
    table["acme"] = "r0"
    engines["r1"].ownership_changed([], ["acme"])
    engines["r0"].ownership_changed(["acme"], [])
    for n in range(3):
        fail(engines["r0"], "acme", T0 + 1 + n)
    clock.now = T0 + 5
    await engines["r0"].evaluate()
    assert [a.key for n in sinks["r0"].got for a in n.alerts] == ["acme/probe_down/api/critical"]

    table["acme"] = "r1"
    engines["r1"].ownership_changed(["acme"], [])
    clock.now = T0 + 20
    await engines["r1"].evaluate()
    fail(engines["r1"], "acme", T0 + 19)
    await engines["r1"].evaluate()
    assert sinks["r1"].got == []
    assert engines["r1"].states["acme/probe_down/api/critical"].status is AlertStatus.FIRING
    for engine in engines.values():
        await engine.close()


@pytest.mark.parametrize("late", ["before the reload", "after the reload"])
async def test_a_run_the_previous_owner_judged_that_reaches_the_new_owner_late_does_not_resolve_its_incident(
    shared_redis: redis.asyncio.Redis, prefix: str, late: str
) -> None:
    """A prober's flush to r0 that seemed to fail (a timeout, yet in Redis) is sent again; r0 has left the
    view meanwhile, so it goes to the new owner r1: r0's last healthy run, from before the incident r0
    told, arrives at r1 as the first run it has of the check. Judged as news, it resolved the incident while
    the check still failed, and the next failures posted it again as a new one. It may come before r1 reloaded
    the incident from the store (r1 does so at its first evaluation after the move) or after."""
    cfg = config(prefix, keep_firing_for="0s")
    clock = Clock()
    table = {"acme": "r0", "globex": "r0"}
    engines, sinks = replicas(cfg, shared_redis, clock, table)
    r0, r1 = engines["r0"], engines["r1"]
    for engine in engines.values():
        await engine.start()
    ok(r0, "acme", T0 + 0.5)
    for n in range(3):
        fail(r0, "acme", T0 + 1 + n)
    clock.now = T0 + 5
    await r0.evaluate()
    assert [a.key for n in sinks["r0"].got for a in n.alerts] == ["acme/probe_down/api/critical"]

    table["acme"] = "r1"  # r0 is gone
    r1.ownership_changed(["acme"], [])
    clock.now = T0 + 6
    if late == "before the reload":
        ok(r1, "acme", T0 + 0.5)
        await r1.evaluate()
    else:
        await r1.evaluate()
        ok(r1, "acme", T0 + 0.5)
    await continues_the_incident(r1, sinks["r1"], clock, "acme/probe_down/api/critical", since=T0 + 6)
    for engine in engines.values():
        await engine.close()
