"""Slack threads across a Redis outage, in the real daemon against a private redis-server that keeps its
data across a restart (append-only file), stopped and started mid-incident; Slack is a loopback server.

(a) An incident that fires while Redis is down posts once; when Redis is back the message reference the
daemon kept in memory wins over Redis' empty record, so the resolve edits that message and replies in
its thread. (b) An incident that resolves while Redis is down leaves Redis holding its old reference;
the next incident still starts a new message: a thread belongs to one incident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from daemon_support import evaluations, runs
from fake_slack import FakeSlack, Message
from redis_servers import OwnRedis
from targets import Reply, Target
from test_alerting_e2e import _config
from waiting import until

from monitor.app import App
from monitor.settings import parse_config

OUTAGE_WAIT = 40.0  # seconds before a wait fails: each spans Redis restarts (with appendfsync always)

@pytest.fixture
async def redis_server(own_redis: OwnRedis, tmp_path: Path) -> AsyncIterator[OwnRedis]:
    """The private redis-server, persisting to an append-only file so a restart keeps what it had."""
    options = ("--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path))
    await own_redis.start(*options)
    original = own_redis.start

    async def start_again(*more: str) -> None:
        await original(*options, *more)

    own_redis.start = start_again  # type: ignore[method-assign]
    yield own_redis


def _top_level(slack: FakeSlack) -> list[Message]:
    """Messages posted to the channel (not in a thread), oldest first."""
    return sorted((m for m in slack.messages.values() if m.thread_ts is None), key=lambda m: m.ts)


def _replies(slack: FakeSlack) -> list[Message]:
    return sorted((m for m in slack.messages.values() if m.thread_ts is not None), key=lambda m: m.ts)


def _in_step_with_redis(app: App) -> bool | None:
    """The alert engine's verdict on its state store after its last evaluation (None before any): False
    while Redis is down, True once an evaluation synced with it."""
    ok = app.metrics.registry.get_sample_value("integration_monitor_component_ok", {"component": "alerts"})
    return None if ok is None else ok == 1.0


async def _message_in_redis(redis_server: OwnRedis, ts: str) -> bool:
    """Whether the private Redis holds a Slack thread record (a hash with the message's ``ts``)."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        for key in await client.keys("*"):
            if await client.type(key) == b"hash" and await client.hget(key, "ts") == ts.encode():
                return True
        return False
    finally:
        await client.aclose()


def _updated(slack: FakeSlack) -> list[str]:
    """The ts of every message edited (chat.update), in order."""
    return [str(r.body["ts"]) for r in slack.delivered("chat.update")]


async def test_an_incident_that_fires_during_a_redis_outage_resolves_in_its_thread(
    target: Target, slack: FakeSlack, redis_server: OwnRedis, prefix: str
) -> None:
    target.route("/api", Reply(json={"ok": True}))
    app = App(parse_config(_config(target, slack, prefix, redis_server.url)))
    await app.start()
    evaluated = evaluations(app)
    try:
        await until(lambda: runs(app, "acme", "api"), "a few good runs", holds=lambda n: n >= 2, within=OUTAGE_WAIT)
        judged = len(evaluated)
        await until(lambda: len(evaluated) >= judged + 1 and _in_step_with_redis(app), "an evaluation with Redis up",
                    within=OUTAGE_WAIT)
        await redis_server.stop()
        target.route("/api", Reply(status=503, body="upstream unavailable"))
        await until(lambda: _top_level(slack), "the down alert, posted while Redis is down", within=OUTAGE_WAIT)
        await until(lambda: _in_step_with_redis(app) is False, "the engine out of step with Redis", within=OUTAGE_WAIT)
        await redis_server.start()  # back with what it had before the outage: no record of this message
        await until(lambda: _in_step_with_redis(app), "the engine in step with Redis again", within=OUTAGE_WAIT)
        target.route("/api", Reply(json={"ok": True}))
        await until(lambda: _replies(slack), "the resolve", within=OUTAGE_WAIT)
    finally:
        await app.close()
    posts = _top_level(slack)
    assert len(posts) == 1, [m.text for m in posts]  # no second top-level post for the resolve
    assert [m.thread_ts for m in _replies(slack)] == [posts[0].ts]
    assert _updated(slack) == [posts[0].ts]


async def test_an_incident_that_resolves_during_a_redis_outage_does_not_lend_its_thread_to_the_next(
    target: Target, slack: FakeSlack, redis_server: OwnRedis, prefix: str
) -> None:
    target.route("/api", Reply(status=503, body="upstream unavailable"))
    app = App(parse_config(_config(target, slack, prefix, redis_server.url)))
    await app.start()
    evaluated = evaluations(app)
    try:
        await until(lambda: _top_level(slack), "the first incident's post", within=OUTAGE_WAIT)
        await until(lambda: _message_in_redis(redis_server, _top_level(slack)[0].ts),
                    "the first message's reference in Redis", within=OUTAGE_WAIT)
        await redis_server.stop()
        target.route("/api", Reply(json={"ok": True}))
        await until(lambda: _replies(slack), "the first incident's resolve, while Redis is down", within=OUTAGE_WAIT)
        await until(lambda: _in_step_with_redis(app) is False, "the engine out of step with Redis", within=OUTAGE_WAIT)
        await redis_server.start()  # back with the first incident's reference still in it
        await until(lambda: _in_step_with_redis(app), "the engine in step with Redis again", within=OUTAGE_WAIT)
        target.route("/api", Reply(status=503, body="upstream unavailable again"))
        await until(lambda: len(_top_level(slack)) >= 2, "the second incident's own post", within=OUTAGE_WAIT)
        judged = len(evaluated)  # what else the daemon does about it (nothing to the first message): two more
        await until(lambda: len(evaluated) >= judged + 2, "two more evaluations", within=OUTAGE_WAIT)
    finally:
        await app.close()
    first, second = _top_level(slack)
    # The first message was edited once (resolved) and replied to once; the second incident never touched it.
    assert _updated(slack) == [first.ts]
    assert [m.thread_ts for m in _replies(slack)] == [first.ts]
    assert second.updates == 0
