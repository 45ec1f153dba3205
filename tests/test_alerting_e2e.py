"""The whole alert path in the real daemon: probe → stats → rules → state in Redis → Slack bot mode.

A vendor API on loopback goes down; the daemon posts one Slack message (to a loopback server speaking
Slack's Web API), is restarted mid-incident and sends nothing twice, then the API recovers and the same
message is updated and the resolve is posted in its thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import redis.asyncio
from fake_slack import TOKEN, FakeSlack
from redis_servers import SHARED_REDIS
from targets import Reply, Target

from monitor.app import App
from monitor.settings import parse_config


def _config(target: Target, slack: FakeSlack, prefix: str, redis_url: str = SHARED_REDIS) -> str:
    return json.dumps({
        "monitor": {"listen": "127.0.0.1:0", "redis_url": redis_url, "evaluation_interval": "1s"},
        "integrations": {"acme": {
            "checks": [{"name": "api", "kind": "http", "url": target.url("/api"), "interval": "1s",
                        "timeout": "2s"}],
            "alerts": {
                "probe_down": {"consecutive_failures": 3, "keep_firing_for": "0s"},
                "error_rate": {"enabled": False},
                "latency": {"enabled": False},
            },
        }},
        "alerting": {
            "slack": {"token": TOKEN, "channel": "#integration-alerts", "base_url": slack.api_url},
            "group_wait": "0s", "group_interval": "1s", "key_prefix": prefix,
        },
    })


async def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 30.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_down_restart_recover_posts_once_updates_and_threads(
    target: Target, slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    target.route("/api", Reply(status=503, body="upstream unavailable"))
    config = parse_config(_config(target, slack, prefix))
    posts = lambda: slack.delivered("chat.postMessage")  # noqa: E731
    app = App(config)
    await app.start()
    try:
        await _until(lambda: len(posts()) >= 1, "the down alert in Slack")
        first = posts()[0].body
        assert "acme" in json.dumps(first) and "down" in first["text"]
    finally:
        await app.close()

    # Restart mid-incident: the firing alert is in Redis, inside repeat_interval: nothing is re-sent.
    app = App(config)
    await app.start()
    try:
        await asyncio.sleep(5)  # several evaluation cycles and probe runs, all still failing
        assert len(posts()) == 1, [p.body.get("text") for p in posts()]

        target.route("/api", Reply(json={"ok": True}))
        await _until(lambda: len(posts()) >= 2 and slack.delivered("chat.update"), "the resolve")
    finally:
        await app.close()
    resolve = posts()[1].body
    assert resolve.get("thread_ts") == slack.delivered("chat.update")[0].body["ts"]
    assert len(posts()) == 2  # the alert and the resolve in its thread; no duplicate
