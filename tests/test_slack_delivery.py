"""Slack delivery through a real loopback Slack: post/update/thread, 429 storms, 5xx, fatal errors,
webhook mode, and the Redis outbox across a restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from fake_slack import TOKEN, FakeSlack, Reply, block_kit_problems
from prometheus_client import CollectorRegistry
from waiting import until

from alerts.delivery import DeliveryPolicy, Dispatcher
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.notifier_config import SlackConfig
from alerts.notifiers import NotifierContext, SlackBotNotifier, SlackWebhookNotifier
from integration_kit.redact import Redactor
from monitor.commands.send_test_alert import send_test_alert
from monitor.metrics import Metrics
from monitor.settings import parse_config

CANARY = "sk_live_CANARY0123456789secret"
FAST = DeliveryPolicy(pace=0.01, backoff=0.05, max_backoff=0.2)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.close()


def alert(key: str, *, status: AlertStatus = AlertStatus.FIRING, summary: str | None = None, **kw: object) -> Alert:
    integration, _, check = key.partition("/")
    return Alert(
        key=key,
        integration=integration,
        alert="error_rate",
        severity=Severity.CRITICAL,
        status=status,
        summary=summary or f"error rate 40% on {check}",
        check=check,
        started_at=1_790_000_000.0,
        resolved_at=1_790_000_600.0 if status is AlertStatus.RESOLVED else None,
        error_classes={"http_5xx": 4},
        **kw,  # type: ignore[arg-type]
    )


def notification(group: str, *alerts: Alert) -> Notification:
    return Notification(group_key=group, alerts=alerts, created_at=1_790_000_000.0)


def bot(
    fake: FakeSlack,
    *,
    token: str = TOKEN,
    channel: str = "#alerts",
    redis_client: redis.asyncio.Redis | None = None,
    prefix: str = "im:",
    redactor: Redactor | None = None,
) -> SlackBotNotifier:
    config = SlackConfig(token=token, channel=channel, base_url=fake.api_url, timeout=5)
    context = NotifierContext(redactor=redactor or Redactor(), redis=redis_client, key_prefix=prefix)
    return SlackBotNotifier(config, context)


def webhook(fake: FakeSlack, redactor: Redactor | None = None) -> SlackWebhookNotifier:
    config = SlackConfig(webhook_url=fake.webhook_url, timeout=5)
    return SlackWebhookNotifier(config, NotifierContext(redactor=redactor or Redactor()))


def counter(metrics: Metrics, result: str, notifier: str = "slack") -> float:
    value = metrics.registry.get_sample_value(
        "integration_notifications_total", {"notifier": notifier, "result": result}
    )
    return value or 0.0


async def run(dispatcher: Dispatcher, *notifications: Notification, within: float = 20) -> None:
    await dispatcher.start()
    try:
        for n in notifications:
            await dispatcher.submit(n)
        assert await dispatcher.drain(within), dispatcher.status()
    finally:
        await dispatcher.close()


def texts(records: list) -> list[str]:  # type: ignore[type-arg]
    return [str(r.body.get("text", "")) for r in records]


async def test_post_then_update_then_resolve_in_thread(fake: FakeSlack) -> None:
    metrics = Metrics(CollectorRegistry())
    dispatcher = Dispatcher([bot(fake)], metrics=metrics, policy=FAST)
    a1, a2 = alert("stripe/balance"), alert("stripe/charges")
    await run(
        dispatcher,
        notification("stripe", a1),
        notification("stripe", a1, a2),
        notification(
            "stripe",
            alert("stripe/balance", status=AlertStatus.RESOLVED),
            alert("stripe/charges", status=AlertStatus.RESOLVED),
        ),
        notification("stripe", alert("stripe/balance", summary="error rate 55% on balance")),
    )
    posts, updates = fake.calls("chat.postMessage"), fake.calls("chat.update")
    assert [r.error for r in fake.requests] == [None] * len(fake.requests)
    # first incident: one message, edited on change, resolve edited in and replied in its thread
    first_ts = posts[0].body.get("ts") or next(iter(fake.messages))
    assert len(updates) == 2 and all(u.body["ts"] == first_ts and u.body["channel"] == "C123" for u in updates)
    assert "(+1 more firing)" in updates[0].body["text"]
    assert updates[1].body["text"].startswith("✅ Resolved")
    assert posts[1].body["thread_ts"] == first_ts and posts[1].body["channel"] == "C123"
    assert posts[1].body["text"].startswith("✅ Resolved")
    # after the resolve, the next incident of the group starts a new message (not a thread reply)
    assert len(posts) == 3 and "thread_ts" not in posts[2].body and "55%" in posts[2].body["text"]
    assert fake.messages[first_ts].updates == 2
    assert counter(metrics, "sent") == 4


async def test_repeat_of_an_unchanged_state_is_replied_in_the_thread(fake: FakeSlack) -> None:
    firing = notification("stripe", alert("stripe/balance"))
    await run(Dispatcher([bot(fake)], policy=FAST), firing, firing)  # repeat_interval: the same state again
    kinds = [(r.kind, "thread_ts" in r.body) for r in fake.requests]
    assert kinds == [("chat.postMessage", False), ("chat.update", False), ("chat.postMessage", True)]
    assert fake.requests[2].body["thread_ts"] == fake.requests[1].body["ts"]


async def test_429_storm_delivers_each_once_in_order_without_spinning(fake: FakeSlack) -> None:
    waits = ["0.3", "0.25", "1", "0.2", "0.3", "0.15"]  # fractional and integer Retry-After
    fake.then(*(Reply(status=429, retry_after=w) for w in waits))
    metrics = Metrics(CollectorRegistry())
    dispatcher = Dispatcher([bot(fake)], metrics=metrics, policy=FAST)
    await run(dispatcher, *(notification(f"g{i}", alert(f"vendor{i}/check")) for i in range(5)))

    delivered = fake.delivered("chat.postMessage")
    assert [r.body["text"].split(":")[0][2:] for r in delivered] == [f"vendor{i}" for i in range(5)]
    assert len(fake.requests) == 5 + len(waits)  # each 429 cost exactly one request: no hammering
    # after every 429 the next request waited at least the Retry-After Slack asked for
    for before, after in itertools.pairwise(fake.requests):
        if before.answered == 429:
            assert after.at - before.at >= float(waits.pop(0)) - 0.02
    assert counter(metrics, "sent") == 5 and counter(metrics, "failed") == 0


async def test_5xx_is_retried_with_backoff_then_delivered(fake: FakeSlack) -> None:
    fake.then(Reply(status=500), Reply(status=503), Reply(status=200, error="internal_error"))
    metrics = Metrics(CollectorRegistry())
    dispatcher = Dispatcher([bot(fake)], metrics=metrics, policy=FAST)
    await run(dispatcher, notification("stripe", alert("stripe/balance")))
    assert [r.answered for r in fake.requests] == [500, 503, 200, 200]
    assert len(fake.delivered("chat.postMessage")) == 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(fake.requests)]
    assert all(gap >= FAST.backoff / 2 - 0.01 for gap in gaps)  # equal jitter: never an immediate retry
    assert counter(metrics, "sent") == 1 and dispatcher.ready()[0]


async def test_invalid_auth_is_not_retried_and_is_surfaced(fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    wrong = "xoxb-9999-wrong-" + "t" * 20
    metrics = Metrics(CollectorRegistry())
    dispatcher = Dispatcher([bot(fake, token=wrong, redactor=Redactor([wrong]))], metrics=metrics, policy=FAST)
    await run(dispatcher, notification("a", alert("a/x")), notification("b", alert("b/y")))
    assert len(fake.requests) == 2  # one per notification, none retried
    assert counter(metrics, "failed") == 2 and counter(metrics, "sent") == 0
    ready, reason = dispatcher.ready()
    assert not ready and "invalid_auth" in reason and "slack" in reason
    assert "invalid_auth" in caplog.text and "not retried" in caplog.text
    assert wrong not in caplog.text and wrong not in reason
    assert dispatcher.failing() == {"slack": "chat.postMessage: invalid_auth"}


async def test_a_failing_notifier_shows_in_its_component_gauge_without_anyone_reading_the_status(
    fake: FakeSlack
) -> None:
    """integration_monitor_component_ok{component="notifiers"} is what a Prometheus rule reads: it is 1 from
    the start, 0 once Slack refuses the token, 1 again after the next delivery. It was set only when
    /api/status was read (Dispatcher.status()): a scrape never saw the notifier fail."""
    metrics = Metrics(CollectorRegistry())
    wrong = "xoxb-9999-wrong-" + "t" * 20
    lane_ok = lambda: metrics.registry.get_sample_value(  # noqa: E731
        "integration_monitor_component_ok", {"component": "notifiers"})
    dispatcher = Dispatcher([bot(fake, token=wrong)], metrics=metrics, policy=FAST)
    await dispatcher.start()
    try:
        assert lane_ok() == 1
        await dispatcher.submit(notification("a", alert("a/x")))
        assert await dispatcher.drain(20)
        assert lane_ok() == 0
    finally:
        await dispatcher.close()
    fixed = Dispatcher([bot(fake)], metrics=metrics, policy=FAST)
    await run(fixed, notification("b", alert("b/y")))
    assert lane_ok() == 1


async def test_channel_not_found_and_invalid_blocks_are_not_retried(fake: FakeSlack) -> None:
    fake.then(Reply(error="invalid_blocks"))
    metrics = Metrics(CollectorRegistry())
    dispatcher = Dispatcher([bot(fake)], metrics=metrics, policy=FAST)
    await run(dispatcher, notification("a", alert("a/x")), notification("b", alert("b/y")))
    assert [r.error for r in fake.requests] == ["invalid_blocks", None]  # dropped, next one went through
    assert counter(metrics, "failed") == 1 and counter(metrics, "sent") == 1
    assert dispatcher.ready()[0]  # a later success clears the failure

    dispatcher = Dispatcher([bot(fake, channel="#nope")], metrics=metrics, policy=FAST)
    await run(dispatcher, notification("c", alert("c/z")))
    assert fake.requests[-1].error == "channel_not_found" and len(fake.requests) == 3
    assert "channel_not_found" in dispatcher.ready()[1]


async def test_update_of_a_deleted_message_posts_a_new_one(fake: FakeSlack) -> None:
    dispatcher = Dispatcher([bot(fake)], policy=FAST)
    await dispatcher.start()
    await dispatcher.submit(notification("g", alert("v/a")))
    assert await dispatcher.drain(10)
    fake.messages.clear()  # someone deleted it in Slack
    await dispatcher.submit(notification("g", alert("v/a"), alert("v/b")))
    assert await dispatcher.drain(10)
    await dispatcher.close()
    assert [r.kind for r in fake.requests] == ["chat.postMessage", "chat.update", "chat.postMessage"]
    assert fake.requests[1].error == "message_not_found"


async def test_webhook_mode_retries_5xx_and_429_and_stops_on_4xx(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    secret_url = fake.webhook_url
    fake.then(
        Reply(status=503, only="webhook"),
        Reply(status=500, only="webhook"),
        Reply(status=429, retry_after="0.3", only="webhook"),
        Reply(),
        Reply(status=400, body="invalid_payload", only="webhook"),
    )
    metrics = Metrics(CollectorRegistry())
    redactor = Redactor([secret_url])
    dispatcher = Dispatcher([webhook(fake, redactor)], metrics=metrics, policy=FAST)
    await run(dispatcher, *(notification(g, alert(f"{g}/x")) for g in "abc"))
    assert [r.answered for r in fake.requests] == [503, 500, 429, 200, 400, 200]
    assert [t.split(":")[0][2:] for t in texts(fake.delivered("webhook"))] == ["a", "c"]
    assert fake.requests[3].at - fake.requests[2].at >= 0.28
    assert counter(metrics, "sent") == 2 and counter(metrics, "failed") == 1
    assert "not retried: webhook: HTTP 400: invalid_payload" in caplog.text
    assert dispatcher.ready()[0]  # "c" went through after it: the failure was that message's, not the config's
    assert "webhooksecret" not in caplog.text and "webhooksecret" not in json.dumps(dispatcher.status())


async def test_outbox_survives_a_restart(fake: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    client = shared_redis
    outbox, threads = f"{prefix}outbox:", f"{prefix}im:"

    def restarted() -> Dispatcher:
        notifier = bot(fake, redis_client=client, prefix=threads)
        return Dispatcher([notifier], redis=client, key_prefix=outbox, log_prefix=threads, policy=FAST)

    first = restarted()
    await first.start()
    await first.submit(notification("stripe", alert("stripe/balance")))
    assert await first.drain(10)
    # Slack goes down; the resolve and two more notifications wait in the outbox when we stop
    fake.then(*(Reply(status=503) for _ in range(1000)))
    await first.submit(notification("stripe", alert("stripe/balance", status=AlertStatus.RESOLVED)))
    await first.submit(notification("adyen", alert("adyen/payments")))
    await first.submit(notification("paypal", alert("paypal/oauth")))
    await asyncio.wait_for(fake.wait_requests(3), 10)
    await first.close()
    assert await client.llen(f"{outbox}slack") == 3
    fake.script.clear()

    before = len(fake.requests)
    second = restarted()
    await run(second)
    after = fake.requests[before:]
    assert [(r.kind, r.error) for r in after] == [
        ("chat.update", None),  # the first process's message, found through the thread store in Redis
        ("chat.postMessage", None),  # …and the resolve in its thread
        ("chat.postMessage", None),
        ("chat.postMessage", None),
    ]
    first_ts = fake.requests[0].body.get("ts") or next(iter(fake.messages))
    assert after[0].body["ts"] == first_ts and after[1].body["thread_ts"] == first_ts
    assert after[2].body["text"].startswith("🔴 adyen") and after[3].body["text"].startswith("🔴 paypal")
    assert await client.llen(f"{outbox}slack") == 0

    third = restarted()
    await run(third)
    assert len(fake.requests) == before + 4  # nothing delivered twice


async def test_canary_secret_never_reaches_slack(fake: FakeSlack) -> None:
    text = f"""
