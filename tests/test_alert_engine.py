"""The alert engine end to end on a fake clock, with a fake sink and the REAL shared Redis (a unique key
prefix per test): spike → one message; flapping → no spam; restart while firing → nothing twice;
resolve after a restart; quota 80 → 95 → < 75 %; the min-samples guard; silences and maintenance;
Redis unreachable and a failing sink."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import yaml
from daemon_support import evaluations
from needs import free_port
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from waiting import until

from alerts.engine import AlertEngine
from alerts.model import AlertStatus, Notification, Severity
from alerts.outbox import Record
from alerts.silences import new_silence
from alerts.stats import QuotaReading
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult, RequestSummary
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Sink:
    """One notifier that delivers at once (the engine's notification log is written as a lane writes it)."""

    def __init__(self) -> None:
        self.got: list[Notification] = []
        self.fail = False
        self.arrived = asyncio.Event()
        self._finished: list[Callable[[Record, str], None]] = []

    def notifier_floors(self) -> list[tuple[str, Severity]]:
        return [("console", Severity.INFO)]

    def pending(self, notifier: str, group_key: str) -> bool:
        return False

    def on_finished(self, listener: Callable[[Record, str], None]) -> None:
        self._finished.append(listener)

    async def synced(self) -> bool:
        return True

    async def submit_to(self, notifier: str, notification: Notification, record: Record) -> None:
        if self.fail:
            raise ConnectionError("outbox unavailable")
        self.got.append(notification)
        self.arrived.set()
        for listener in self._finished:
            listener(record, "sent")


class Quotas:
    def __init__(self) -> None:
        self.ratio: float | None = None

    def quota_snapshot(self) -> Iterable[QuotaReading]:
        if self.ratio is None:
            return []
        return [QuotaReading(integration="acme", quota="api", source="redis", used=self.ratio * 1000, limit=1000,
                             reset_seconds=600, observed_at=T0)]


def config(prefix: str, *, alerts: dict[str, Any] | None = None, alerting: dict[str, Any] | None = None,
           notes: Path | None = None) -> Config:
    integ: dict[str, Any] = {
        "runbook_url": "https://wiki.example.test/runbooks/acme",
        "checks": [{"name": "api", "kind": "http", "url": "https://api.acme.test/v1/x", "interval": "15s"}],
        "alerts": alerts or {},
    }
    if notes is not None:
        integ["notes"] = str(notes)
    raw = {"integrations": {"acme": integ},
           "alerting": {"key_prefix": prefix, "group_wait": "30s", "group_interval": "5m", **(alerting or {})}}
    return parse_config(yaml.safe_dump(raw), env={})


def engine(cfg: Config, client: redis.asyncio.Redis | None, clock: Clock, sink: Sink, **kw: Any) -> AlertEngine:
    return AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(cfg.secret_values()), redis=client, sink=sink,
                       clock=clock, autorun=False, **kw)


def probe(eng: AlertEngine, clock: Clock, ok: bool, error: ErrorClass = ErrorClass.HTTP_5XX) -> None:
    eng.on_result(CheckResult(
        integration="acme", check="api", kind="http", ok=ok, error_class=None if ok else error,
        detail="" if ok else f"{error}: status 503", started_at=clock.now, duration=0.2, total_duration=0.2,
        status_code=200 if ok else 503,
        request=None if ok else RequestSummary(method="GET", url="https://api.acme.test/v1/x?api_key=s3cr3tvalue"),
        response_excerpt=None if ok else '{"error": "service unavailable"}',
    ))


async def tick(eng: AlertEngine, clock: Clock, seconds: float = 15.0, ok: bool | None = None) -> list[Notification]:
    """Advance the fake clock by one probe interval (running the probe if ``ok`` is given) and evaluate."""
    clock.now += seconds
    if ok is not None:
        probe(eng, clock, ok)
    return await eng.evaluate()


async def told_down(eng: AlertEngine, clock: Clock, sink: Sink) -> None:
    """acme/api fails until its probe_down alert fires and is told (the first and only notification)."""
    for _ in range(6):
        await tick(eng, clock, ok=False)
    assert [(a.key, a.status) for n in sink.got for a in n.alerts] == [
        ("acme/probe_down/api/critical", AlertStatus.FIRING)]


def firing_gauge(eng: AlertEngine, alert: str, severity: str) -> float | None:
    return eng.metrics.registry.get_sample_value(
        "integration_alert_firing", {"integration": "acme", "alert": alert, "severity": severity})


def inhibited_gauge(eng: AlertEngine, alert: str, severity: str) -> float | None:
    return eng.metrics.registry.get_sample_value(
        "integration_alert_inhibited", {"integration": "acme", "alert": alert, "severity": severity})


