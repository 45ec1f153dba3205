"""One voice per incident with three daemons (real processes) sharing a private redis-server, a loopback
Slack and a vendor that goes down on purpose (issue 10): the owner of an integration is killed, the
fleet is restarted one by one, Redis goes away — and each incident is still posted once, its resolve lands
once in the original thread, and nothing is sent twice.

Short heartbeats, TTLs and intervals keep these tests quick; every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_slack import TOKEN, FakeSlack, Recorded
from fleet import Fleet, fleet_on
from redis_servers import OwnRedis
from targets import Reply, Target
from waiting import NO_ANSWER, until

HEARTBEAT = 0.3
TTL = 2.0
INTERVAL = 0.5
REPLICAS = ("r0", "r1", "r2")
INTEGRATIONS = ("payments", "crm", "shipping")
DOWN = Reply(status=503, body="upstream unavailable")
UP = Reply(json={"ok": True})


def incident_config(target: Target, slack: FakeSlack, redis_url: str) -> str:
    integrations = {
        name: {
            "checks": [{"name": f"c{i}", "kind": "http", "url": target.url(f"/{name}/c{i}"),
                        "interval": f"{INTERVAL:g}s", "timeout": "1s"} for i in range(3)],
            "alerts": {"probe_down": {"consecutive_failures": 2, "keep_firing_for": "0s"},
                       "error_rate": {"enabled": False}, "latency": {"enabled": False}},
        }
        for name in INTEGRATIONS
    }
    return json.dumps({
        "monitor": {"redis_url": redis_url, "evaluation_interval": "500ms", "shutdown_grace": "5s",
                    "cluster": {"heartbeat": f"{int(HEARTBEAT * 1000)}ms", "ttl": f"{TTL:g}s"}},
        "integrations": integrations,
        "alerting": {"slack": {"token": TOKEN, "channel": "#integration-alerts", "base_url": slack.api_url},
                     "group_wait": "0s", "group_interval": "1s"},
    })


@pytest.fixture
async def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, target: Target, slack: FakeSlack, own_redis: OwnRedis
) -> AsyncIterator[Fleet]:
    for name in INTEGRATIONS:
        for i in range(3):
            target.route(f"/{name}/c{i}", UP)
    async with fleet_on(own_redis, incident_config(target, slack, own_redis.url), request, tmp_path) as started:
        yield started


def set_all(target: Target, integration: str, reply: Reply, check: str = "c0") -> None:
    """One of the integration's checks goes down (or up); its other two keep answering. One failing check
    makes one alert, so its resolve is one message (several would resolve one by one, as they recover)."""
    target.route(f"/{integration}/{check}", reply)


def top_level(slack: FakeSlack, integration: str) -> list[Recorded]:
    """The top-level posts (not thread replies) about ``integration``."""
    return [p for p in slack.delivered("chat.postMessage")
            if not p.body.get("thread_ts") and integration in json.dumps(p.body)]


def replies(slack: FakeSlack, thread: str) -> list[Recorded]:
    return [p for p in slack.delivered("chat.postMessage") if p.body.get("thread_ts") == thread]


def ts_of(slack: FakeSlack, post: Recorded) -> str:
    """The ts Slack gave a delivered top-level post (the fake numbers its messages in order)."""
    for ts, message in slack.messages.items():
        if message.thread_ts is None and message.text == str(post.body.get("text", "")):
            return ts
    raise AssertionError(f"no message for {post.body.get('text')!r}")


async def start_three(fleet: Fleet) -> None:
    await asyncio.gather(*(fleet.start(name) for name in REPLICAS))
    await fleet.settled(set(REPLICAS))


async def owner_of(fleet: Fleet, integration: str) -> str:
    owner: str = (await fleet.running()[0].status())["integrations"][integration]["owner"]
    return owner


async def posted_once(slack: FakeSlack, integration: str, within: float = 30.0) -> str:
    """Wait for the incident's post; return its ts."""
    await until(lambda: top_level(slack, integration), f"the {integration} incident in Slack", within=within)
    return ts_of(slack, top_level(slack, integration)[0])


