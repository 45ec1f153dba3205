"""The notification log is written per notifier once the notifier confirmed delivery (Alertmanager's nflog):
a notification dropped on the way (an error Slack says retrying cannot fix, ``give_up_after``, a full
queue, an outbox write failure and a crash) is not logged as sent and goes out later; a submit cut short
after some notifiers had it queued is not queued twice for them. The real engine and dispatcher, a
loopback Slack scripted to fail, the shared Redis (unique key prefix); fake clock for the engine."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio
import yaml
from fake_slack import TOKEN, FakeSlack, Reply
from needs import free_port
from test_alert_engine import Clock
from test_alert_voice import fail

import alerts.flush
from alerts.delivery import DeliveryPolicy, Dispatcher
from alerts.engine import AlertEngine
from alerts.model import Notification
from alerts.outbox import OUTBOX_TTL, Record
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config

FAST = DeliveryPolicy(pace=0.01, backoff=0.05, max_backoff=0.1)
GROUP_INTERVAL = 60.0


def config(prefix: str, slack: FakeSlack, *, integrations: tuple[str, ...] = ("acme",), **alerting: Any) -> Config:
    raw = {
        "integrations": {
            name: {"checks": [{"name": "api", "kind": "http", "url": f"https://{name}.test/x", "interval": "15s"}],
                   "alerts": {"probe_down": {"consecutive_failures": 2, "keep_firing_for": "0s"}}}
            for name in integrations
        },
        "alerting": {"key_prefix": prefix, "group_wait": "0s", "group_interval": f"{GROUP_INTERVAL:g}s",
                     "slack": {"token": TOKEN, "channel": "#alerts", "base_url": slack.api_url}, **alerting},
    }
    return parse_config(yaml.safe_dump(raw), env={})


def engine(cfg: Config, client: redis.asyncio.Redis, clock: Clock, dispatcher: Dispatcher) -> AlertEngine:
    return AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), redis=client, sink=dispatcher, clock=clock,
                       autorun=False)


def dispatcher_for(cfg: Config, client: redis.asyncio.Redis, policy: DeliveryPolicy = FAST,
                   kind: type[Dispatcher] = Dispatcher, replica: str | None = None) -> Dispatcher:
    return kind.for_alerting(cfg.alerting, redactor=Redactor(), redis=client, policy=policy, replica=replica)


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.close(grace=0.5)


async def tick(eng: AlertEngine, clock: Clock, seconds: float = 15.0) -> list[Notification]:
    """One failing probe of every integration, ``seconds`` later, and an evaluation."""
    clock.now += seconds
    for integration in eng.config.integrations:
        fail(eng, integration, clock.now)
    return await eng.evaluate()


async def fire(eng: AlertEngine, clock: Clock) -> list[Notification]:
    """Two failing runs: probe_down fires; what the second evaluation handed over."""
    await tick(eng, clock)
    return await tick(eng, clock)


async def logged(client: redis.asyncio.Redis, prefix: str, field: str) -> dict[str, Any] | None:
    raw = await client.hget(f"{prefix}nflog", field)
    return None if raw is None else dict(json.loads(raw))


async def test_a_notification_slack_refuses_is_not_logged_and_goes_out_a_group_interval_later(
    slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    cfg, clock = config(prefix, slack), Clock()
    slack.then(Reply(error="channel_not_found", only="chat.postMessage"))  # not retried: dropped
    async with running(dispatcher_for(cfg, shared_redis, FAST)) as dispatcher:
        eng = engine(cfg, shared_redis, clock, dispatcher)
        assert len(await fire(eng, clock)) == 1
        assert await dispatcher.drain(10)
        assert len(slack.calls("chat.postMessage")) == 1 and not slack.delivered("chat.postMessage")
        assert await logged(shared_redis, prefix, "slack|acme") is None  # dropped: not sent
        assert await tick(eng, clock, GROUP_INTERVAL / 2) == []  # tried again a group_interval after the drop
        assert len(await tick(eng, clock, GROUP_INTERVAL / 2)) == 1
        assert await dispatcher.drain(10)
        assert len(slack.delivered("chat.postMessage")) == 1
        entry = await logged(shared_redis, prefix, "slack|acme")
        assert entry is not None and list(entry["sent"]) == ["acme/probe_down/api/critical"]
        assert await tick(eng, clock, GROUP_INTERVAL) == []  # logged now: nothing repeated
        assert await dispatcher.drain(10) and len(slack.calls("chat.postMessage")) == 2


async def test_a_notification_given_up_after_retries_is_not_logged(
    slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    cfg, clock = config(prefix, slack), Clock()
    slack.then(*(Reply(status=503, only="chat.postMessage") for _ in range(1000)))
    policy = DeliveryPolicy(pace=0.01, backoff=0.05, max_backoff=0.1, give_up_after=0.3)
    async with running(dispatcher_for(cfg, shared_redis, policy)) as dispatcher:
        eng = engine(cfg, shared_redis, clock, dispatcher)
        await fire(eng, clock)
        assert await dispatcher.drain(10)
        assert dispatcher.status()["notifiers"]["slack"]["failed"] == 1
        assert await logged(shared_redis, prefix, "slack|acme") is None
        slack.script.clear()  # Slack is back
        assert len(await tick(eng, clock, GROUP_INTERVAL)) == 1
        assert await dispatcher.drain(10)
    assert len(slack.delivered("chat.postMessage")) == 1
    assert await logged(shared_redis, prefix, "slack|acme") is not None


async def test_a_notification_dropped_by_a_full_queue_is_not_logged(
    slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    cfg, clock = config(prefix, slack, integrations=("acme", "globex")), Clock()
    # Acme's post is answered only once globex's submit is over: acme stays at the head of the queue however
    # slowly the evaluation goes (a 429 retried after 0.5 s let a loaded machine deliver it first).
    sent = asyncio.Event()
    slack.then(Reply(hold=sent, only="chat.postMessage"))
    policy = DeliveryPolicy(pace=0.01, backoff=0.05, max_backoff=0.1, max_queue=1)
    async with running(dispatcher_for(cfg, shared_redis, policy)) as dispatcher:
        eng = engine(cfg, shared_redis, clock, dispatcher)
        try:
            await fire(eng, clock)  # acme queued, globex dropped: the queue holds one
            assert dispatcher.status()["notifiers"]["slack"]["failed"] == 1
        finally:
            sent.set()
        assert await dispatcher.drain(10)
        assert [r.body["text"].split(":")[0] for r in slack.delivered("chat.postMessage")] == ["🔴 acme"]
        assert await logged(shared_redis, prefix, "slack|acme") is not None
        assert await logged(shared_redis, prefix, "slack|globex") is None
        handed = await tick(eng, clock, GROUP_INTERVAL)
        assert [n.group_key for n in handed] == ["globex"]
        assert await dispatcher.drain(10)
    assert len(slack.delivered("chat.postMessage")) == 2
    assert await logged(shared_redis, prefix, "slack|globex") is not None


async def test_a_notification_whose_outbox_write_failed_is_sent_after_a_crash(
    slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    cfg, clock = config(prefix, slack), Clock()
    dead = redis.asyncio.Redis(host="127.0.0.1", port=free_port())  # the outbox's Redis writes fail
    slack.then(Reply(status=429, retry_after="30", only="chat.postMessage"))  # not delivered before the crash
    policy = DeliveryPolicy(pace=0.01, backoff=0.05, max_backoff=0.1, persist_timeout=0.5)
    try:
        async with running(dispatcher_for(cfg, dead, policy)) as first:
            eng = engine(cfg, shared_redis, clock, first)
            assert len(await fire(eng, clock)) == 1
            await asyncio.wait_for(slack.wait_calls("chat.postMessage"), 10)
            # The process dies here: its queue is gone, the outbox never had the entry.
    finally:
        await dead.aclose()
    assert await logged(shared_redis, prefix, "slack|acme") is None
    assert slack.calls("chat.postMessage") and not slack.delivered("chat.postMessage")

    slack.script.clear()
    async with running(dispatcher_for(cfg, shared_redis, FAST)) as second:
        restarted = engine(cfg, shared_redis, clock, second)
        await restarted.start()
        assert len(await tick(restarted, clock)) == 1  # the log never said it was sent: planned again
        assert await second.drain(10)
        assert await tick(restarted, clock) == []
    assert len(slack.delivered("chat.postMessage")) == 1


class StuckOnce(Dispatcher):
    """A dispatcher whose first queueing for the console never returns (a Redis write that hangs): the
    engine's submit timeout cuts it short after the Slack lane already has the notification."""

    stuck = True

    async def submit_to(self, notifier: str, notification: Notification, record: Record) -> None:
        if notifier == "console" and self.stuck:
            self.stuck = False
            await asyncio.Event().wait()
        await super().submit_to(notifier, notification, record)