async def test_spike_sends_one_notification(shared_redis: redis.asyncio.Redis, prefix: str, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    notes = tmp_path / "acme.md"
    notes.write_text("Acme returns 503 during their deploys (Tuesdays 10:00 UTC).\n" + "x" * 5000)
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix, notes=notes), shared_redis, clock, sink)
    await eng.start()
    try:
        for _ in range(20):
            await tick(eng, clock, ok=True)
        first_failure = clock.now + 15
        caplog.set_level(logging.INFO, logger="alerts.flush")
        for _ in range(240):  # an hour of failures
            await tick(eng, clock, ok=False)
        # probe_down fires at the 3rd failure (F+30 s), error_rate (burn rate, 4 of 24 runs in the hour) at
        # F+45 s; group_wait 30 s from F+30 → ONE message at F+60 with both. repeat_interval is 4 h: nothing
        # else all hour.
        assert len(sink.got) == 1
        (n,) = sink.got
        assert n.created_at == first_failure + 60 and n.group_key == "acme"
        assert sorted(a.alert for a in n.firing) == ["error_rate", "probe_down"] and not n.resolved
        down = next(a for a in n.firing if a.alert == "probe_down")
        assert down.severity is Severity.CRITICAL and down.status is AlertStatus.FIRING
        assert down.error_classes == {"http_5xx": 5}  # content as of the flush: 5 failures by then
        assert down.last_request is not None and "s3cr3tvalue" not in down.last_request
        assert "REDACTED" in down.last_request
        assert down.response_excerpt == '{"error": "service unavailable"}'
        assert down.runbook_url == "https://wiki.example.test/runbooks/acme"
        assert down.notes is not None and down.notes.startswith("Acme returns 503") and len(down.notes) <= 1500
        assert down.first_failure_at == first_failure
        rate = next(a for a in n.firing if a.alert == "error_rate")
        assert rate.error_classes == {"http_5xx": 5} and "burn rate" in rate.details
        assert firing_gauge(eng, "probe_down", "critical") == 1.0
        latency = [r for r in caplog.records if "after its first failing probe" in r.getMessage()]
        assert latency and "60.000s" in latency[0].getMessage()
        # Recovery: probe_down resolves at once (+ keep_firing_for 1 m); the burn-rate alert holds while its
        # 30 m window still burns 6× — then resolves too. One message per change, nothing more.
        for _ in range(200):
            await tick(eng, clock, ok=True)
        assert len(sink.got) == 3
        assert [a.alert for a in sink.got[1].resolved] == ["probe_down"]
        assert [a.alert for a in sink.got[1].firing] == ["error_rate"]
        assert [a.alert for a in sink.got[2].resolved] == ["error_rate"] and not sink.got[2].firing
        assert firing_gauge(eng, "probe_down", "critical") == 0.0
        assert firing_gauge(eng, "error_rate", "critical") == 0.0
        # Once two hours of history exist, the slow-burn tier (1 d & 2 h at 3×) is judged: the hour-long
        # outage burned the budget, which is worth a ticket-level warning.
        for _ in range(40):
            await tick(eng, clock, ok=True)
        assert len(sink.got) == 4
        assert [(a.alert, a.severity) for a in sink.got[3].firing] == [("error_rate", Severity.WARNING)]
    finally:
        await eng.close()


