"""Quota alerts through the real daemon, against counters the real ``limits`` package writes in Redis.

A limiter is hit past its limit: the quota alert fires in Slack (a loopback server speaking Slack's Web
API). Then the integration goes idle, the fixed window's key expires by TTL, and the alert must resolve:
no key is nothing used, not "unknown" (issue 13, finding 1: the alert stayed firing until the limiter
wrote a new key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import limits
import limits.aio.storage
import limits.aio.strategies
import redis.asyncio
from daemon_support import until
from fake_slack import TOKEN, FakeSlack
from redis_servers import SHARED_REDIS, tag_of
from targets import Target

from monitor.app import App
from monitor.settings import parse_config

WINDOW = 2  # seconds: the fixed window's key lives this long after its first hit


def _config(target: Target, slack: FakeSlack, prefix: str) -> str:
    return json.dumps({
        "monitor": {"listen": "127.0.0.1:0", "redis_url": SHARED_REDIS, "evaluation_interval": "200ms"},
        "integrations": {"acme": {
            "checks": [{"name": "api", "kind": "http", "url": target.url("/ok"), "interval": "1s"}],
            "quotas": [{"name": "api", "source": "redis", "format": "limits", "interval": "200ms",
                        "rescan_interval": "1s", "match": f"LIMITS:LIMITER/{tag_of(prefix)}/*"}],
            "alerts": {
                "quota": {"for": "0s", "keep_firing_for": "0s"},
                "error_rate": {"enabled": False},
                "latency": {"enabled": False},
            },
        }},
        "alerting": {
            "slack": {"token": TOKEN, "channel": "#integration-alerts", "base_url": slack.api_url},
            "group_wait": "0s", "group_interval": "1s", "key_prefix": prefix,
        },
    })


def _firing(app: App) -> list[str]:
    return app.status_document()["components"]["alerts"]["alerts"]["firing"]


async def test_quota_alert_resolves_once_the_limiters_window_expires(
    target: Target, slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    storage = limits.aio.storage.RedisStorage(f"async+{SHARED_REDIS}")
    limiter = limits.aio.strategies.FixedWindowRateLimiter(storage)
    item = limits.RateLimitItemPerSecond(10, WINDOW)
    identity = tag_of(prefix)

    async def busy() -> None:  # the integration keeps using its whole quota, window after window
        while True:
            for _ in range(10):
                await limiter.hit(item, identity)
            await asyncio.sleep(0.1)

    app = App(parse_config(_config(target, slack, prefix)))
    traffic = asyncio.create_task(busy())
    posts = lambda: slack.delivered("chat.postMessage")  # noqa: E731
    try:
        await app.start()
        await until(lambda: posts() and "acme/quota/api/critical" in _firing(app), 30, "the quota alert in Slack")
        assert "quota api" in posts()[0].body["text"]

        traffic.cancel()  # idle from now on: the key expires by its TTL within WINDOW seconds
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        keys = [k async for k in shared_redis.scan_iter(match=f"LIMITS:LIMITER/{identity}/*")]
        assert keys, "limits wrote no key where the quota looks"
        await until(lambda: not _firing(app), 30, "the quota alerts to resolve after the window expired")
        assert not await shared_redis.exists(*keys)  # it resolved because the key expired, not earlier
        await until(lambda: any(p.body.get("thread_ts") for p in posts()), 30, "the resolve in the thread")

        status = app.status_document()
        quota = next(q for q in status["components"]["quota"]["quotas"] if q["quota"] == "api")
        assert (quota["used"], quota["limit"], quota["keys"]) == (0, 10, 0)  # the remembered limit
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        await app.close()