def one_post(slack: FakeSlack, integration: str) -> None:
    posts = top_level(slack, integration)
    assert len(posts) == 1, (integration, [p.body.get("text") for p in posts])


async def resolved_once(fleet: Fleet, slack: FakeSlack, target: Target, integration: str, thread: str,
                        check: str = "c0") -> None:
    """Still one post; the vendor recovers: exactly one resolve, in the incident's thread, nothing after it."""
    one_post(slack, integration)
    set_all(target, integration, UP, check)
    await until(lambda: replies(slack, thread), f"the {integration} resolve in its thread")
    await fleet.evaluated(4)  # every replica has seen the recovery and evaluated it (group_interval: 2 of them)
    assert len(replies(slack, thread)) == 1, [r.body.get("text") for r in replies(slack, thread)]
    one_post(slack, integration)


async def logged_as_sent(fleet: Fleet, integration: str) -> None:
    """The owner's lane has recorded the post (its notification log written): a kill before that is a crash
    between Slack's answer and the log, after which the next owner posts again by design (duplicates beat
    loss), not the handover these tests are about."""
    owner = fleet.replicas[await owner_of(fleet, integration)]

    async def sent() -> bool:
        lanes = (await owner.status())["components"]["notifiers"]["notifiers"]
        return bool(lanes["slack"]["sent"] >= 1)

    await until(sent, f"{owner.name} to log its {integration} post as sent", ignoring=NO_ANSWER)


async def incident(fleet: Fleet, target: Target, slack: FakeSlack) -> str:
    """Three replicas; payments goes down and is posted (and logged as sent). Returns the post's ts."""
    await start_three(fleet)
    set_all(target, "payments", DOWN)
    thread = await posted_once(slack, "payments")
    await logged_as_sent(fleet, "payments")
    return thread


async def test_killing_the_owner_mid_incident_keeps_one_post_and_one_threaded_resolve(
    fleet: Fleet, target: Target, slack: FakeSlack
) -> None:
    thread = await incident(fleet, target, slack)
    victim = await owner_of(fleet, "payments")
    await fleet.kill(victim)
    await fleet.settled(set(REPLICAS) - {victim}, within=TTL + 10)
    assert await owner_of(fleet, "payments") != victim
    await fleet.evaluated(4)  # the new owner evaluates the still failing checks
    await resolved_once(fleet, slack, target, "payments", thread)


async def test_a_rolling_restart_mid_incident_still_posts_once(
    fleet: Fleet, target: Target, slack: FakeSlack
) -> None:
    thread = await incident(fleet, target, slack)
    for name in REPLICAS:
        assert await fleet.stop(name) == 0
        await fleet.settled(set(REPLICAS) - {name})
        await fleet.start(name)
        await fleet.settled(set(REPLICAS))
    await fleet.evaluated(4)
    await resolved_once(fleet, slack, target, "payments", thread)


async def test_redis_down_mid_incident_no_incident_goes_unposted_and_none_is_posted_twice(
    fleet: Fleet, target: Target, slack: FakeSlack, own_redis: OwnRedis
) -> None:
    thread = await incident(fleet, target, slack)
    # The incident that starts during the outage: a check probed by another replica than its owner's.
    doc = await fleet.running()[0].status()
    elsewhere = [(name, check) for name in INTEGRATIONS if name != "payments"
                 for check, entry in doc["integrations"][name]["checks"].items()
                 if entry["probed_by"] != doc["integrations"][name]["owner"]]
    assert elsewhere, doc["integrations"]
    integration, check = elsewhere[0]
    await own_redis.stop()
    outage = time.monotonic()
    set_all(target, integration, DOWN, check)
    # Posted while nobody can coordinate (fail open, never silent).
    second = await posted_once(slack, integration, within=3 * TTL)
    await asyncio.sleep(max(0.0, 3 * TTL - (time.monotonic() - outage)))  # every lease has run out meanwhile
    await own_redis.start()  # empty: this Redis kept nothing (no persistence)
    await fleet.settled(set(REPLICAS), within=TTL * 5)
    await fleet.evaluated(4)  # ownership and alert state reconciled, evaluations went on
    await resolved_once(fleet, slack, target, "payments", thread)
    await resolved_once(fleet, slack, target, integration, second, check)