async def test_flapping_sends_one_flapping_message_not_spam(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    clock, sink = Clock(), Sink()
    cfg = config(prefix, alerts={"probe_down": {"consecutive_failures": 1, "keep_firing_for": 0},
                                 "error_rate": {"enabled": False}})
    eng = engine(cfg, shared_redis, clock, sink)
    await eng.start()
    try:
        transitions = 0
        for i in range(240):  # an hour: fail, fail, ok, ok, … — fires and resolves every 30 s
            before = eng.states.get("acme/probe_down/api/critical")
            await tick(eng, clock, ok=(i // 2) % 2 == 1)
            after = eng.states["acme/probe_down/api/critical"]
            transitions += before is not None and before.status != after.status
        assert transitions > 100
        flapping = [n for n in sink.got if any(a.flapping for a in n.alerts)]
        assert len(flapping) == 1
        assert len(sink.got) <= 3  # first firing (group_wait), at most one resolve, then the flapping notice
        assert eng.status()["alerts"]["flapping"] == ["acme/probe_down/api/critical"]
        # Settles after an hour of quiet: one last message with the real state (resolved), then silence.
        sent_before = len(sink.got)
        for _ in range(300):
            await tick(eng, clock, ok=True)
        assert len(sink.got) == sent_before + 1
        assert [a.alert for a in sink.got[-1].resolved] == ["probe_down"] and not sink.got[-1].firing
    finally:
        await eng.close()


async def fire_and_stop(prefix: str, shared_redis: redis.asyncio.Redis, clock: Clock, sink: Sink) -> None:
    """A first daemon: the check fails, probe_down is notified; then the daemon stops."""
    cfg = config(prefix, alerts={"error_rate": {"enabled": False}})
    first = engine(cfg, shared_redis, clock, sink)
    await first.start()
    for _ in range(10):
        await tick(first, clock, ok=False)
    assert len(sink.got) == 1 and sink.got[0].firing
    await first.close()


async def test_restart_while_firing_sends_nothing_twice(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    clock, sink = Clock(), Sink()
    await fire_and_stop(prefix, shared_redis, clock, sink)
    first_sent = sink.got[0].created_at
    second = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), shared_redis, clock, sink)
    await second.start()
    try:
        assert second.status()["alerts"]["firing"] == ["acme/probe_down/api/critical"]
        assert firing_gauge(second, "probe_down", "critical") is None  # not yet evaluated
        await tick(second, clock)  # no results yet after the restart: the alert is held, not resolved
        assert firing_gauge(second, "probe_down", "critical") == 1.0
        while clock.now + 60 < first_sent + 4 * 3600:  # still failing, for the rest of repeat_interval
            await tick(second, clock, seconds=60, ok=False)
        assert len(sink.got) == 1
        await tick(second, clock, seconds=60, ok=False)
        assert len(sink.got) == 2 and sink.got[1].firing  # the 4-hourly reminder, once
    finally:
        await second.close()


async def test_resolve_is_sent_after_a_restart(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    clock, sink = Clock(), Sink()
    await fire_and_stop(prefix, shared_redis, clock, sink)
    clock.now += 600  # down for ten minutes; the vendor recovered meanwhile
    second = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), shared_redis, clock, sink)
    await second.start()
    try:
        for _ in range(20):
            await tick(second, clock, ok=True)
        assert len(sink.got) == 2
        assert [a.alert for a in sink.got[1].resolved] == ["probe_down"] and not sink.got[1].firing
        assert sink.got[1].resolved[0].resolved_at is not None
        for _ in range(100):
            await tick(second, clock, ok=True)
        assert len(sink.got) == 2
    finally:
        await second.close()
    assert await shared_redis.hlen(prefix + "groups") == 0  # nothing left to tell


async def test_a_firing_quota_alert_resolves_when_its_quota_leaves_the_config(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """A quota removed (or renamed) by a reload has no readings any more, so its rule judges nothing, and a
    firing alert was held as "not judged" for ever: firing in the gauge, never resolved in Slack. It goes
    as a removed check's does. A quota still configured whose reading is missing (a failed read) holds."""
    clock, sink, quotas = Clock(), Sink(), Quotas()
    raw = config(prefix).model_dump(mode="json", exclude_unset=True)
    raw["integrations"]["acme"]["quotas"] = [
        {"name": "api", "source": "redis", "format": "counter", "match": "rl:*", "limit": 10}]
    eng = engine(parse_config(yaml.safe_dump(raw), env={}), shared_redis, clock, sink, quota_source=quotas)
    await eng.start()
    try:
        quotas.ratio = 0.9
        for _ in range(4):
            await tick(eng, clock, ok=True)
        assert [(a.key, a.status) for n in sink.got for a in n.alerts] == [
            ("acme/quota/api/warning", AlertStatus.FIRING)]
        quotas.ratio = None  # a failed read: the quota is still configured, the alert holds
        for _ in range(4):
            await tick(eng, clock, ok=True)
        assert firing_gauge(eng, "quota", "warning") == 1.0 and len(sink.got) == 1
        eng.on_config(config(prefix))  # the quota is gone from the config
        for _ in range(4):
            await tick(eng, clock, ok=True)
        assert [(a.key, a.status) for a in sink.got[-1].alerts] == [("acme/quota/api/warning", AlertStatus.RESOLVED)]
        assert firing_gauge(eng, "quota", "warning") == 0.0
    finally:
        await eng.close()


async def test_a_firing_alert_resolves_when_a_reload_turns_its_rule_off(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """``enabled: false`` on a rule that has an alert firing: the rule is no longer asked, and the alert was
    held as "not judged" for ever (firing in the gauge, never resolved in Slack)."""
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix), shared_redis, clock, sink)
    await eng.start()
    try:
        for _ in range(6):
            await tick(eng, clock, ok=False)
        assert [(a.key, a.status) for n in sink.got for a in n.alerts] == [
            ("acme/probe_down/api/critical", AlertStatus.FIRING)]
        eng.on_config(config(prefix, alerts={"probe_down": {"enabled": False}, "error_rate": {"enabled": False}}))
        for _ in range(4):
            await tick(eng, clock, ok=False)
        assert [(a.key, a.status) for a in sink.got[-1].alerts] == [
            ("acme/probe_down/api/critical", AlertStatus.RESOLVED)]
        assert firing_gauge(eng, "probe_down", "critical") == 0.0
    finally:
        await eng.close()


@pytest.mark.parametrize("change", [{"severity": "critical"}, {"threshold": None}])
async def test_a_firing_latency_alert_resolves_when_a_reload_no_longer_asks_for_it(
    shared_redis: redis.asyncio.Redis, prefix: str, change: dict[str, Any]
) -> None:
    """A reload that changes the rule's severity (the alert's key names it) or leaves the check without a
    threshold: the rule never judges that alert again, and it was held firing for ever."""
    clock, sink = Clock(), Sink()
    latency = {"threshold": "100ms", "for": "0s", "keep_firing_for": "0s"}
    eng = engine(config(prefix, alerts={"latency": latency}), shared_redis, clock, sink)
    await eng.start()
    try:
        for _ in range(8):
            await tick(eng, clock, ok=True)  # 200 ms a run
        assert [(a.key, a.status) for n in sink.got for a in n.alerts] == [
            ("acme/latency/api/warning", AlertStatus.FIRING)]
        eng.on_config(config(prefix, alerts={"latency": {**latency, **change}}))
        for _ in range(4):
            await tick(eng, clock, ok=True)
        told = [(a.key, a.status) for n in sink.got[1:] for a in n.alerts]
        assert ("acme/latency/api/warning", AlertStatus.RESOLVED) in told, told
        assert eng.states.get("acme/latency/api/warning") is None or not eng.states["acme/latency/api/warning"].active
    finally:
        await eng.close()


@pytest.mark.parametrize("check", [
    {"kind": "http", "url": "http://api.acme.test/v1/x"},  # away from TLS
    {"kind": "flow", "steps": [{"name": "get", "url": "https://other.acme.test/v1/x"}]},  # another kind
])
async def test_a_firing_tls_expiry_alert_resolves_when_a_reload_points_its_check_elsewhere(
    shared_redis: redis.asyncio.Redis, prefix: str, check: dict[str, Any]
) -> None:
    """The certificate a tls_expiry alert is about is the one the check's requests met: a reload that
    sends them elsewhere (another kind of check, other URLs) leaves it to nothing, and the old expiry was
    held firing for ever (runs that show no certificate keep the last one seen). It resolves; a run that
    meets a certificate again judges that one."""
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix), shared_redis, clock, sink)
    expiry = T0 + 10 * 86400

    def run(tls_expiry: float | None) -> None:
        eng.on_result(CheckResult(integration="acme", check="api", kind="http", ok=True, error_class=None, detail="",
                                  started_at=clock.now,
                                  duration=0.2, total_duration=0.2, status_code=200, tls_expiry=tls_expiry))

    await eng.start()
    try:
        for _ in range(4):
            run(expiry)
            await tick(eng, clock)
        assert [(a.key, a.status) for n in sink.got for a in n.alerts] == [
            ("acme/tls_expiry/api/warning", AlertStatus.FIRING)]
        raw = config(prefix).model_dump(mode="json", exclude_unset=True)
        raw["integrations"]["acme"]["checks"] = [{"name": "api", "interval": "15s", **check}]
        eng.on_config(parse_config(yaml.safe_dump(raw), env={}))
        for _ in range(4):
            run(None)  # (plain HTTP, or a run that failed before any certificate)
            await tick(eng, clock)
        assert [(a.key, a.status) for a in sink.got[-1].alerts] == [
            ("acme/tls_expiry/api/warning", AlertStatus.RESOLVED)]
        assert firing_gauge(eng, "tls_expiry", "warning") == 0.0
        for _ in range(4):
            run(T0 + 2 * 86400)  # the new endpoint's certificate, which expires sooner
            await tick(eng, clock)
        assert ("acme/tls_expiry/api/critical", AlertStatus.FIRING) in [(a.key, a.status) for a in sink.got[-1].alerts]
    finally:
        await eng.close()