monitor: {{evaluation_interval: 15s}}
integrations:
  stripe:
    checks:
      - {{name: balance, kind: http, url: "https://api.stripe.com/v1/balance",
         headers: {{Authorization: "Bearer {CANARY}"}}}}
alerting:
  slack: {{token: "{TOKEN}", channel: "#alerts", base_url: "{fake.api_url}"}}
"""
    config = parse_config(text, env={})
    redactor = Redactor(config.secret_values())
    leaky = alert(
        "stripe/balance",
        summary=f"401 with Bearer {CANARY}",
        last_request=f"GET https://api.stripe.com/v1/balance?api_key={CANARY}",
        response_excerpt=f'{{"error": "invalid key {CANARY[:8]}…", "echo": "{CANARY}"}}',
        details={"Authorization": f"Bearer {CANARY}"},
        notes=f"rotate {CANARY} quarterly",
    )
    dispatcher = Dispatcher([bot(fake, redactor=redactor)], policy=FAST)
    await run(dispatcher, notification("stripe", leaky), notification("stripe", leaky))
    bodies = json.dumps([r.body for r in fake.requests])
    assert len(fake.delivered("chat.postMessage")) == 2 and len(fake.delivered("chat.update")) == 1
    assert CANARY not in bodies and "[REDACTED]" in bodies
    assert TOKEN not in bodies  # the token travels in the Authorization header only


async def test_200_failing_checks_are_accepted_by_slack(fake: FakeSlack) -> None:
    alerts = [alert(f"vendor/check{i}", details={f"d{k}": "x" * 100 for k in range(12)}) for i in range(200)]
    with pytest.raises(ValueError, match="two notifiers named 'slack'"):
        Dispatcher([bot(fake), webhook(fake)])
    await run(Dispatcher([bot(fake)], policy=FAST), notification("vendor", *alerts))
    await run(Dispatcher([webhook(fake)], policy=FAST), notification("vendor", *alerts))
    assert [r.error for r in fake.requests] == [None, None]
    for record in fake.requests:
        assert block_kit_problems(record.body["blocks"]) == []


async def test_submit_does_not_wait_for_a_parked_channel(fake: FakeSlack) -> None:
    fake.then(Reply(status=429, retry_after="30"))
    dispatcher = Dispatcher([bot(fake)], policy=FAST)
    await dispatcher.start()
    try:
        await dispatcher.submit(notification("a", alert("a/x")))
        await asyncio.wait_for(fake.wait_requests(1), 10)
        await asyncio.wait_for(dispatcher.submit(notification("b", alert("b/y"))), 1.0)
        status = dispatcher.status()["notifiers"]["slack"]
        assert status["queued"] == 2 and status["parked_seconds"] > 20 and "429" in status["parked_reason"]
        assert dispatcher.ready()[0]  # a 429 is Slack pacing us, not a broken config
        assert not await dispatcher.drain(0.2)
    finally:
        await dispatcher.close(grace=1)
    assert len(fake.requests) == 1


async def test_send_test_alert_reports_each_notifier(fake: FakeSlack) -> None:
    def config(token: str) -> str:
        return f"""
