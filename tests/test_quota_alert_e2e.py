"""Quota alerts through the real daemon, against counters the real ``limits`` package writes in Redis.

A limiter is hit past its limit: the quota's critical fires in Slack (a loopback server speaking Slack's
Web API) and inhibits its warning, which /metrics and /api/status say (issue 13, finding 2: both showed
as plainly firing). Then the integration goes idle, the fixed window's key expires by TTL, and the alert
must resolve: no key is nothing used, not "unknown" (finding 1: the alert stayed firing until the
limiter wrote a new key).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import limits
import limits.aio.storage
import limits.aio.strategies
import pytest
import redis.asyncio
from daemon_support import get, samples
from fake_slack import TOKEN, FakeSlack
from redis_servers import SHARED_REDIS, tag_of
from targets import Target
from waiting import until

from integration_kit.tasks import stop
from monitor.app import App
from monitor.settings import parse_config

WINDOW = 2  # seconds: the fixed window's key lives this long after its first hit


def _config(target: Target, slack: FakeSlack, prefix: str) -> str:
    return json.dumps({
        # A cluster of its own (its keys under the test's prefix): under the default prefix, the membership
        # and streak keys another test or suite left on the shared Redis would make this daemon a peer of theirs.
        "monitor": {"listen": "127.0.0.1:0", "redis_url": SHARED_REDIS, "evaluation_interval": "200ms",
                    "cluster": {"key_prefix": f"{prefix}cluster:"}},
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


class BusyLimiter:
    """An integration that keeps using its whole quota (10 per WINDOW seconds), window after window, through
    the limits package's own fixed-window limiter; ``stop()`` makes it idle."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        # The storage's connections in a pool of our own, closed by stop(): limits never closes its own, and
        # the connection the cancelled hit() was using was left closing when the test's loop ended
        # (ResourceWarning: unclosed transport, in whichever later test the collector found it).
        self._pool = redis.asyncio.ConnectionPool.from_url(SHARED_REDIS)
        pool: Any = self._pool  # (limits types its options loosely)
        self.limiter = limits.aio.strategies.FixedWindowRateLimiter(limits.aio.storage.RedisStorage(
            f"async+{SHARED_REDIS}", implementation="redispy", connection_pool=pool))
        self.item = limits.RateLimitItemPerSecond(10, WINDOW)
        self._task = asyncio.create_task(self._hit())

    async def _hit(self) -> None:
        while True:
            for _ in range(10):
                await self.limiter.hit(self.item, self.identity)
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        # (stop: cancelled once, a hit() in redis-py's wait_for may drop the cancellation and loop on)
        await stop(self._task)
        await self._pool.aclose()


@pytest.fixture
async def busy(prefix: str) -> AsyncIterator[BusyLimiter]:
    limiter = BusyLimiter(tag_of(prefix))
    yield limiter
    await limiter.stop()


@pytest.fixture
async def app(target: Target, slack: FakeSlack, prefix: str) -> AsyncIterator[App]:
    daemon = App(parse_config(_config(target, slack, prefix)))
    await daemon.start()
    yield daemon
    await daemon.close()


async def test_critical_quota_alert_shows_its_warning_inhibited(app: App, busy: BusyLimiter, slack: FakeSlack) -> None:
    await until(lambda: "acme/quota/api/critical" in _firing(app), "the critical quota alert")
    await until(lambda: slack.delivered("chat.postMessage"), "the alert in Slack")
    _, _, metrics = await get(f"{app.server.url}/metrics")
    series = samples(metrics)
    labels = (("alert", "quota"), ("integration", "acme"))
    for severity, inhibited in (("critical", 0), ("warning", 1)):
        key = tuple(sorted((*labels, ("severity", severity))))
        assert series[("integration_alert_firing", key)] == 1  # both fire (the state is truthful)…
        assert series[("integration_alert_inhibited", key)] == inhibited  # …and the warning is held back
    _, _, body = await get(f"{app.server.url}/api/status")
    alerts = json.loads(body)["components"]["alerts"]["alerts"]
    assert alerts["inhibited_by"] == {"acme/quota/api/warning": "acme/quota/api/critical"}
    told = " ".join(json.dumps(p.body, ensure_ascii=False) for p in slack.delivered("chat.postMessage"))
    assert "(≥ 95.0%)" in told and "(≥ 80.0%)" not in told  # the critical was posted, the warning not


async def test_quota_alert_resolves_once_the_limiters_window_expires(
    app: App, busy: BusyLimiter, slack: FakeSlack, shared_redis: redis.asyncio.Redis
) -> None:
    posts = lambda: slack.delivered("chat.postMessage")  # noqa: E731
    await until(lambda: posts() and "acme/quota/api/critical" in _firing(app), "the quota alert in Slack")
    assert "quota api" in posts()[0].body["text"]

    await busy.stop()  # idle from now on: the key expires by its TTL within WINDOW seconds
    keys = [k async for k in shared_redis.scan_iter(match=f"LIMITS:LIMITER/{busy.identity}/*")]
    assert keys, "limits wrote no key where the quota looks"
    await until(lambda: not _firing(app), "the quota alerts to resolve after the window expired")
    assert not await shared_redis.exists(*keys)  # it resolved because the key expired, not earlier
    await until(lambda: any(p.body.get("thread_ts") for p in posts()), "the resolve in the thread")

    status = app.status_document()
    quota = next(q for q in status["components"]["quota"]["quotas"] if q["quota"] == "api")
    assert (quota["used"], quota["limit"], quota["keys"]) == (0, 10, 0)  # the remembered limit