async def test_a_firing_real_traffic_alert_resolves_when_the_traffic_section_leaves_the_config(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """The real-traffic error-rate alert of an integration whose ``traffic`` section a reload removed: the rule
    has no traffic to judge any more, and the alert was held firing for ever."""
    clock, sink = Clock(), Sink()
    rule = {"error_rate": {"threshold": 0.1, "window": "5m", "traffic": {"min_samples": 5, "min_short_samples": 1}}}
    raw = config(prefix, alerts=rule).model_dump(mode="json", exclude_unset=True)
    raw["integrations"]["acme"]["traffic"] = {}
    eng = engine(parse_config(yaml.safe_dump(raw), env={}), shared_redis, clock, sink)
    await eng.start()
    try:
        for _ in range(4):
            eng.add_traffic("acme", clock.now, 20, {"http_5xx": 10})
            await tick(eng, clock)
        key = "acme/error_rate/real traffic/critical"
        assert [(a.key, a.status) for n in sink.got for a in n.alerts] == [(key, AlertStatus.FIRING)]
        eng.on_config(config(prefix, alerts=rule))
        for _ in range(4):
            await tick(eng, clock)
        assert [(a.key, a.status) for a in sink.got[-1].alerts] == [(key, AlertStatus.RESOLVED)]
    finally:
        await eng.close()


async def test_quota_warning_then_critical_then_resolved(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    clock, sink, quotas = Clock(), Sink(), Quotas()
    eng = engine(config(prefix), shared_redis, clock, sink, quota_source=quotas)
    await eng.start()
    try:
        def told() -> list[tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
            return [([(a.alert, str(a.severity)) for a in n.firing], [(a.alert, str(a.severity)) for a in n.resolved])
                    for n in sink.got]

        for ratio in (0.5, 0.82, 0.96):
            quotas.ratio = ratio
            for _ in range(30):
                await tick(eng, clock, ok=True)
        # Both fire; the warning is inhibited by the critical, and says so (it was not told).
        assert (firing_gauge(eng, "quota", "warning"), firing_gauge(eng, "quota", "critical")) == (1.0, 1.0)
        assert (inhibited_gauge(eng, "quota", "warning"), inhibited_gauge(eng, "quota", "critical")) == (1.0, 0.0)
        assert eng.status()["alerts"]["inhibited_by"] == {"acme/quota/api/warning": "acme/quota/api/critical"}
        quotas.ratio = 0.70
        for _ in range(30):
            await tick(eng, clock, ok=True)
        assert eng.status()["alerts"]["inhibited_by"] == {}
        assert told() == [
            ([("quota", "warning")], []),
            ([("quota", "critical")], []),  # the warning still fires, but the critical inhibits it
            ([], [("quota", "critical"), ("quota", "warning")]),
        ]
        assert firing_gauge(eng, "quota", "warning") == 0.0 and inhibited_gauge(eng, "quota", "warning") == 0.0
        # Hysteresis: 82 % warns, 78 % holds the warning (no message), 74 % clears it.
        for ratio in (0.82, 0.78, 0.74):
            quotas.ratio = ratio
            for _ in range(30):
                await tick(eng, clock, ok=True)
        assert told()[3:] == [([("quota", "warning")], []), ([], [("quota", "warning")])]
        warning = sink.got[0].firing[0]
        assert warning.quota == "api" and "820/1000 used" in warning.summary and "resets in 10m" in warning.summary
    finally:
        await eng.close()


async def test_inhibition_is_per_quota_and_the_gauge_says_when_nothing_was_told(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    class TwoQuotas:
        def quota_snapshot(self) -> Iterable[QuotaReading]:
            return [QuotaReading(integration="acme", quota=name, source="redis", used=used, limit=100)
                    for name, used in (("calls", 96), ("exports", 85))]

    clock, sink = Clock(), Sink()
    eng = engine(config(prefix), shared_redis, clock, sink, quota_source=TwoQuotas())
    await eng.start()
    try:
        for _ in range(4):
            await tick(eng, clock, ok=True)
        # calls: critical (its warning inhibited); exports: a warning nothing inhibits, and it was told.
        assert eng.status()["alerts"]["inhibited_by"] == {"acme/quota/calls/warning": "acme/quota/calls/critical"}
        assert firing_gauge(eng, "quota", "warning") == 1.0 and inhibited_gauge(eng, "quota", "warning") == 0.0
        told = {a.key for n in sink.got for a in n.firing}
        assert told == {"acme/quota/calls/critical", "acme/quota/exports/warning"}
    finally:
        await eng.close()


async def test_one_failure_out_of_two_never_pages(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix, alerts={"error_rate": {"threshold": 0.05, "window": "5m"}}), shared_redis, clock, sink)
    await eng.start()
    try:
        await tick(eng, clock, ok=True)
        await tick(eng, clock, ok=False)
        for _ in range(100):
            await tick(eng, clock)  # no more runs (e.g. the check was paused): nothing to judge
        assert sink.got == [] and eng.states == {}
    finally:
        await eng.close()


def suppressed(eng: AlertEngine) -> float | None:
    return eng.metrics.registry.get_sample_value(
        "integration_notifications_total", {"notifier": "console", "result": "suppressed"})


async def test_silence_suppresses_until_expired(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), shared_redis, clock, sink)
    await eng.start()
    try:
        silence = new_silence(now=clock.now, duration=3600, integration="acme", alert="probe_down",
                              comment="vendor maintenance", created_by="test")
        await eng.add_silence(silence)
        for _ in range(20):
            await tick(eng, clock, ok=False)
        assert sink.got == []
        assert suppressed(eng) == 1.0
        assert eng.status()["alerts"]["firing"] == ["acme/probe_down/api/critical"]
        assert firing_gauge(eng, "probe_down", "critical") == 1.0  # metrics keep telling the truth
        assert await eng.expire_silence(silence.id) is not None
        for _ in range(3):
            await tick(eng, clock, ok=False)
        assert len(sink.got) == 1 and sink.got[0].firing
    finally:
        await eng.close()


async def test_repeats_held_back_by_a_silence_are_counted_as_suppressed(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """Told, then silenced while it keeps firing: each repeat the silence holds back (one a repeat_interval)
    counts as suppressed, as its first message would have; they were dropped uncounted."""
    clock, sink = Clock(), Sink()
    cfg = config(prefix, alerts={"error_rate": {"enabled": False}}, alerting={"repeat_interval": "1h"})
    eng = engine(cfg, shared_redis, clock, sink)
    await eng.start()
    try:
        await told_down(eng, clock, sink)
        silence = new_silence(now=clock.now, duration=4 * 3600, integration="acme", comment="known",
                              created_by="test")
        await eng.add_silence(silence)
        for _ in range(150):  # two and a half hours, still failing: two repeats due, both held back
            await tick(eng, clock, 60, ok=False)
        assert len(sink.got) == 1 and suppressed(eng) == 2.0
        assert await eng.expire_silence(silence.id) is not None
        await tick(eng, clock, 60, ok=False)
        assert len(sink.got) == 2 and sink.got[1].firing  # the repeat goes out once nothing holds it back
        assert suppressed(eng) == 2.0
    finally:
        await eng.close()


async def test_a_told_alert_that_resolves_while_silenced_is_resolved_in_slack_once_the_silence_ends(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """Posted, then silenced while someone looks into it, then fixed during the silence: its message must not
    stay red for ever. The resolve was forgotten (no resolve in its thread, ever); it is held back while the
    silence lasts and told when it ends."""
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), shared_redis, clock, sink)
    await eng.start()
    try:
        await told_down(eng, clock, sink)
        silence = new_silence(now=clock.now, duration=3600, integration="acme", comment="looking", created_by="test")
        await eng.add_silence(silence)
        for _ in range(10):
            await tick(eng, clock, ok=True)
        assert len(sink.got) == 1  # nothing told while silenced
        assert await eng.expire_silence(silence.id) is not None
        for _ in range(2):
            await tick(eng, clock, ok=True)
        assert [(a.key, a.status) for a in sink.got[-1].alerts] == [
            ("acme/probe_down/api/critical", AlertStatus.RESOLVED)]
        assert len(sink.got) == 2
    finally:
        await eng.close()


async def test_silence_written_by_another_process_is_picked_up(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    from alerts.store import AlertStore

    clock, sink = Clock(), Sink()
    eng = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), shared_redis, clock, sink)
    await eng.start()
    try:
        cli_store = AlertStore(shared_redis, prefix)  # what `integration-monitor silence add` does
        await cli_store.put_silence(new_silence(now=clock.now, duration=600, integration="acme"))
        for _ in range(20):
            await tick(eng, clock, ok=False)
        assert sink.got == [] and suppressed(eng) == 1.0
    finally:
        await eng.close()


async def test_maintenance_window_suppresses(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    import datetime as dt

    clock, sink = Clock(), Sink()
    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    window = {"start": start.isoformat(), "end": (start + dt.timedelta(hours=1)).isoformat()}
    eng = engine(config(prefix, alerts={"error_rate": {"enabled": False}, "maintenance": [window]}),
                 shared_redis, clock, sink)
    await eng.start()
    try:
        for _ in range(200):  # 50 minutes of failures inside the window
            await tick(eng, clock, ok=False)
        assert sink.got == [] and suppressed(eng) == 1.0
        for _ in range(60):  # the window ends while it still fails: now it is told
            await tick(eng, clock, ok=False)
        assert len(sink.got) == 1 and sink.got[0].firing
    finally:
        await eng.close()


async def test_redis_unreachable_is_an_alert_and_evaluation_goes_on(prefix: str) -> None:
    clock, sink = Clock(), Sink()
    # No client-side retries, so the test is fast; the engine bounds each store round anyway.
    dead = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5,
                               retry=Retry(NoBackoff(), 0))
    eng = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), dead, clock, sink)
    try:
        await eng.start()
        for _ in range(10):
            await tick(eng, clock, ok=False)
        # The engine says its own store is not in sync (whether Redis is down is the daemon's health check's).
        assert eng.metrics.registry.get_sample_value("integration_monitor_component_ok", {"component": "alerts"}) == 0
        firing = {a.alert for n in sink.got for a in n.firing}
        assert "probe_down" in firing  # alerts still go out, state kept in memory
        assert "monitor_redis_down" in firing  # after redis_down_for (60 s)
    finally:
        await eng.close()
        await dead.aclose()


