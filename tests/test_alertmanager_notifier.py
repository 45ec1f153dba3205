"""The Alertmanager notifier's parts: the payload (pure; properties proven with hypothesis), the engine's
feed of its current state, and one Alertmanager's sender against a loopback stand-in that answers 503,
429, 401… (the real Alertmanager is in test_alertmanager_e2e.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from targets import Reply, Target
from waiting import until

from alerts.engine import AlertEngine
from alerts.model import Alert, AlertStatus, Severity
from alerts.notifier_config import AlertmanagerConfig
from alerts.notifiers.alertmanager.feed import RESOLVED_RETENTION, AlertmanagerFeed, valid_for
from alerts.notifiers.alertmanager.notifier import AlertmanagerNotifier
from alerts.notifiers.alertmanager.payload import SENDER, alert_labels, alertname, postable_alert
from alerts.notifiers.alertmanager.pusher import Batch, Pusher, PushPolicy
from alerts.notifiers.base import DeliveryError, NotifierContext
from alerts.silences import new_silence
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult, RequestSummary
from monitor.commands.send_test_alert import make_test_notification
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config

SECRET = "sk_live_CANARY_payload_91ab"
T0 = 1_800_000_000.0
API = "/api/v2/alerts"
FAST = PushPolicy(backoff=0.05, max_backoff=0.4)

names = st.from_regex(r"\A[A-Za-z0-9_.-]{1,20}\Z")
texts = st.text(max_size=80)


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    integration, target = draw(names), draw(names)
    rule = draw(st.sampled_from(["probe_down", "quota", "webhook_silence"]))
    severity = draw(st.sampled_from(list(Severity)))
    check = target if rule == "probe_down" else None
    quota = target if rule == "quota" else None
    key_target = f"type:{target}" if rule == "webhook_silence" else target
    status = draw(st.sampled_from([AlertStatus.FIRING, AlertStatus.RESOLVED]))
    started = T0 - draw(st.floats(0, 86400))
    return Alert(
        key=f"{integration}/{rule}/{key_target}/{severity}", integration=integration, alert=rule, severity=severity,
        status=status, summary=draw(texts) + SECRET, check=check, quota=quota, started_at=started,
        resolved_at=T0 - draw(st.floats(0, 100)) if status is AlertStatus.RESOLVED else None,
        details={draw(names): draw(texts) + f"?api_key={SECRET}"}, error_classes={"http_5xx": draw(st.integers(1, 9))},
        last_request=f"GET https://api.example.com/x?token={SECRET}", response_excerpt=draw(texts),
        notes=draw(texts), runbook_url="https://wiki.example.com/runbook",
    )


def post(alert: Alert, *, now: float = T0, extra: dict[str, str] | None = None) -> dict[str, Any]:
    return postable_alert(alert, now=now, valid_for=240.0, extra_labels=extra or {}, base_url="https://m.example",
                          redactor=Redactor([SECRET]))


@given(alerts(), alerts(), st.floats(0, 3600))
@settings(max_examples=200, deadline=None)
def test_labels_depend_on_the_alert_identity_only(first: Alert, other: Alert, later: float) -> None:
    """What a second replica (or a later evaluation) posts for the same alert has the same label set, whatever
    it measured; and two different alerts never share one."""
    same = replace(other, key=first.key, integration=first.integration, alert=first.alert, severity=first.severity,
                   check=first.check, quota=first.quota)
    a, b = post(first), post(same, now=T0 + later)
    assert a["labels"] == b["labels"]
    if other.key != first.key:
        assert post(other)["labels"] != a["labels"]


@given(alerts(), st.dictionaries(st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"), names, max_size=3))
@settings(max_examples=200, deadline=None)
def test_every_posted_alert_is_valid_and_holds_no_secret(alert: Alert, extra: dict[str, str]) -> None:
    extra = {k: v for k, v in extra.items() if k not in alert_labels(alert, {})}
    doc = post(alert, extra=extra)
    labels = doc["labels"]
    assert labels["alertname"] == alertname(alert.alert) and labels["sender"] == SENDER
    assert labels["integration"] == alert.integration and labels["severity"] == str(alert.severity)
    assert all(labels[k] == v for k, v in extra.items())
    assert all(isinstance(v, str) and v for v in labels.values())
    assert SECRET not in json.dumps(doc)
    starts, ends = (dt.datetime.fromisoformat(doc[k]).timestamp() for k in ("startsAt", "endsAt"))
    assert starts <= ends
    if alert.status is AlertStatus.FIRING:
        assert ends == pytest.approx(T0 + 240.0, abs=0.001)
    else:
        assert ends == pytest.approx(alert.resolved_at, abs=0.001) and ends <= T0


def test_label_and_link_shapes() -> None:
    assert alertname("probe_down") == "IntegrationProbeDown"
    assert alertname("monitor_redis_down") == "IntegrationMonitorRedisDown"
    base = Alert(key="shop/webhook_silence/type:order.paid/warning", integration="shop", alert="webhook_silence",
                 severity=Severity.WARNING, status=AlertStatus.FIRING, summary="quiet")
    doc = post(base)
    assert doc["labels"]["target"] == "type:order.paid" and "check" not in doc["labels"]
    assert doc["generatorURL"] == "https://m.example/api/status/shop"
    quota = replace(base, key="shop/quota/api/critical", alert="quota", quota="api", severity=Severity.CRITICAL)
    assert {k: v for k, v in post(quota)["labels"].items() if k in ("quota", "target")} == {"quota": "api"}
    own = replace(base, key="_monitor/monitor_notifier_failing/slack/critical", integration="_monitor",
                  alert="monitor_notifier_failing")
    assert post(own)["labels"]["target"] == "slack" and post(own)["generatorURL"] == "https://m.example/api/status"
    assert valid_for(1.0) == 240.0 and valid_for(90.0) == 360.0


# -- the engine's feed --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class RecordingFeed:
    def __init__(self) -> None:
        self.published: list[tuple[list[Alert], float, float]] = []

    def publish(self, alerts: Any, *, now: float, interval: float) -> None:
        self.published.append((list(alerts), now, interval))

    @property
    def last(self) -> list[Alert]:
        return self.published[-1][0]


def engine_config(alerts: dict[str, Any] | None = None, alertmanager: dict[str, Any] | None = None) -> Config:
    raw: dict[str, Any] = {
        "monitor": {"evaluation_interval": "15s", "external_url": "https://monitor.example.com"},
        "integrations": {"acme": {
            "checks": [{"name": "api", "kind": "http", "url": "https://api.acme.test/v1/x", "interval": "15s"}],
            "alerts": {"error_rate": {"enabled": False}, "latency": {"enabled": False}, **(alerts or {})},
        }},
        "alerting": {"alertmanager": alertmanager} if alertmanager else {},
    }
    return parse_config(yaml.safe_dump(raw), env={})


def probe(eng: AlertEngine, clock: Clock, ok: bool) -> None:
    eng.on_result(CheckResult(
        integration="acme", check="api", kind="http", ok=ok, error_class=None if ok else ErrorClass.HTTP_5XX,
        detail="" if ok else "http_5xx: 503", started_at=clock.now, duration=0.1, total_duration=0.1,
        status_code=200 if ok else 503,
        request=None if ok else RequestSummary(method="GET", url="https://api.acme.test/v1/x"),
    ))


async def step(eng: AlertEngine, clock: Clock, ok: bool) -> None:
    clock.now += 15
    probe(eng, clock, ok)
    await eng.evaluate()


async def test_engine_publishes_firing_and_resolved_alerts_silenced_or_not_but_never_pending() -> None:
    clock, feed = Clock(), RecordingFeed()
    cfg = engine_config({"probe_down": {"consecutive_failures": 2, "keep_firing_for": 0}})
    eng = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), feed=feed, clock=clock, autorun=False)
    await eng.start()
    try:
        await eng.add_silence(new_silence(now=clock.now, duration=3600, integration="acme"))
        await step(eng, clock, ok=False)
        assert feed.last == []  # one failure of two: nothing fires yet
        fired_at = clock.now + 15
        await step(eng, clock, ok=False)
        (alert,) = feed.last
        assert alert.status is AlertStatus.FIRING and alert.alert == "probe_down" and alert.started_at == fired_at
        assert feed.published[-1][1:] == (clock.now, 15.0)
        await step(eng, clock, ok=False)
        assert feed.last[0].started_at == fired_at  # re-published every evaluation, same start
        await step(eng, clock, ok=True)
        (alert,) = feed.last
        assert alert.status is AlertStatus.RESOLVED and alert.resolved_at == clock.now
    finally:
        await eng.close()


async def test_feed_posts_firing_and_recent_resolves_most_severe_first_within_the_limit(target: Target) -> None:
    target.route(API, Reply(status=200))
    cfg = engine_config(alertmanager={"urls": [target.url("")], "min_severity": "warning"})
    metrics = Metrics()
    feed = AlertmanagerFeed(cfg, redactor=Redactor(), metrics=metrics, policy=replace(FAST, max_alerts=3))
    await feed.start()
    try:
        def alert(name: str, severity: Severity, status: AlertStatus = AlertStatus.FIRING,
                  resolved: float = 0.0) -> Alert:
            return Alert(key=f"acme/probe_down/{name}/{severity}", integration="acme", alert="probe_down", check=name,
                         severity=severity, status=status, summary=name, started_at=T0 - 60,
                         resolved_at=T0 - resolved if status is AlertStatus.RESOLVED else None)

        feed.publish([
            alert("info", Severity.INFO), alert("warn", Severity.WARNING), alert("crit", Severity.CRITICAL),
            alert("old", Severity.CRITICAL, AlertStatus.RESOLVED, RESOLVED_RETENTION + 1),
            alert("recent", Severity.CRITICAL, AlertStatus.RESOLVED, 60), alert("extra", Severity.WARNING),
        ], now=T0, interval=15.0)
        await until(lambda: target.hits(API), "a post to Alertmanager")
        body = json.loads(target.hits(API)[0].body)
        assert [a["labels"]["check"] for a in body] == ["crit", "recent", "extra"]  # "warn" is over the limit
        assert body[0]["endsAt"] == "2027-01-15T08:04:00.000Z"  # T0 + 4 minutes
        assert body[1]["endsAt"] == "2027-01-15T07:59:00.000Z"  # resolved a minute before T0
        assert metrics.registry.get_sample_value(
            "integration_notifications_total", {"notifier": "alertmanager", "result": "failed"}) == 1.0
        feed.publish([alert("info", Severity.INFO)], now=T0, interval=15.0)  # nothing at or above warning
        # A window for a post that must not come (its 200 ms is many times a post to loopback; too short on a
        # loaded machine, it would let a wrong post pass, never fail a sound feed).
        await asyncio.sleep(0.2)
        assert len(target.hits(API)) == 1
        assert feed.status()["alertmanagers"][target.url("")]["state"] == "ok"
    finally:
        await feed.close()


async def test_feed_reload_rebuilds_only_when_its_config_changes(target: Target) -> None:
    target.route(API, Reply(status=200))
    feed = AlertmanagerFeed(engine_config(), redactor=Redactor())
    await feed.start()
    try:
        assert feed.status() == {"enabled": False} and feed.ready() == (True, "alertmanager not configured")
        feed.on_config(engine_config(alertmanager={"urls": [target.url("")]}))
        await until(lambda: feed.status()["enabled"], "the feed enabled")
        feed.publish([Alert(key="acme/probe_down/api/critical", integration="acme", alert="probe_down", check="api",
                            severity=Severity.CRITICAL, status=AlertStatus.FIRING, summary="down")],
                     now=T0, interval=15.0)
        await until(lambda: target.hits(API), "a post to Alertmanager")
        feed.on_config(engine_config(alertmanager={"urls": ["${AM_URL:-}"]}))  # unset: the route is off
        await until(lambda: not feed.status()["enabled"], "the feed disabled")
    finally:
        await feed.close()


# -- one Alertmanager's sender --------------------------------------------------------------------------


def notifier_for(target: Target, **extra: Any) -> AlertmanagerNotifier:
    config = AlertmanagerConfig(urls=(target.url(""),), timeout=2.0, **extra)
    return AlertmanagerNotifier(config, NotifierContext(redactor=Redactor([SECRET])))


def batch(*checks: str, interval: float = 1.0) -> Batch:
    posted = tuple({"labels": {"alertname": "IntegrationProbeDown", "check": c}} for c in checks)
    return Batch(posted, interval=interval)


async def test_5xx_and_429_are_retried_with_growing_waits_and_the_newest_batch_wins(target: Target) -> None:
    target.route(API, Reply(status=503), Reply(status=503), Reply(status=429, headers={"Retry-After": "0.3"}),
                 Reply(status=502), Reply(status=200))
    notifier, results = notifier_for(target), []
    pusher = Pusher(target.url(""), notifier.post, policy=FAST, count=results.append)
    pusher.start()
    try:
        pusher.offer(batch("first"))
        await until(lambda: len(target.hits(API)), "2 posts to Alertmanager", holds=lambda n: n >= 2)
        pusher.offer(batch("newer"))  # replaces the one being retried
        await until(lambda: results, "a batch sent", holds=lambda seen: "sent" in seen)
        hits = target.hits(API)
        assert results == ["failed", "failed", "failed", "failed", "sent"]
        posted = [json.loads(h.body)[0]["labels"]["check"] for h in hits]
        firsts = posted.count("first")
        assert firsts >= 2 and posted == ["first"] * firsts + ["newer"] * (5 - firsts), posted
        gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
        assert gaps[0] >= 0.025 and gaps[1] >= 0.05  # equal jitter: at least half of 0.05 s, then of 0.1 s
        assert gaps[2] >= 0.3  # Retry-After honoured
        assert pusher.status()["state"] == "ok" and pusher.failures == 0 and pusher.last_alerts == 1
    finally:
        await pusher.close()
        await notifier.close()


async def test_refused_credentials_are_not_retried_until_the_next_batch(target: Target) -> None:
    target.route(API, Reply(status=401, body=f"bad credentials {SECRET}"))
    notifier, results = notifier_for(target, bearer_token=SECRET), []
    pusher = Pusher(target.url(""), notifier.post, policy=FAST, count=results.append)
    pusher.start()
    try:
        pusher.offer(batch("a", interval=0.2))
        await until(lambda: results, "a batch's result")
        # A window for a retry that must not come: 2.5 batch intervals (0.2 s) and many FAST retry waits.
        await asyncio.sleep(0.5)
        assert results == ["failed"] and len(target.hits(API)) == 1
        assert target.hits(API)[0].headers["Authorization"] == f"Bearer {SECRET}"
        assert pusher.permanent_error is not None and "401" in pusher.permanent_error
        assert SECRET not in pusher.permanent_error and "[REDACTED]" in pusher.permanent_error
        target.route(API, Reply(status=200))
        pusher.offer(batch("b", interval=0.2))
        await until(lambda: results, "a batch sent", holds=lambda seen: "sent" in seen)
        assert pusher.permanent_error is None and pusher.error is None
    finally:
        await pusher.close()
        await notifier.close()


async def test_large_batches_go_in_requests_of_256(target: Target) -> None:
    target.route(API, Reply(status=200))
    notifier, results = notifier_for(target), []
    pusher = Pusher(target.url(""), notifier.post, policy=FAST, count=results.append)
    pusher.start()
    try:
        pusher.offer(batch(*(f"c{i}" for i in range(600))))
        await until(lambda: results, "one batch sent", holds=lambda seen: seen == ["sent"])
        assert [len(json.loads(h.body)) for h in target.hits(API)] == [256, 256, 88]
    finally:
        await pusher.close()
        await notifier.close()


@pytest.mark.parametrize(("reply", "retryable", "says"), [
    (Reply(status=400, body='{"error": "start time must be before end time"}'), False, "rejected the alerts"),
    (Reply(status=404), False, "path prefix"),
    (Reply(status=500), True, "500"),
    (Reply(close_before_response=True), True, "alertmanager"),
])
async def test_failures_are_classified(target: Target, reply: Reply, retryable: bool, says: str) -> None:
    target.route(API, reply)
    notifier = notifier_for(target)
    try:
        with pytest.raises(DeliveryError) as info:
            await notifier.post(target.url(""), [{"labels": {"alertname": "x"}}])
        assert info.value.retryable is retryable and says in info.value.reason, info.value.reason
    finally:
        await notifier.close()


async def test_send_delivers_when_one_alertmanager_of_several_takes_the_alerts(target: Target) -> None:
    target.route("/down" + API, Reply(status=503))
    target.route("/up" + API, Reply(status=200))
    config = AlertmanagerConfig(urls=(target.url("/down"), target.url("/up")), labels={"team": "payments"})
    notifier = AlertmanagerNotifier(config, NotifierContext(redactor=Redactor(), public_url="https://m.example"))
    try:
        receipt = await notifier.send(make_test_notification(T0))
        assert receipt.action == "posted to 1 of 2 Alertmanager(s)"
        (posted,) = json.loads(target.hits("/up" + API)[0].body)
        assert posted["labels"]["team"] == "payments" and posted["labels"]["severity"] == "info"
        assert posted["generatorURL"] == "https://m.example/api/status"
        target.route("/up" + API, Reply(status=503))
        with pytest.raises(DeliveryError) as info:
            await notifier.send(make_test_notification(T0))
        # Both answers told ("503" alone could also match the port of the test's target).
        assert info.value.retryable and info.value.reason.count(": 503 Service Unavailable") == 2
    finally:
        await notifier.close()


async def test_every_alertmanager_gets_the_alerts_and_one_down_does_not_hold_up_the_others(target: Target) -> None:
    target.route("/am0" + API, Reply(status=503))
    target.route("/am1" + API, Reply(status=200))
    cfg = engine_config(alertmanager={"urls": [target.url("/am0"), target.url("/am1")]})
    metrics = Metrics()
    feed = AlertmanagerFeed(cfg, redactor=Redactor(), metrics=metrics, policy=FAST)
    await feed.start()
    try:
        down = Alert(key="acme/probe_down/api/critical", integration="acme", alert="probe_down", check="api",
                     severity=Severity.CRITICAL, status=AlertStatus.FIRING, summary="down", started_at=T0)
        feed.publish([down], now=T0, interval=0.2)
        await until(lambda: (len(target.hits("/am0" + API)), len(target.hits("/am1" + API))),
                    "3 posts to am0 and one to am1", holds=lambda posts: posts[0] >= 3 and posts[1] >= 1)
        status = feed.status()["alertmanagers"]
        assert status[target.url("/am1")]["state"] == "ok"
        assert status[target.url("/am0")]["state"] == "retrying" and status[target.url("/am0")]["alerts_waiting"] == 1
        assert feed.ready()[0]  # a retryable failure is not a config problem
        target.route("/am0" + API, Reply(status=200))
        await until(lambda: feed.status()["alertmanagers"][target.url("/am0")]["state"], "am0 ok again",
                    holds=lambda state: state == "ok")
        assert json.loads(target.hits("/am0" + API)[-1].body) == json.loads(target.hits("/am1" + API)[0].body)
        sent = metrics.registry.get_sample_value(
            "integration_notifications_total", {"notifier": "alertmanager", "result": "sent"})
        assert sent == 2.0
    finally:
        await feed.close()


async def test_a_failing_alertmanager_shows_as_its_component_failing(target: Target) -> None:
    """As a failing Slack shows as ``integration_monitor_component_ok{component="notifiers"}`` 0: the feed's
    own component, ``alertmanager``, is 0 while an Alertmanager does not take the alerts (the reason in its
    status), 1 again once it does, and once a reload takes the failing one away."""
    target.route(API, Reply(status=503))
    metrics = Metrics()
    feed = AlertmanagerFeed(engine_config(alertmanager={"urls": [target.url("")]}), redactor=Redactor(),
                            metrics=metrics, policy=FAST)

    def component_ok() -> float | None:
        return metrics.registry.get_sample_value("integration_monitor_component_ok", {"component": "alertmanager"})

    await feed.start()
    try:
        down = Alert(key="acme/probe_down/api/critical", integration="acme", alert="probe_down", check="api",
                     severity=Severity.CRITICAL, status=AlertStatus.FIRING, summary="down", started_at=T0)
        feed.publish([down], now=T0, interval=0.2)
        await until(component_ok, "the component not ok", holds=lambda v: v == 0.0)
        assert not feed.status()["ok"] and "503 Service Unavailable" in feed.status()["problem"], feed.status()
        target.route(API, Reply(status=200))
        await until(component_ok, "the component ok", holds=lambda v: v == 1.0)
        assert feed.status()["ok"] and feed.status()["problem"] is None
        target.route(API, Reply(status=503))
        feed.publish([down], now=T0, interval=0.2)
        await until(component_ok, "the component not ok", holds=lambda v: v == 0.0)
        feed.on_config(engine_config())  # the Alertmanager route removed: nothing fails any more
        await until(component_ok, "the component ok", holds=lambda v: v == 1.0)
        assert feed.status() == {"enabled": False}
    finally:
        await feed.close()


def test_a_ca_file_that_is_not_one_is_rejected_at_load(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValidationError) as info:
        AlertmanagerConfig(urls=("https://am.example:9093",), ca_file=bogus)
    assert f"{bogus} is not a readable PEM CA bundle" in str(info.value)
