"""The daemon's Redis connection (monitor/redis_connection.py): one retry policy for every client, one
owner of ``integration_monitor_redis_up``, components that report their own state separately.

Real redis-servers of the test's own, stopped and started (the ``own_redis`` fixture)."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from daemon_support import daemon_config, get, on_shared_redis, samples
from redis_servers import OwnRedis
from targets import Target
from waiting import until

from integration_kit import supervisor as supervisor_module
from integration_kit.redact import Redactor
from monitor.app import App
from monitor.logs import setup_logging
from monitor.metrics import Metrics
from monitor.redis_connection import RedisHealth, connect
from monitor.settings import parse_config
from monitor.webhooks.reader import WebhookReader

ROOT = Path(__file__).resolve().parent.parent


async def test_the_monitors_client_survives_a_connection_the_restarted_server_closed(own_redis: OwnRedis) -> None:
    """redis-py's ``from_url`` gives a client no retry at all: the first command after a Redis restart
    fails on the pooled connection the server closed. The monitor's clients retry a blip."""
    await own_redis.start()
    client = connect(own_redis.url)
    try:
        await client.set("k", "1")
        await own_redis.stop()
        await own_redis.start()
        assert await client.set("k", "2") is True
        assert await client.get("k") == b"2"
    finally:
        await client.aclose()


async def test_redis_health_follows_an_outage_and_logs_each_change_once(
    own_redis: OwnRedis, log_stream: io.StringIO
) -> None:
    await own_redis.start()
    metrics, client = Metrics(), connect(own_redis.url)
    redactor = Redactor()
    setup_logging(redactor, stream=log_stream)
    health = RedisHealth(client, metrics=metrics, redactor=redactor, where="here", interval=0.05, timeout=0.5)
    up = lambda: metrics.registry.get_sample_value("integration_monitor_redis_up")  # noqa: E731
    try:
        await health.start()
        assert up() == 1 and health.up is True and health.ready() == (True, "")
        await own_redis.stop()
        await until(lambda: up() == 0, "redis_up 0")
        assert "Connect" in health.status()["error"] and health.ready() == (True, "")  # down ≠ not ready
        checked = {health.checked_at}

        def several_checks_failed() -> bool:
            checked.add(health.checked_at)
            return len(checked) > 3

        await until(several_checks_failed, "three more failed checks")  # still one line in the log
        await own_redis.start()
        await until(lambda: up() == 1, "redis_up 1 again")
        assert health.status()["error"] is None
    finally:
        await health.close()
        await client.aclose()
    logs = log_stream.getvalue()
    assert logs.count("does not answer") == 1 and logs.count("answers again after") == 1


def test_only_the_redis_health_check_writes_redis_up() -> None:
    writers = sorted(
        str(path.relative_to(ROOT))
        for package in ("integration_kit", "checks", "alerts", "monitor")
        for path in (ROOT / package).rglob("*.py")
        if re.search(r"redis_up(_gauge)?\.set\(", path.read_text())
    )
    assert writers == ["monitor/redis_connection.py"]


async def test_a_component_failing_its_reads_does_not_flap_redis_up(target: Target, own_redis: OwnRedis) -> None:
    """The Redis user may read the webhook ledger but not SCAN (an ACL set too tight for the quota
    reader): the quota component says it fails, the webhook reader says it works, Redis stays up — where
    each component used to write redis_up itself, 0 and 1 in turn."""
    await own_redis.start(
        "--user", "default", "off", "--user", "mon", "on", ">monpass", "~*", "&*", "+@connection", "+ping",
        "+hgetall", "+time", "+@read", "-scan",
    )
    extra = (
        '    quotas: [{name: api, source: redis, format: counter, match: "rl:acme:*", limit: 10, interval: 50ms}]\n'
        "    webhooks: {max_silence: 30m}"
    )
    text = daemon_config(target, extra=extra).replace(
        "monitor:\n", f"monitor:\n  redis_url: redis://mon:monpass@127.0.0.1:{own_redis.port}/0\n"
                      "  evaluation_interval: 100ms\n", 1,
    )
    app = App(parse_config(text, env={}))
    await app.start()
    try:
        values = lambda: samples(app.metrics.render_text().decode())  # noqa: E731
        quota_ok = ("integration_monitor_component_ok", (("component", "quota"),))
        webhooks_ok = ("integration_monitor_component_ok", (("component", "webhooks"),))
        await until(lambda: values().get(quota_ok) == 0 and values().get(webhooks_ok) == 1, "both verdicts")
        seen = set()
        for _ in range(30):  # 1.5 s: dozens of quota reads and several webhook reads
            seen.add(values()[("integration_monitor_redis_up", ())])
            await asyncio.sleep(0.05)
        assert seen == {1.0}
        problem = app.status_document()["components"]["quota"]["problem"]
        assert "NOPERM" in problem or "permission" in problem, problem
        assert "monpass" not in problem
    finally:
        await app.close()


async def test_a_crashing_component_loop_is_restarted_counted_and_shown(
    target: Target, shared_redis: redis.asyncio.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook reader's loop had no catch-all: a bug killed it for good while /readyz stayed green.
    Supervised, each crash is counted, /readyz says so until the loop has run stable_after again."""
    monkeypatch.setattr(supervisor_module, "STABLE_AFTER", 1.0)
    crashes = 0
    real_snapshot = WebhookReader._snapshot

    def buggy(self: WebhookReader, *args: Any) -> Any:
        nonlocal crashes
        if crashes < 2:
            crashes += 1
            raise KeyError("a bug in the reader")
        return real_snapshot(self, *args)

    monkeypatch.setattr(WebhookReader, "_snapshot", buggy)
    # Under the test's own prefixes: with the defaults its failing check's incident (evaluated every 100 ms) was
    # adopted by the next run of it, any suite's, past its group_wait, and posted to the real Slack.
    text = on_shared_redis(daemon_config(target, extra=f'    webhooks: {{max_silence: 30m, key_prefix: "{prefix}"}}'),
                           prefix, monitor="  evaluation_interval: 100ms\n")
    app = App(parse_config(text, env={}))
    await app.start()
    try:
        url = app.server.url
        await until(lambda: crashes == 1, "the first crash")
        status, _, body = await get(f"{url}/readyz")
        assert status == 503 and "webhooks: loop webhook-reader crashed" in body
        errors = ("integration_monitor_component_errors_total", (("component", "webhooks"),))
        await until(lambda: samples(app.metrics.render_text().decode()).get(errors) == 2, "two crashes")
        loop = app.status_document()["components"]["webhooks"]["loops"]["webhook-reader"]
        assert loop["crashes"] == 2 and "KeyError" in loop["last_error"]
        await until(lambda: app.status_document()["components"]["webhooks"]["redis"] == "ok", "reads resume")
        await until(lambda: app.readiness() == (True, []), "ready again")
        status, _, _ = await get(f"{url}/readyz")
        assert status == 200
    finally:
        await app.close()
