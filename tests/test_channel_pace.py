"""Slack's pace is the channel's: replicas sharing a Redis post to one channel at its pace together, and a
429's Retry-After holds every replica back (real Redis, the loopback fake Slack)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from fake_slack import FakeSlack, Reply
from test_slack_delivery import alert, bot, notification, webhook
from waiting import until

from alerts.channel_pace import ChannelPace
from alerts.delivery import DeliveryPolicy, Dispatcher

SLOW = DeliveryPolicy(pace=3600)  # one message an hour per channel: a second one in this test is a breach
QUICK = DeliveryPolicy(pace=0.01)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.close()


def replica(fake: FakeSlack, client: redis.asyncio.Redis, prefix: str, name: str, policy: DeliveryPolicy) -> Dispatcher:
    """A replica's dispatcher as ``Dispatcher.for_alerting`` builds it: its own outbox, alerting's prefix."""
    notifier = bot(fake, redis_client=client, prefix=prefix)
    return Dispatcher([notifier], redis=client, key_prefix=f"{prefix}outbox:{name}:", log_prefix=prefix, policy=policy)


async def second_replica_holds_back(fake: FakeSlack, other: Dispatcher) -> None:
    """``other`` has a message queued: until it decided, either it posted (a breach) or it waits its turn."""
    await other.submit(notification("b", alert("b/y")))

    def decided() -> bool:
        return len(fake.requests) > 1 or other.status()["notifiers"]["slack"]["parked_seconds"] > 0

    await until(decided, "the second replica to post or to wait its turn")
    assert len(fake.requests) == 1, [r.kind for r in fake.requests]
    assert other.status()["notifiers"]["slack"]["parked_seconds"] > 3000


async def test_two_replicas_post_to_one_channel_at_its_pace_together(
    fake: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    first, second = (replica(fake, shared_redis, prefix, name, SLOW) for name in ("r1", "r2"))
    await first.start()
    await second.start()
    try:
        await first.submit(notification("a", alert("a/x")))
        await asyncio.wait_for(fake.wait_requests(1), 10)
        await second_replica_holds_back(fake, second)
    finally:
        await first.close(grace=1)
        await second.close(grace=1)


async def test_a_retry_after_holds_every_replica_back(
    fake: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    fake.then(Reply(status=429, retry_after="3600"))
    first, second = (replica(fake, shared_redis, prefix, name, QUICK) for name in ("r1", "r2"))
    await first.start()
    await second.start()
    try:
        await first.submit(notification("a", alert("a/x")))
        await until(lambda: first.status()["notifiers"]["slack"]["parked_seconds"] > 0, "the 429 parking the lane")
        await second_replica_holds_back(fake, second)
    finally:
        await first.close(grace=1)
        await second.close(grace=1)


async def test_claims_at_once_from_many_writers_grant_one_slot(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    paces = [ChannelPace(shared_redis, prefix, timeout=5) for _ in range(20)]
    waits = await asyncio.gather(*(pace.claim("slack:#alerts", 3600) for pace in paces))
    first, *others = sorted(waits)
    assert first == 0 and all(wait > 3000 for wait in others)
    await paces[0].park("slack:#alerts", 1)  # a shorter Retry-After never brings the slot forward
    assert await paces[0].claim("slack:#alerts", 3600) > 3000


async def test_webhook_channel_key_names_no_secret(fake: FakeSlack) -> None:
    key = webhook(fake).channel_key
    assert key is not None and "webhooksecret" not in key and key.startswith("slack-webhook:")


async def test_without_redis_or_while_it_is_down_each_replica_paces_itself() -> None:
    assert await ChannelPace(None, "im:", timeout=1).claim("slack:#alerts", 3600) == 0
    down = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        assert await ChannelPace(down, "im:", timeout=1).claim("slack:#alerts", 3600) == 0
    finally:
        await down.aclose()