async def test_a_submit_cut_short_does_not_queue_twice_for_the_notifiers_that_had_it(
    slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(alerts.flush, "SUBMIT_TIMEOUT", 0.3)
    caplog.set_level(logging.INFO, logger="alerts.console")
    cfg, clock = config(prefix, slack, console={"stream": "log"}), Clock()
    # Still on its way when the evaluation is done: Slack's retry comes 1.5 s after the first post, the console's
    # submit is cut at 0.3 s (a retry after 0.5 s left the evaluation 0.2 s on a loaded machine).
    slack.then(Reply(status=429, retry_after="1.5", only="chat.postMessage"))
    async with running(dispatcher_for(cfg, shared_redis, FAST, StuckOnce)) as dispatcher:
        assert [name for name, _ in dispatcher.notifier_floors()] == ["slack", "console"]
        eng = engine(cfg, shared_redis, clock, dispatcher)
        assert [n.group_key for n in await fire(eng, clock)] == ["acme"]  # Slack's; the console's timed out
        assert dispatcher.pending("slack", "acme")
        assert [n.group_key for n in await tick(eng, clock)] == ["acme"]  # the console's only
        assert await dispatcher.drain(10)
        assert await tick(eng, clock) == []
        assert await dispatcher.drain(10)
    assert len(slack.delivered("chat.postMessage")) == 1
    assert sum("alert notification" in r.getMessage() for r in caplog.records if r.name == "alerts.console") == 1
    assert await logged(shared_redis, prefix, "slack|acme") is not None
    assert await logged(shared_redis, prefix, "console|acme") is not None


async def test_the_previous_versions_log_is_adopted_so_an_open_incident_is_not_posted_again_and_resolves(
    slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    cfg, clock = config(prefix, slack), Clock()
    async with running(dispatcher_for(cfg, shared_redis, FAST)) as before:
        eng = engine(cfg, shared_redis, clock, before)
        await fire(eng, clock)
        assert await before.drain(10)
    # What the previous version kept: one log per group, in <prefix>groups.
    raw = await shared_redis.hget(f"{prefix}nflog", "slack|acme")
    await shared_redis.delete(f"{prefix}nflog")
    await shared_redis.hset(f"{prefix}groups", "acme", raw)

    async with running(dispatcher_for(cfg, shared_redis, FAST)) as after:
        upgraded = engine(cfg, shared_redis, clock, after)
        await upgraded.start()
        assert await logged(shared_redis, prefix, "slack|acme") is not None
        assert not await shared_redis.exists(f"{prefix}groups")
        assert await tick(upgraded, clock, GROUP_INTERVAL) == []  # still firing, already told
        clock.now += 15
        upgraded.on_result(CheckResult(integration="acme", check="api", kind="http", ok=True, error_class=None,
                                       detail="", started_at=clock.now,
                                       duration=0.1, total_duration=0.1, status_code=200))
        assert [n.resolved[0].key for n in await upgraded.evaluate()] == ["acme/probe_down/api/critical"]
        assert await after.drain(10)
    assert len(slack.delivered("chat.postMessage")) == 2  # the post and, in its thread, the resolve
    assert slack.delivered("chat.postMessage")[1].body["thread_ts"] == slack.delivered("chat.update")[0].body["ts"]


async def test_a_restarted_replica_resumes_only_its_own_outbox(
    slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    cfg, clock = config(prefix, slack), Clock()
    slack.then(Reply(status=429, retry_after="30", only="chat.postMessage"))  # r0's notification waits
    async with running(dispatcher_for(cfg, shared_redis, replica="r0")) as r0:
        assert len(await fire(engine(cfg, shared_redis, clock, r0), clock)) == 1
        await asyncio.wait_for(slack.wait_calls("chat.postMessage"), 10)
        assert await shared_redis.llen(f"{prefix}outbox:r0:slack") == 1
        assert 0 < await shared_redis.ttl(f"{prefix}outbox:r0:slack") <= OUTBOX_TTL
        # Replica r1 restarts meanwhile: r0, alive, is sending its own; r1 must not send it too.
        async with running(dispatcher_for(cfg, shared_redis, replica="r1")) as r1:
            assert r1.status()["notifiers"]["slack"]["queued"] == 0
        assert r0.status()["notifiers"]["slack"]["queued"] == 1
    assert len(slack.calls("chat.postMessage")) == 1
