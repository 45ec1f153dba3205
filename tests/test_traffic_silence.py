"""``traffic_silence`` in the real daemon: an integration service records its calls with the kit, then
stops (the service hangs, dies or stops calling its vendor: its counters are no longer written) — the
alert fires in Slack (a loopback server speaking Slack's Web API) after ``max_silence``; the service
resumes and the alert resolves in the message's thread. Off unless ``max_silence`` is set. The rule on
its own: the silence counts from the last write, or from when the monitor started reading; a Redis the
reader cannot read judges nothing; a dropped ``max_silence`` retires a firing alert."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import redis.asyncio
import yaml
from daemon_support import evaluations
from fake_slack import TOKEN, FakeSlack
from redis_servers import SHARED_REDIS
from targets import Target
from waiting import until

from alerts.rules import RULES, RuleInput
from alerts.rules.traffic_silence import TrafficWrites, evaluate, to_facts
from alerts.stats import Stats
from integration_kit.client import Integration
from integration_kit.tasks import stop
from monitor.app import App
from monitor.settings import Config, parse_config


class Service:
    """An integration service: calls its vendor (the loopback target) through the kit, 10 a second."""

    def __init__(self, target: Target, prefix: str) -> None:
        self.target, self.prefix = target, prefix
        self.calls = 0

    async def run(self) -> None:
        client = redis.asyncio.Redis.from_url(SHARED_REDIS, socket_timeout=1.0)
        kit = Integration("acme", redis=client, key_prefix=self.prefix, flush_interval=0.2)
        try:
            async with kit, aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
                while True:
                    async with http.get(self.target.url("/ok")) as resp:
                        await resp.read()
                    self.calls += 1
                    await asyncio.sleep(0.1)
        finally:
            await client.aclose()


def daemon_config(slack: FakeSlack, prefix: str, **traffic: Any) -> Config:
    return parse_config(json.dumps({
        "monitor": {"listen": "127.0.0.1:0", "redis_url": SHARED_REDIS, "evaluation_interval": "500ms"},
        "integrations": {"acme": {"traffic": {"key_prefix": f"{prefix}traffic:", **traffic}}},
        "alerting": {
            "slack": {"token": TOKEN, "channel": "#integration-alerts", "base_url": slack.api_url},
            "group_wait": "0s", "group_interval": "1s", "key_prefix": prefix,
        },
    }), env={})


async def test_a_service_that_stops_writing_fires_and_resolves_when_it_resumes(
    target: Target, slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    app = App(daemon_config(slack, prefix, max_silence="3s"))
    service = Service(target, f"{prefix}traffic:")
    posts = lambda: slack.delivered("chat.postMessage")  # noqa: E731
    await app.start()
    evaluated = evaluations(app)
    try:
        writing_since = time.time()
        running = asyncio.create_task(service.run())
        await until(lambda: service.calls >= 20, "the service's calls")
        # Writing all along: an evaluation a second past max_silence after the first write, and no alert.
        await until(lambda: any(t > writing_since + 4 for t in evaluated), "an evaluation past max_silence")
        assert posts() == []
        # The service stops: its counters are no longer written (stop: a redis-py write may drop one cancel).
        await stop(running)
        await until(lambda: posts(), "the traffic_silence alert in Slack")
        text = json.dumps(posts()[0].body)
        assert "acme real traffic: no calls recorded for" in text and "max 3.0s" in text

        running = asyncio.create_task(service.run())  # resumes
        await until(lambda: len(posts()) >= 2 and slack.delivered("chat.update"), "the resolve")
        assert posts()[1].body.get("thread_ts") == slack.delivered("chat.update")[0].body["ts"]
        await stop(running)
    finally:
        await app.close()


# ---- the rule on its own --------------------------------------------------------------------------------

NOW = 1_800_000_000.0


def rule_input(traffic: dict[str, Any] | None, writes: TrafficWrites | None, *, now: float = NOW,
               active: frozenset[str] = frozenset(), **rule: Any) -> RuleInput:
    integration: dict[str, Any] = {"alerts": {"traffic_silence": rule}}
    if traffic is not None:
        integration["traffic"] = traffic
    config = parse_config(yaml.safe_dump({"integrations": {"acme": integration}}), env={})
    return RuleInput(integration="acme", config=config.integrations["acme"], stats=Stats(), quotas={}, now=now,
                     active=active, facts=to_facts(writes))


def test_silence_counts_from_the_last_write_or_from_when_the_monitor_started_reading() -> None:
    assert RULES["traffic_silence"] is evaluate
    cfg = {"max_silence": "10m"}
    fresh = TrafficWrites(watching_since=NOW - 3600, last_write=NOW - 599, fresh=True)
    (cond,) = evaluate(rule_input(cfg, fresh))
    assert cond.active is False and cond.key == "acme/traffic_silence/-/warning"
    (cond,) = evaluate(rule_input(cfg, TrafficWrites(watching_since=NOW - 3600, last_write=NOW - 601, fresh=True)))
    assert cond.active and cond.summary.startswith("acme real traffic: no calls recorded for 10m (max 10m)")
    never = TrafficWrites(watching_since=NOW - 300, last_write=None, fresh=True)
    (cond,) = evaluate(rule_input(cfg, never))
    assert cond.active is False  # never written: counted from the first read, 5 minutes ago
    (cond,) = evaluate(rule_input(cfg, never, now=NOW + 301, severity="critical", keep_firing_for="1m"))
    assert cond.active and "never seen" in cond.details["last write"] and cond.severity == "critical"
    assert cond.keep_firing_for == 60


def test_a_firing_silence_of_a_service_never_seen_writing_holds_after_a_restart() -> None:
    """Never written since this monitor started reading: the silence before a restart is unknown. Judged
    "not silent", the incident resolved at every restart and fired again as a new one max_silence later."""
    cfg = {"max_silence": "10m"}
    firing = frozenset({"acme/traffic_silence/-/warning"})
    restarted = TrafficWrites(watching_since=NOW - 60, last_write=None, fresh=True)
    assert list(evaluate(rule_input(cfg, restarted, active=firing))) == []  # held
    (cond,) = evaluate(rule_input(cfg, restarted, now=NOW + 540, active=firing))
    assert cond.active  # the watch alone is max_silence long: judged again, still silent
    (cond,) = evaluate(rule_input(cfg, restarted))
    assert cond.active is False  # not firing: "not silent yet", as before
    written = TrafficWrites(watching_since=NOW - 60, last_write=NOW - 30, fresh=True)
    (cond,) = evaluate(rule_input(cfg, written, active=firing))
    assert cond.active is False  # a write seen: recovered


def test_off_unless_configured_and_no_verdict_on_data_it_could_not_read() -> None:
    long_ago = TrafficWrites(watching_since=NOW - 86400, last_write=NOW - 86400, fresh=True)
    assert list(evaluate(rule_input({}, long_ago))) == []  # a traffic section without max_silence
    assert list(evaluate(rule_input(None, long_ago))) == []
    stale = TrafficWrites(watching_since=NOW - 86400, last_write=NOW - 86400, fresh=False)
    assert list(evaluate(rule_input({"max_silence": "1m"}, stale))) == []  # Redis unreadable: hold
    assert list(evaluate(rule_input({"max_silence": "1m"}, None))) == []  # not read (yet) by this replica


def test_a_firing_alert_the_config_no_longer_asks_for_is_cleared() -> None:
    firing = frozenset({"acme/traffic_silence/-/warning"})
    long_ago = TrafficWrites(watching_since=NOW - 86400, last_write=NOW - 86400, fresh=True)
    (cond,) = evaluate(rule_input({}, long_ago, active=firing))
    assert cond.active is False and cond.key == "acme/traffic_silence/-/warning"
    conds = {c.key: c.active for c in evaluate(rule_input({"max_silence": "1m"}, long_ago, active=firing,
                                                          severity="critical"))}
    assert conds == {"acme/traffic_silence/-/warning": False, "acme/traffic_silence/-/critical": True}


def test_the_schedule_counts_silence_only_inside_it() -> None:
    # Mon 2027-01-04 12:00 UTC; window 13:00-14:00 UTC every day: outside it, silence is expected.
    monday_noon = 1_799_064_000.0
    cfg = {"max_silence": "10m", "schedule": {"start": "13:00", "end": "14:00"}}
    writes = TrafficWrites(watching_since=monday_noon - 86400, last_write=monday_noon - 7200, fresh=True)
    (cond,) = evaluate(rule_input(cfg, writes, now=monday_noon))
    assert cond.active is False
    (cond,) = evaluate(rule_input(cfg, writes, now=monday_noon + 3600 + 601))
    assert cond.active
