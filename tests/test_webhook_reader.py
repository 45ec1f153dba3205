"""The monitor side of webhooks against a real Redis: the reader sees what the helper wrote, never writes,
the service keeps the metrics (counters from Redis totals, resets included), and a Redis outage is a soft
failure that resumes by itself."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import redis.asyncio
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_servers import OwnRedis
from waiting import until

from alerts.engine import AlertEngine
from alerts.model import AlertStatus
from alerts.rules import RuleInput
from alerts.rules.webhook_silence import evaluate
from alerts.stats import Stats
from alerts.store import AlertStore
from integration_kit.redact import Redactor
from integration_kit.webhook_observations import from_facts
from integration_kit.webhooks import WebhookLedger, stats_key, types_key
from monitor.component import Services
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config
from monitor.webhooks.reader import WebhookReader
from monitor.webhooks.service import WebhookService


def make_config(prefix: str, **webhooks: Any) -> Config:
    integrations = {
        "acme": {"webhooks": {"key_prefix": prefix, "max_silence": "30m", **webhooks}},
        "globex": {"webhooks": {"key_prefix": prefix}},
        "no-webhooks": {},
    }
    return parse_config(yaml.safe_dump({"monitor": {"evaluation_interval": "100ms"}, "integrations": integrations}))


def make_service(client: redis.asyncio.Redis | None, config: Config) -> tuple[WebhookService, Metrics]:
    metrics = Metrics()
    services = Services(metrics=metrics, redactor=Redactor(), redis=client, config=config)
    return WebhookService(services, min_backoff=0.05, max_backoff=0.2), metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_reader_sees_what_the_helper_wrote(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    acme = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    for event_id, kind, at in [("e1", "invoice.paid", 1000.5), ("e2", "charge.refunded", 1010.0), ("e1", None, 1020.0)]:
        await acme.mark_processed(event_id, event_type=kind, received_at=at)
    async with acme.claim("e3") as first:
        assert first
    with pytest.raises(RuntimeError):
        async with acme.claim("e4"):
            raise RuntimeError("handler failed")

    snapshots = await WebhookReader(shared_redis).read({"acme": prefix, "globex": prefix})
    snap = snapshots["acme"]
    assert (snap.received, snap.duplicates, snap.released) == (5, 1, 1)
    assert snap.last_event_ts is not None and snap.last_event_ts >= 1020.0  # e3/e4 were stamped with Redis TIME
    assert snap.event_types == {"invoice.paid": 1000.5, "charge.refunded": 1010.0}
    redis_now = float((await shared_redis.time())[0])
    assert redis_now - 5 <= snap.read_at <= redis_now + 1
    empty = snapshots["globex"]
    assert (empty.received, empty.duplicates, empty.last_event_ts, dict(empty.event_types)) == (0, 0, None, {})


async def test_reader_works_with_a_decoding_client_and_ignores_garbage(
    shared_redis: redis.asyncio.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    await shared_redis.hset(stats_key("acme", prefix), mapping={"received": "lots", "duplicates": "2",
                                                                "last_event_ts": "soon"})
    await shared_redis.hset(types_key("acme", prefix), mapping={"a": "1.5", "b": "nope"})
    decoding = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    reader = WebhookReader(decoding)
    try:
        with caplog.at_level(logging.WARNING, logger="monitor.webhooks.reader"):
            snap = (await reader.read({"acme": prefix}))["acme"]
            await reader.read({"acme": prefix})
    finally:
        await decoding.aclose()
    assert (snap.received, snap.duplicates, snap.last_event_ts, dict(snap.event_types)) == (0, 2, None, {"a": 1.5})
    complaints = [r for r in caplog.records if "is not a number" in r.getMessage()]
    assert len(complaints) == 3  # received, last_event_ts, types[b]: once each, not on every read


async def test_reader_needs_only_read_permissions(own_redis: OwnRedis) -> None:
    await own_redis.start()
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    await admin.execute_command(
        "ACL", "SETUSER", "monitor", "on", ">monitor-pw", "~*", "resetchannels", "-@all", "+@read", "+@connection",
        "+time",
    )
    ledger = WebhookLedger(admin, integration="acme")
    await ledger.mark_processed("e1", event_type="invoice.paid")
    await ledger.mark_processed("e1", event_type="invoice.paid")
    before = await admin.hgetall(stats_key("acme"))
    reader_client = redis.asyncio.Redis.from_url(f"redis://monitor:monitor-pw@127.0.0.1:{own_redis.port}/0")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await reader_client.set("probe", "1")  # the ACL really forbids writes
        snap = (await WebhookReader(reader_client).read({"acme": "im:wh:"}))["acme"]
        assert (snap.received, snap.duplicates) == (2, 1)
        assert await admin.hgetall(stats_key("acme")) == before
    finally:
        await reader_client.aclose()
        await admin.aclose()


async def test_service_keeps_the_metrics_from_redis_totals(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    config = make_config(prefix, event_types={"invoice.paid": None},
                         duplicate_ratio={"threshold": 0.5, "window": "15m", "min_events": 4})
    service, metrics = make_service(shared_redis, config)
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    await ledger.mark_processed("e1", event_type="invoice.paid", received_at=2000.0)
    await ledger.mark_processed("e2", event_type="customer.created", received_at=2001.0)
    assert await service.read_once()
    assert sample(metrics, "integration_webhook_events_total", integration="acme") == 2
    assert sample(metrics, "integration_webhook_duplicates_total", integration="acme") == 0
    assert sample(metrics, "integration_webhook_last_event_timestamp_seconds", integration="acme") == 2001.0
    assert sample(metrics, "integration_monitor_component_ok", component="webhooks") == 1
    assert sample(metrics, "integration_webhook_event_type_last_event_timestamp_seconds", integration="acme",
                  event_type="invoice.paid") == 2000.0
    # Types not listed in config never become a label (bounded cardinality)...
    assert sample(metrics, "integration_webhook_event_type_last_event_timestamp_seconds", integration="acme",
                  event_type="customer.created") is None
    # ...but /api/status shows them.
    assert service.status()["integrations"]["acme"]["event_types"] == {
        "customer.created": 2001.0, "invoice.paid": 2000.0,
    }
    assert sample(metrics, "integration_webhook_duplicate_ratio", integration="acme") is None  # one sample

    for _ in range(4):  # a vendor retrying: 4 duplicates, 1 new
        await ledger.mark_processed("e1", received_at=2002.0)
    await ledger.mark_processed("e3", received_at=2003.0)
    assert await service.read_once()
    assert sample(metrics, "integration_webhook_events_total", integration="acme") == 7
    assert sample(metrics, "integration_webhook_duplicates_total", integration="acme") == 4
    assert sample(metrics, "integration_webhook_duplicate_ratio", integration="acme") == pytest.approx(4 / 5)
    status = service.status()["integrations"]["acme"]
    assert (status["received"], status["duplicates"], status["duplicate_ratio"]) == (7, 4, pytest.approx(0.8))

    # The rule sees the same through the facts.
    obs = from_facts("acme", service.facts()["acme"])
    assert obs is not None and obs.fresh and obs.duplicate_ratio == pytest.approx(0.8)
    inp = RuleInput(integration="acme", config=config.integrations["acme"], stats=Stats(), quotas={},
                    now=obs.watching_since - obs.clock_offset, active=frozenset(), facts=service.facts()["acme"])
    found = {c.alert: c.active for c in evaluate(inp)}
    assert found == {"webhook_silence": True, "webhook_duplicates": True}  # last event at 2003: long ago

    # Redis lost the keys (restart without persistence): the totals start over, counters keep counting.
    await shared_redis.delete(stats_key("acme", prefix))
    await ledger.mark_processed("e9", received_at=2010.0)
    assert await service.read_once()
    assert sample(metrics, "integration_webhook_events_total", integration="acme") == 8
    assert sample(metrics, "integration_webhook_duplicates_total", integration="acme") == 4


async def test_config_reload_drops_series_of_removed_integrations_and_types(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    service, metrics = make_service(shared_redis, make_config(prefix, event_types={"invoice.paid": None}))
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    await ledger.mark_processed("e1", event_type="invoice.paid", received_at=3000.0)
    assert await service.read_once()
    assert sample(metrics, "integration_webhook_events_total", integration="acme") == 1
    assert sample(metrics, "integration_webhook_event_type_last_event_timestamp_seconds", integration="acme",
                  event_type="invoice.paid") == 3000.0
    service.on_config(make_config(prefix))  # invoice.paid no longer listed
    assert sample(metrics, "integration_webhook_event_type_last_event_timestamp_seconds", integration="acme",
                  event_type="invoice.paid") is None
    service.on_config(parse_config(yaml.safe_dump({"integrations": {"globex": {"webhooks": {"key_prefix": prefix}}}})))
    assert sample(metrics, "integration_webhook_events_total", integration="acme") is None
    assert "acme" not in service.status()["integrations"]


async def test_without_redis_webhook_health_is_off() -> None:
    service, _ = make_service(None, make_config("im:wh:"))
    await service.start()
    assert await service.read_once()
    status = service.status()
    assert (status["enabled"], status["redis"]) == (False, "not configured")
    assert service.ready() == (True, "ok")
    assert service.facts() == {}
    await service.close()


async def test_redis_outage_is_a_soft_failure_and_reading_resumes(own_redis: OwnRedis) -> None:
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(
        own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    config = make_config("im:wh:")
    service, metrics = make_service(client, config)
    # The integration service writing the ledger has a client of its own, which (like any service should)
    # retries a connection the restarted server closed. (redis-py's from_url() gives no retry at all.)
    writer = redis.asyncio.Redis(host="127.0.0.1", port=own_redis.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    ledger = WebhookLedger(writer, integration="acme")
    events = lambda: sample(metrics, "integration_webhook_events_total", integration="acme")  # noqa: E731
    webhooks_ok = lambda: sample(metrics, "integration_monitor_component_ok", component="webhooks")  # noqa: E731
    await service.start()
    try:
        await ledger.mark_processed("e1", received_at=4000.0)
        await ledger.mark_processed("e1", received_at=4001.0)
        await until(events, "the first read's 2 events", holds=lambda n: n == 2)

        await own_redis.stop()
        # The reader says its reads fail; whether Redis is down is the daemon's Redis health check's to say.
        await until(webhooks_ok, "webhooks not ok", holds=lambda v: v == 0)
        status = service.status()
        assert status["redis"] == "unavailable" and "Error" in (status["last_error"] or "")
        assert status["integrations"]["acme"]["received"] == 2  # last known totals stay visible
        assert sample(metrics, "integration_webhook_last_event_timestamp_seconds", integration="acme") == 4001.0
        facts = service.facts()["acme"]
        stale = from_facts("acme", facts)
        assert stale is not None and not stale.fresh
        # Stale data must not page as silence: the rule judges nothing.
        inp = RuleInput(integration="acme", config=config.integrations["acme"], stats=Stats(), quotas={},
                        now=10**10, active=frozenset(), facts=facts)
        assert list(evaluate(inp)) == []

        await own_redis.start()  # same port, empty: Redis lost everything
        await ledger.mark_processed("e2", received_at=5000.0)
        await until(webhooks_ok, "webhooks ok again", holds=lambda v: v == 1)
        await until(events, "counting resumed after the reset (3 events)", holds=lambda n: n == 3)
        assert service.status()["redis"] == "ok"
        assert sample(metrics, "integration_webhook_last_event_timestamp_seconds", integration="acme") == 5000.0
    finally:
        await service.close()
        await client.aclose()
        await writer.aclose()


async def test_alert_engine_fires_and_resolves_webhook_silence_from_the_readers_facts(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    config = make_config(prefix)
    services = Services(metrics=Metrics(), redactor=Redactor(), redis=shared_redis, config=config)
    service = WebhookService(services)
    engine = AlertEngine(config, metrics=services.metrics, redactor=services.redactor, store=AlertStore(None))
    service.fact_feed.connect(engine.set_fact)
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    await ledger.mark_processed("e1")  # stamped with Redis time
    assert await service.read_once()
    key = "acme/webhook_silence/-/warning"
    start = time.time()

    await engine.evaluate(start + 60)
    assert key not in engine.states or engine.states[key].status is AlertStatus.INACTIVE
    await engine.evaluate(start + 31 * 60)  # the fake clock jumps past max_silence (30m)
    assert engine.states[key].status is AlertStatus.FIRING
    assert services.metrics.registry.get_sample_value(
        "integration_alert_firing", {"integration": "acme", "alert": "webhook_silence", "severity": "warning"}
    ) == 1

    redis_now = float((await shared_redis.time())[0])
    await ledger.mark_processed("e2", received_at=redis_now + 31 * 60)  # a delivery "at" that time
    assert await service.read_once()
    await engine.evaluate(start + 32 * 60)
    assert engine.states[key].status is AlertStatus.RESOLVED