async def test_a_failing_sink_never_blocks_evaluation(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), shared_redis, clock, sink)
    await eng.start()
    try:
        sink.fail = True
        for _ in range(10):
            await tick(eng, clock, ok=False)
        assert sink.got == [] and eng.states["acme/probe_down/api/critical"].status is AlertStatus.FIRING
        sink.fail = False
        await tick(eng, clock, ok=False)
        assert len(sink.got) == 1 and [a.alert for a in sink.got[0].firing] == ["probe_down"]
    finally:
        await eng.close()


# ---- grouping (pure) and self-health ---------------------------------------------------------------

def a(key: str, status: AlertStatus = AlertStatus.FIRING, severity: Severity = Severity.CRITICAL) -> Any:
    from alerts.model import Alert

    return Alert(key=key, integration="acme", alert=key, severity=severity, status=status, summary=key)


def test_group_wait_drops_alerts_that_resolve_before_it() -> None:
    from alerts.grouping import plan

    timing = parse_config("alerting: {group_wait: 30s, group_interval: 5m, repeat_interval: 4h}").alerting
    log, n = plan(None, "acme", [a("x")], T0, timing)
    assert n is None and log is not None and log.last_flush is None
    log, n = plan(log, "acme", [], T0 + 20, timing)  # resolved within group_wait: never told
    assert n is None and log is None


