"""Console notifier, the notifier registry, severity filtering, and the notifier config's validation."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from alerts.codec import notification_from_dict, notification_to_dict
from alerts.delivery import DeliveryPolicy, Dispatcher
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.notifier_config import ConsoleConfig
from alerts.notifiers import ConsoleNotifier, NotifierContext, SlackBotNotifier, SlackWebhookNotifier, build_notifiers
from integration_kit.redact import Redactor
from monitor.metrics import Metrics
from monitor.settings import ConfigError, parse_config

SECRET = "hunter2-console-canary"


def make(severity: Severity = Severity.CRITICAL, status: AlertStatus = AlertStatus.FIRING, **kw: object) -> Alert:
    fields: dict[str, object] = {
        "key": f"shop/probe_down/orders/{severity}",
        "integration": "shop",
        "alert": "probe_down",
        "severity": severity,
        "status": status,
        "summary": "orders probe failed 3 times in a row",
        "check": "orders",
        "started_at": 1_790_000_000.0,
        "details": {"Consecutive failures": "3"},
        "error_classes": {"connect": 3},
        "last_request": "GET http://shop.internal/orders",
        "notes": "The shop API restarts nightly at 03:00 UTC.",
        "runbook_url": "https://wiki.example.com/shop",
    }
    fields.update(kw)
    return Alert(**fields)  # type: ignore[arg-type]


def context() -> NotifierContext:
    return NotifierContext(redactor=Redactor([SECRET]))


async def test_console_prints_a_readable_redacted_block(capsys: pytest.CaptureFixture[str]) -> None:
    notifier = ConsoleNotifier(ConsoleConfig(), context())
    alert = make(response_excerpt=f"token={SECRET}")
    receipt = await notifier.send(Notification(group_key="shop", alerts=(alert,), created_at=1_790_000_000.0))
    out = capsys.readouterr().out
    assert receipt.action == "printed"
    assert "🔴 shop: orders probe failed 3 times in a row" in out
    expected_parts = ("shop/orders", "connect ×3", "GET http://shop.internal/orders", "nightly at 03:00", "wiki")
    for expected in expected_parts:
        assert expected in out
    assert SECRET not in out and "[REDACTED]" in out


async def test_console_to_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alerts.console")
    notifier = ConsoleNotifier(ConsoleConfig(stream="log"), context())
    resolved = make(status=AlertStatus.RESOLVED, resolved_at=1_790_000_300.0)
    await notifier.send(Notification(group_key="shop", alerts=(resolved,), created_at=1_790_000_300.0))
    assert "✅ Resolved — shop" in caplog.text and "resolved after 5m" in caplog.text


async def test_dispatcher_filters_by_min_severity_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics(CollectorRegistry())
    notifier = ConsoleNotifier(ConsoleConfig(min_severity=Severity.CRITICAL), context())
    dispatcher = Dispatcher([notifier], metrics=metrics, policy=DeliveryPolicy(pace=0))
    await dispatcher.start()
    await dispatcher.submit(Notification(group_key="a", alerts=(make(Severity.WARNING),), created_at=1.0))
    await dispatcher.submit(
        Notification(group_key="b", alerts=(make(Severity.WARNING), make(Severity.CRITICAL)), created_at=2.0)
    )
    assert await dispatcher.drain(5)
    await dispatcher.close()
    out = capsys.readouterr().out
    assert out.count("shop: orders probe failed") == 1 and "group: b" in out and "(warning" not in out

    def sample(result: str) -> float | None:
        labels = {"notifier": "console", "result": result}
        return metrics.registry.get_sample_value("integration_notifications_total", labels)

    assert sample("sent") == 1 and sample("suppressed") == 1
    assert dispatcher.status()["notifiers"]["console"]["sent"] == 1 and dispatcher.ready() == (True, "notifiers ok")


def test_outbox_encoding_round_trips() -> None:
    notification = Notification(
        group_key="shop", alerts=(make(), make(Severity.WARNING, AlertStatus.RESOLVED)), created_at=5.0
    )
    data = notification_to_dict(notification)
    data["alerts"][0]["field_from_a_newer_version"] = 1
    assert notification_from_dict(data) == notification


def test_registry_builds_what_is_configured() -> None:
    def build(alerting: str) -> list[type]:
        config = parse_config(alerting, env={})
        return [type(n) for n in build_notifiers(config.alerting, context())]

    assert build("{}") == [ConsoleNotifier]
    assert build('alerting: {slack: {token: "${SLACK_BOT_TOKEN:-}", channel: "#a"}}') == [ConsoleNotifier]
    assert build('alerting: {slack: {token: "xoxb-1-abc", channel: "#a"}}') == [SlackBotNotifier]
    assert build('alerting: {slack: {webhook_url: "https://hooks.slack.com/services/T/B/x"}}') == [SlackWebhookNotifier]
    both = 'alerting: {slack: {token: "xoxb-1-abc", channel: "#a"}, console: {stream: stderr}}'
    assert build(both) == [SlackBotNotifier, ConsoleNotifier]


@pytest.mark.parametrize(
    ("slack", "path", "message"),
    [
        ('{token: "abc-' + SECRET + '", channel: "#a"}', "alerting.slack.token", "xoxb- or xoxp-"),
        ('{token: "xoxb-1-abc"}', "alerting.slack", "channel is required"),
        ('{webhook_url: "http://hooks.example.com/x"}', "alerting.slack.webhook_url", "https://"),
        ('{webhook_url: "https://h/x", channel: "#a"}', "alerting.slack", "fixed by the incoming webhook"),
        ('{token: "xoxb-1-abc", channel: "#a", webhook_url: "https://h/x"}', "alerting.slack", "not both"),
        ('{token: "xoxb-1-abc", channel: "#a", base_url: "ftp://x"}', "alerting.slack.base_url", "https://"),
        ('{token: "xoxb-1-abc", channel: "#a", colour: red}', "alerting.slack.colour", "unknown key"),
        ('{token: "xoxb-1-abc", channel: "#a", min_severity: loud}', "alerting.slack.min_severity", "info"),
    ],
)
def test_slack_config_errors_name_the_field_and_hide_the_secret(slack: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"alerting: {{slack: {slack}}}", env={})
    problems = caught.value.problems
    assert any(p == path and message in m for p, m in problems), problems
    assert SECRET not in str(caught.value)


def test_loopback_http_is_allowed_for_tests() -> None:
    config = parse_config(
        'alerting: {slack: {webhook_url: "http://127.0.0.1:8080/services/x", min_severity: warning}}', env={}
    )
    assert config.alerting.slack is not None and config.alerting.slack.min_severity is Severity.WARNING


async def test_for_alerting_and_config_reload(capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config("{}", env={})
    dispatcher = Dispatcher.for_alerting(config.alerting, redactor=Redactor(), redis=None,
                                         metrics=Metrics(CollectorRegistry()), policy=DeliveryPolicy(pace=0))
    assert dispatcher.notifier_names == ["console"]
    await dispatcher.start()
    try:
        console = dispatcher._lanes["console"].notifier
        await dispatcher.apply_config(parse_config("alerting: {group_wait: 1m}", env={}).alerting)
        assert dispatcher._lanes["console"].notifier is console  # unchanged notifier config: kept as is
        reloaded = parse_config('alerting: {console: {stream: stdout, min_severity: warning}}', env={})
        await dispatcher.apply_config(reloaded.alerting)
        assert dispatcher._lanes["console"].notifier is not console
        assert dispatcher.notifier_names == ["console"]
        await dispatcher.submit(Notification(group_key="x", alerts=(make(Severity.INFO),), created_at=1.0))
        await dispatcher.submit(Notification(group_key="y", alerts=(make(),), created_at=2.0))
        assert await dispatcher.drain(5)
        # the Component hook (SIGHUP): synchronous, rebuilds in a task
        dispatcher.on_config(parse_config("alerting: {console: {stream: stderr}}", env={}))
    finally:
        await dispatcher.close()
    assert dispatcher._lanes["console"].notifier._config.stream == "stderr"  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "group: y" in out and "group: x" not in out


class _Buggy:
    """A notifier with a bug: raises something that is not a DeliveryError."""

    name = "buggy"
    min_interval = 0.0
    channel_key: str | None = None
    min_severity = Severity.INFO

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, notification: Notification) -> object:
        self.calls += 1
        raise KeyError("oops")

    async def close(self) -> None:
        return None


async def test_a_buggy_notifier_is_tried_a_few_times_then_reported(caplog: pytest.LogCaptureFixture) -> None:
    buggy = _Buggy()
    metrics = Metrics(CollectorRegistry())
    dispatcher = Dispatcher([buggy], metrics=metrics, policy=DeliveryPolicy(pace=0, backoff=0.01, max_backoff=0.02))
    await dispatcher.start()
    await dispatcher.submit(Notification(group_key="x", alerts=(make(),), created_at=1.0))
    assert await dispatcher.drain(5)
    await dispatcher.close()
    assert buggy.calls == 3
    assert metrics.registry.get_sample_value(
        "integration_notifications_total", {"notifier": "buggy", "result": "failed"}
    ) == 1
    ready, reason = dispatcher.ready()
    assert not ready and reason.endswith("buggy: unexpected KeyError (see log)")
    assert "raised unexpectedly" in caplog.text