alerting:
  slack: {{token: "{token}", channel: "#alerts", base_url: "{fake.api_url}"}}
  console: {{stream: log}}
"""

    lines: list[str] = []
    assert await send_test_alert(parse_config(config(TOKEN), env={}), out=lines.append) == 0
    assert lines[0].startswith("slack: ok — posted to channel C123") and lines[1] == "console: ok — printed"
    assert "Test alert" in fake.requests[0].body["text"]

    lines.clear()
    bad = "xoxb-0000-bad-token"
    assert await send_test_alert(parse_config(config(bad), env={}), out=lines.append) == 1
    assert lines[0].startswith("slack: FAILED — chat.postMessage: invalid_auth (not retried")
    assert bad not in "".join(lines)


async def test_send_test_alert_command(fake: FakeSlack, tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text(f'alerting: {{slack: {{token: "{TOKEN}", channel: "#alerts", base_url: "{fake.api_url}"}}}}\n')
    script = (
        "import argparse, sys\n"
        "from monitor.commands.send_test_alert import register\n"
        "parser = argparse.ArgumentParser(); register(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:]); sys.exit(args.func(args))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, "send-test-alert", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("slack: ok — posted to channel C123")
    assert len(fake.delivered("chat.postMessage")) == 1

    config.write_text("alerting: {slack: {token: nope}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, "send-test-alert", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and "alerting.slack.token" in err.decode()


async def test_submitted_before_start_is_sent_once(
    fake: FakeSlack, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    client = shared_redis
    dispatcher = Dispatcher([bot(fake)], redis=client, key_prefix=prefix, log_prefix=prefix, policy=FAST)
    await dispatcher.submit(notification("early", alert("early/x")))  # persisted, then start() loads the outbox
    await run(dispatcher)
    assert len(fake.requests) == 1 and await client.llen(f"{prefix}slack") == 0


async def test_a_message_failing_too_long_is_dropped_and_the_next_goes_through(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake.then(*(Reply(status=503, only="chat.postMessage") for _ in range(1000)))
    metrics = Metrics(CollectorRegistry())
    policy = DeliveryPolicy(pace=0.01, backoff=0.05, max_backoff=0.1, give_up_after=0.4)
    dispatcher = Dispatcher([bot(fake)], metrics=metrics, policy=policy)
    await dispatcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="alerts.lane"):
            await dispatcher.submit(notification("a", alert("a/x")))
            assert await dispatcher.drain(10)
        attempts = len(fake.requests)
        # Backed off, not a loop: each failed attempt but the last put the next one off by half the backoff at
        # least (equal jitter: 25 ms here, at least "0.02" in the log's hundredths); the last, past give_up_after,
        # dropped the message. (At least one retry: the first failure starts the give_up_after clock.)
        said = [r.getMessage() for r in caplog.records if r.name == "alerts.lane"]
        decided = re.compile(r"not delivered \(attempt \d+\): .*; next try in ([\d.]+)s")
        waits = [float(m[1]) for m in map(decided.search, said) if m]
        assert attempts >= 2 and len(waits) == attempts - 1, (attempts, said)
        assert all(wait >= 0.02 for wait in waits), waits
        assert any(f"dropped after {attempts} attempts" in message for message in said), said
        assert counter(metrics, "failed") == 1
        assert dispatcher.failing() == {"slack": "chat.postMessage: http_503 (HTTP 503)"}
        fake.script.clear()
        await dispatcher.submit(notification("b", alert("b/y")))
        assert await dispatcher.drain(10)
    finally:
        await dispatcher.close()
    assert counter(metrics, "sent") == 1 and dispatcher.failing() == {}


async def test_connection_errors_are_retried_until_slack_is_back() -> None:
    down = await FakeSlack().start()
    port, api_url = down.port, down.api_url
    await down.close()  # nothing listens on the port now: connection refused
    config = SlackConfig(token=TOKEN, channel="#alerts", base_url=api_url, timeout=5)
    metrics = Metrics(CollectorRegistry())
    notifier = SlackBotNotifier(config, NotifierContext(redactor=Redactor()))
    dispatcher = Dispatcher([notifier], metrics=metrics, policy=FAST)
    await dispatcher.start()
    back = FakeSlack()
    try:
        await dispatcher.submit(notification("a", alert("a/x")))
        assert not await dispatcher.drain(0.5)
        assert "chat.postMessage: ClientConnectorError" in dispatcher.failing()["slack"]
        assert dispatcher.ready()[0]  # transient: not a config problem
        await back.start(port)
        assert await dispatcher.drain(10)
    finally:
        await dispatcher.close()
        await back.close()
    assert len(back.delivered("chat.postMessage")) == 1 and counter(metrics, "sent") == 1


@pytest.mark.parametrize("token", [TOKEN, "xoxb-0000-rejected"])
async def test_the_daemon_asks_slack_whether_it_accepts_the_token_at_start(fake: FakeSlack, token: str) -> None:
    """A token Slack rejects makes /readyz answer 503 from the start (auth.test, once), not only once the first
    alert fails to go out (maybe weeks later, when it is needed); one Slack accepts changes nothing."""
    raw = f"alerting: {{slack: {{token: '{token}', channel: '#alerts', base_url: '{fake.api_url}'}}}}\n"
    dispatcher = Dispatcher.for_alerting(parse_config(raw, env={}).alerting, redactor=Redactor(), redis=None,
                                         policy=FAST)
    await dispatcher.start()
    try:
        await asyncio.wait_for(fake.wait_calls("auth.test"), 10)
        await until(lambda: not dispatcher.verifying(), "Slack's answer read")
        assert [r.kind for r in fake.requests] == ["auth.test"]
        if token == TOKEN:
            assert dispatcher.ready() == (True, "notifiers ok")
        else:
            assert dispatcher.ready() == (False, "notifier failing, not retried (fix the config): "
                                                 "slack: auth.test: invalid_auth")
    finally:
        await dispatcher.close()