def test_group_batches_changes_and_repeats() -> None:
    from alerts.grouping import plan

    timing = parse_config("alerting: {group_wait: 30s, group_interval: 5m, repeat_interval: 4h}").alerting
    log, _ = plan(None, "acme", [a("x")], T0, timing)
    log, n = plan(log, "acme", [a("x"), a("y")], T0 + 30, timing)
    assert n is not None and [al.key for al in n.alerts] == ["x", "y"]
    log, n = plan(log, "acme", [a("x"), a("y"), a("z")], T0 + 60, timing)
    assert n is None  # a change, but inside group_interval
    log, n = plan(log, "acme", [a("x"), a("y", AlertStatus.RESOLVED), a("z")], T0 + 330, timing)
    assert n is not None and [al.key for al in n.resolved] == ["y"] and len(n.firing) == 2
    assert log is not None and set(log.sent) == {"x", "z"}
    log, n = plan(log, "acme", [a("x"), a("z")], T0 + 330 + 4 * 3600 - 1, timing)
    assert n is None
    log, n = plan(log, "acme", [a("x"), a("z")], T0 + 330 + 4 * 3600, timing)
    assert n is not None and len(n.firing) == 2  # the reminder
    log, n = plan(log, "acme", [a("x", AlertStatus.RESOLVED), a("z", AlertStatus.RESOLVED)], T0 + 9e4, timing)
    assert n is not None and len(n.resolved) == 2 and log is None  # all told: the group is forgotten


