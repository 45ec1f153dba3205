"""The whole alert path in the real daemon: probe → stats → rules → state in Redis → Slack bot mode.

A vendor API on loopback goes down; the daemon posts one Slack message (to a loopback server speaking
Slack's Web API), is restarted mid-incident and sends nothing twice, then the API recovers and the same
message is updated and the resolve is posted in its thread. A probe that raises instead of returning a
result fails its check (class ``internal``) and pages like any failure.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest
import redis.asyncio
from daemon_support import evaluations, get, samples
from fake_slack import TOKEN, FakeSlack
from redis_servers import SHARED_REDIS
from targets import Reply, Target
from waiting import until

from checks import PROBES
from monitor.app import App
from monitor.logs import setup_logging
from monitor.settings import parse_config


def _config(target: Target, slack: FakeSlack, prefix: str, redis_url: str = SHARED_REDIS,
            group_interval: str = "1s") -> str:
    return json.dumps({
        # The cluster's keys under the test's prefix too: under the default one, the same test of another suite
        # on the shared Redis continued this one's failed-runs-in-a-row count (<prefix>streak:acme), and the
        # alert fired after two runs here.
        "monitor": {"listen": "127.0.0.1:0", "redis_url": redis_url, "evaluation_interval": "1s",
                    "cluster": {"key_prefix": f"{prefix}cluster:"}},
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
            "group_wait": "0s", "group_interval": group_interval, "key_prefix": prefix,
        },
    })


async def test_down_restart_recover_posts_once_updates_and_threads(
    target: Target, slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    target.route("/api", Reply(status=503, body="upstream unavailable"))
    config = parse_config(_config(target, slack, prefix))
    posts = lambda: slack.delivered("chat.postMessage")  # noqa: E731
    app = App(config)
    await app.start()
    try:
        await until(lambda: len(posts()) >= 1, "the down alert in Slack")
        first = posts()[0].body
        assert "acme" in json.dumps(first) and "down" in first["text"]
    finally:
        await app.close()

    # Restart mid-incident: the firing alert is in Redis, inside repeat_interval: nothing is re-sent.
    app = App(config)
    await app.start()
    evaluated = evaluations(app)
    try:
        await until(lambda: len(evaluated) >= 5 and (s := app.status_store.get("acme", "api")) is not None
                    # (the count goes on from before the restart, as the metric's: every run here failed)
                    and s.runs >= 5 and s.consecutive_failures >= s.runs,
                    "several evaluation cycles and probe runs, all still failing")
        assert len(posts()) == 1, [p.body.get("text") for p in posts()]

        target.route("/api", Reply(json={"ok": True}))
        await until(lambda: len(posts()) >= 2 and slack.delivered("chat.update"), "the resolve")
    finally:
        await app.close()
    resolve = posts()[1].body
    assert resolve.get("thread_ts") == slack.delivered("chat.update")[0].body["ts"]
    assert len(posts()) == 2  # the alert and the resolve in its thread; no duplicate


async def test_a_probe_that_raises_fails_its_check_and_pages(
    target: Target, slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str,
    monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO,
) -> None:
    """Issue 13, finding 10: a probe that raised (a bug, or an aiohttp older than the floor without
    ClientConnectorDNSError) recorded nothing, so probe_down never fired. Now each run is a failed run of
    class ``internal``, counted, logged once with its traceback, and the check pages."""

    async def broken(check: Any, ctx: Any) -> Any:
        raise AttributeError("module 'aiohttp' has no attribute 'ClientConnectorDNSError'")

    monkeypatch.setitem(PROBES, "http", dataclasses.replace(PROBES["http"], probe=broken))
    app = App(parse_config(_config(target, slack, prefix)))
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    try:
        await until(lambda: slack.delivered("chat.postMessage"), "the down alert in Slack")
        text = json.dumps(slack.delivered("chat.postMessage")[0].body)
        assert "down" in text and "internal" in text
        _, _, body = await get(f"{app.server.url}/metrics")
        runs = samples(body)[("integration_probe_errors_total",
                              (("check", "api"), ("error_class", "internal"), ("integration", "acme")))]
        assert runs >= 3
        status = app.status_document()["integrations"]["acme"]["checks"]["api"]
        assert status["error_class"] == "internal" and "AttributeError" in status["detail"]
    finally:
        await app.close()
    assert log_stream.getvalue().count("Traceback (most recent call last)") == 1  # once, not every run


async def test_the_resolve_is_not_held_by_group_interval(
    target: Target, slack: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """A group_interval of an hour batches news of firing alerts, not the resolve (README, "Alert timing"):
    the API recovers and the message is updated and the resolve threaded within seconds, not an hour."""
    target.route("/api", Reply(status=503, body="upstream unavailable"))
    config = parse_config(_config(target, slack, prefix, group_interval="1h"))
    posts = lambda: slack.delivered("chat.postMessage")  # noqa: E731
    app = App(config)
    await app.start()
    try:
        await until(lambda: len(posts()) >= 1, "the down alert in Slack")
        target.route("/api", Reply(json={"ok": True}))
        await until(lambda: len(posts()) >= 2 and slack.delivered("chat.update"), "the resolve")
    finally:
        await app.close()
    assert posts()[1].body.get("thread_ts") == slack.delivered("chat.update")[0].body["ts"]
    assert "resolved" in json.dumps(posts()[1].body).lower()