async def test_the_engine_knows_its_next_deadline(prefix: str) -> None:
    """group_wait, keep_firing_for and group_interval end at a moment the engine names (next_due), so its
    loop evaluates then rather than at the evaluation after (README, "Alert timing")."""
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix, alerts={"error_rate": {"enabled": False}}), None, clock, sink)
    await eng.start()
    try:
        for _ in range(3):
            await tick(eng, clock, ok=True)
        assert eng.next_due is None  # nothing under way
        await tick(eng, clock, 1, ok=False)
        await tick(eng, clock, 1, ok=False)
        await tick(eng, clock, 1, ok=False)  # probe_down fires: its group's first message after group_wait
        fired = clock.now
        assert eng.next_due == fired + 30 and not sink.got
        clock.now = fired + 30
        await eng.evaluate()
        assert len(sink.got) == 1 and eng.next_due is None  # told; repeat_interval is the regular ticks' job
        await tick(eng, clock, 5, ok=True)  # recovered: resolves keep_firing_for (1 m) after the last failure
        assert eng.next_due == fired + 30 + 60
        clock.now = fired + 90
        await eng.evaluate()
        assert [a.alert for a in sink.got[-1].resolved] == ["probe_down"] and eng.next_due is None
    finally:
        await eng.close()


async def test_the_evaluation_loop_runs_at_a_deadline_not_an_interval_later(prefix: str) -> None:
    """With evaluations an hour apart, an auth failure (fires at once, waking the engine) is told when
    group_wait (1 s) ends, not an hour later."""
    sink = Sink()
    cfg = config(prefix, alerts={"error_rate": {"enabled": False}}, alerting={"group_wait": "1s"})
    cfg = cfg.model_copy(update={"monitor": cfg.monitor.model_copy(update={"evaluation_interval": 3600.0})})
    eng = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), sink=sink)
    evaluated = evaluations(eng)
    await eng.start()
    try:
        await until(lambda: bool(evaluated), "the first evaluation (the next is an hour away)")
        now = Clock()
        now.now = time.time()
        probe(eng, now, False, ErrorClass.AUTH)  # a check starts failing: the engine wakes
        async with asyncio.timeout(30):
            await sink.arrived.wait()
        assert [a.alert for a in sink.got[0].firing] == ["probe_down"]
    finally:
        await eng.close()


def test_a_resolve_is_not_held_by_group_interval() -> None:
    """keep_firing_for already held the resolve; group_interval batches news of firing alerts only."""
    from alerts.grouping import plan

    timing = parse_config("alerting: {group_wait: 30s, group_interval: 5m, repeat_interval: 4h}").alerting
    log, _ = plan(None, "acme", [a("x"), a("y")], T0, timing)
    log, n = plan(log, "acme", [a("x"), a("y")], T0 + 30, timing)
    assert n is not None and len(n.firing) == 2
    log, n = plan(log, "acme", [a("x"), a("y"), a("z")], T0 + 45, timing)
    assert n is None  # a new firing alert waits for group_interval
    log, n = plan(log, "acme", [a("x"), a("y", AlertStatus.RESOLVED), a("z")], T0 + 60, timing)
    assert n is not None and [al.key for al in n.resolved] == ["y"]  # the resolve at once, z with it
    assert [al.key for al in n.firing] == ["x", "z"] and log is not None and set(log.sent) == {"x", "z"}
    log, n = plan(log, "acme", [a("x"), a("z")], T0 + 75, timing)
    assert n is None  # nothing changed since
    log, n = plan(log, "acme", [a("x", AlertStatus.RESOLVED), a("z")], T0 + 90, timing)
    assert n is not None and [al.key for al in n.resolved] == ["x"]


async def test_notifier_failing_and_scheduler_lag_become_alerts(prefix: str) -> None:
    clock, sink = Clock(), Sink()
    cfg = config(prefix, alerting={"self_health": {"notifier_failing_for": "1m", "scheduler_lag": "5s"}})
    eng = engine(cfg, None, clock, sink)
    metrics = eng.metrics
    await eng.start()
    try:
        metrics.notifications.labels(notifier="slack", result="sent").inc()
        metrics.scheduler_lag.observe(0.01)
        await tick(eng, clock)
        for _ in range(10):  # slack only fails from now on; probes start 12 s late
            metrics.notifications.labels(notifier="slack", result="failed").inc()
            metrics.scheduler_lag.observe(12.0)
            await tick(eng, clock)
        firing = {(al.alert, al.key) for n in sink.got for al in n.firing}
        assert ("monitor_notifier_failing", "_monitor/monitor_notifier_failing/slack/critical") in firing
        assert ("monitor_scheduler_lagging", "_monitor/monitor_scheduler_lagging/-/warning") in firing
        for _ in range(30):  # recovered
            metrics.notifications.labels(notifier="slack", result="sent").inc()
            metrics.scheduler_lag.observe(0.01)
            await tick(eng, clock)
        resolved = {al.alert for n in sink.got for al in n.resolved}
        assert resolved == {"monitor_notifier_failing", "monitor_scheduler_lagging"}
        assert eng.store.durable is False  # no Redis configured: memory store, no Redis alert
        assert not any(k.startswith("_monitor/monitor_redis_down") for k in eng.states)
    finally:
        await eng.close()


async def test_a_newly_failing_check_wakes_the_evaluation_loop(prefix: str) -> None:
    import time

    sink = Sink()
    cfg = config(prefix, alerts={"probe_down": {"consecutive_failures": 1}},
                 alerting={"group_wait": "0s"})
    cfg = cfg.model_copy(update={"monitor": cfg.monitor.model_copy(update={"evaluation_interval": 3600.0})})
    # The real loop, real clock: next regular evaluation in an hour.
    eng = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), sink=sink)
    evaluated = evaluations(eng)
    await eng.start()
    try:
        await until(lambda: evaluated, "the loop's first evaluation")  # the result below comes after it
        eng.on_result(CheckResult(integration="acme", check="api", kind="http", ok=False,
                                  error_class=ErrorClass.CONNECT, detail="refused", started_at=time.time(),
                                  duration=0.01, total_duration=0.01))
        # generous: not a speed assertion, just "not in an hour"
        await asyncio.wait_for(sink.arrived.wait(), 30)
        assert [a.alert for a in sink.got[0].firing] == ["probe_down"]
    finally:
        await eng.close()
    assert eng.ready() == (True, "")


def test_a_reload_with_a_longer_window_widens_probe_and_traffic_history(prefix: str) -> None:
    """Issue 13, finding 4: both kinds of statistics reach back as far as the longest window configured."""
    eng = engine(config(prefix), None, Clock(), Sink())
    eng.add_traffic("acme", T0, 10, {"http_5xx": 1})
    width, kept = eng.stats.bucket_seconds, eng.traffic["acme"].max_window
    eng.on_config(config(prefix, alerts={"error_rate": {"windows": [{"long": "7d", "short": "6h", "factor": 1}]}}))
    assert eng.stats.bucket_seconds > width and eng.traffic["acme"].max_window == 7 * 86400 > kept


def test_runs_are_kept_one_by_one_as_far_back_as_the_windows_that_must_be_exact(prefix: str) -> None:
    """The raw ring reaches back the latency window and the error-rate windows shorter than 40 buckets
    (longer ones are counted from buckets), and follows a reload."""
    eng = engine(config(prefix), None, Clock(), Sink())
    assert eng.stats.bucket_seconds == 180  # the default tiers' 1 d window in 480 buckets
    assert eng.stats.exact_window == 3600  # 5 m, 30 m, 1 h: exact; 2 h (40 buckets), 6 h, 1 d: from buckets
    eng.on_result(CheckResult(integration="acme", check="api", kind="http", ok=True, error_class=None, detail="",
                              started_at=T0, duration=0.01, total_duration=0.01, status_code=200))
    eng.on_config(config(prefix, alerts={"latency": {"window": "3h"},
                                         "error_rate": {"windows": [{"long": "1d", "short": "10m", "factor": 3}]}}))
    check = eng.stats.check("acme", "api")
    assert eng.stats.exact_window == 3 * 3600 and check is not None and check.raw_seconds == 3 * 3600


async def test_the_alert_gauges_of_an_integration_a_reload_removes_go(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    """Its alert resolves and is told, then its gauges leave /metrics (they stayed at 0 for ever, under the name
    of an integration the config no longer has; a resolved alert of a configured one keeps its 0)."""
    clock, sink = Clock(), Sink()
    eng = engine(config(prefix), shared_redis, clock, sink)
    await eng.start()
    try:
        await told_down(eng, clock, sink)
        assert firing_gauge(eng, "probe_down", "critical") == 1.0
        kept = config(prefix)
        eng.on_config(kept.model_copy(update={"integrations": {"globex": kept.integrations["acme"]}}))
        for _ in range(4):
            await tick(eng, clock)
        assert [(a.key, a.status) for a in sink.got[-1].alerts] == [
            ("acme/probe_down/api/critical", AlertStatus.RESOLVED)]
        assert firing_gauge(eng, "probe_down", "critical") is None
        assert inhibited_gauge(eng, "probe_down", "critical") is None
    finally:
        await eng.close()
