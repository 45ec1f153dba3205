"""Alert rules over window statistics, on a fake clock (runs carry their own timestamps)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from alerts.message import build_message, render_text
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.rules import RULES, Condition, RuleInput, alert_key
from alerts.stats import CheckStats, QuotaReading, Stats
from integration_kit.errors import ErrorClass
from integration_kit.results import CheckResult, RequestSummary
from monitor.settings import IntegrationConfig, parse_config

T0 = 1_800_000_000.0


def result(at: float, ok: bool = True, error: ErrorClass | None = None, *, duration: float = 0.1,
           status: int | None = 200, tls_expiry: float | None = None, check: str = "api") -> CheckResult:
    if not ok and error is None:
        error = ErrorClass.HTTP_5XX
    return CheckResult(
        integration="acme", check=check, kind="http", ok=ok, error_class=None if ok else error,
        detail="" if ok else f"{error}: boom", started_at=at, duration=duration, total_duration=duration,
        status_code=status if ok or error is not ErrorClass.TIMEOUT else None, tls_expiry=tls_expiry,
        request=None if ok else RequestSummary(method="GET", url="https://api.acme.test/v1/x?api_key=s3cret"),
        response_excerpt=None if ok else '{"error": "upstream"}',
    )


def integration(alerts: dict[str, Any] | None = None, **check: Any) -> IntegrationConfig:
    raw = {"integrations": {"acme": {
        "checks": [{"name": "api", "kind": "http", "url": "https://api.acme.test/v1/x", "interval": "30s", **check}],
        "alerts": alerts or {},
    }}}
    return parse_config(yaml.safe_dump(raw)).integrations["acme"]


def run(rule: str, cfg: IntegrationConfig, stats: Stats, now: float, *, active: frozenset[str] = frozenset(),
        quotas: dict[str, QuotaReading] | None = None) -> dict[str, Condition]:
    inp = RuleInput(integration="acme", config=cfg, stats=stats, quotas=quotas or {}, now=now, active=active)
    return {c.key: c for c in RULES[rule](inp)}


def feed(stats: Stats, start: float, pattern: list[bool], step: float = 30.0, **kw: Any) -> float:
    at = start
    for ok in pattern:
        stats.add(result(at, ok, **kw))
        at += step
    return at


# ---- error_rate -------------------------------------------------------------------------------------

def test_burn_rate_pages_when_both_windows_burn_fast() -> None:
    cfg, stats = integration(), Stats()
    now = feed(stats, T0, [True] * 720)  # six hours of green at 30 s
    key = alert_key("acme", "error_rate", "api", Severity.CRITICAL)
    assert run("error_rate", cfg, stats, now)[key].active is False
    # Full outage: the 5 m window burns 100× at once; the 1 h window reaches 14.4× (18 of 120 runs) after
    # 9 minutes, before the 6 h tier (6 % of 720 runs) would.
    fired_after = None
    for i in range(40):
        stats.add(result(now, False, ErrorClass.TIMEOUT))
        now += 30
        if run("error_rate", cfg, stats, now)[key].active:
            fired_after = i + 1
            break
    assert fired_after == 18
    cond = run("error_rate", cfg, stats, now)[key]
    assert cond.error_classes == {"timeout": fired_after}
    assert "burn rate" in cond.details and "timeout ×" in cond.summary
    assert cond.details["last error"].startswith("timeout")


def test_burn_rate_ignores_an_old_burst_once_the_short_window_is_clean() -> None:
    cfg, stats = integration(), Stats()
    now = feed(stats, T0, [True] * 240 + [False] * 30 + [True] * 61)
    out = run("error_rate", cfg, stats, now)
    # 1 h and 6 h windows are still hot, but the 5 m and 30 m windows are clean: no page …
    assert out[alert_key("acme", "error_rate", "api", Severity.CRITICAL)].active is False
    # … while the slow-burn ticket tier (1 d & 2 h at 3×) still warns.
    assert out[alert_key("acme", "error_rate", "api", Severity.WARNING)].active is True


def test_min_samples_guard_one_failure_out_of_two_never_pages() -> None:
    cfg, stats = integration(), Stats()
    now = feed(stats, T0, [True, False])
    assert run("error_rate", cfg, stats, now) == {}  # not judged: too few runs (state is held)
    cfg = integration({"error_rate": {"threshold": 0.05, "window": "5m", "min_samples": 10}})
    assert run("error_rate", cfg, stats, now) == {}


def test_threshold_mode_counts_classes() -> None:
    cfg = integration({"error_rate": {"threshold": 0.3, "window": "5m", "min_samples": 5}})
    assert cfg.alerts.error_rate.mode == "threshold"
    stats = Stats()
    now = feed(stats, T0, [True] * 6)
    key = alert_key("acme", "error_rate", "api", Severity.CRITICAL)
    assert run("error_rate", cfg, stats, now)[key].active is False
    stats.add(result(now, False, ErrorClass.AUTH))
    stats.add(result(now + 30, False, ErrorClass.HTTP_5XX))
    stats.add(result(now + 60, False, ErrorClass.HTTP_5XX))
    cond = run("error_rate", cfg, stats, now + 61)[key]
    assert cond.active and cond.error_classes == {"http_5xx": 2, "auth": 1}
    assert "http_5xx ×2, auth ×1" in cond.summary


# ---- quota ------------------------------------------------------------------------------------------

def quota(ratio: float, **kw: Any) -> dict[str, QuotaReading]:
    return {"api": QuotaReading(integration="acme", quota="api", source="redis", used=ratio * 1000, limit=1000, **kw)}


def test_quota_levels_with_hysteresis() -> None:
    cfg, stats = integration(), Stats()
    warn = alert_key("acme", "quota", "api", Severity.WARNING)
    crit = alert_key("acme", "quota", "api", Severity.CRITICAL)

    def verdict(ratio: float, active: set[str]) -> tuple[bool, bool]:
        out = run("quota", cfg, stats, T0, active=frozenset(active), quotas=quota(ratio))
        return out[warn].active, out[crit].active

    assert verdict(0.50, set()) == (False, False)
    assert verdict(0.80, set()) == (True, False)
    assert verdict(0.78, set()) == (False, False)  # not firing yet: 78 % is below the warning level
    assert verdict(0.78, {warn}) == (True, False)  # firing: holds until below 75 %
    assert verdict(0.74, {warn}) == (False, False)
    assert verdict(0.95, {warn}) == (True, True)
    assert verdict(0.85, {warn, crit}) == (True, True)  # critical holds down to the warning level
    assert verdict(0.79, {warn, crit}) == (True, False)


def test_a_quota_with_nothing_used_and_no_known_limit_clears_its_alerts() -> None:
    # No limiter key (the window expired before this process ever read one): nothing used, ratio 0.
    cfg, stats = integration(), Stats()
    warn = alert_key("acme", "quota", "api", Severity.WARNING)
    crit = alert_key("acme", "quota", "api", Severity.CRITICAL)
    idle = {"api": QuotaReading(integration="acme", quota="api", source="redis", used=0.0, limit=None)}
    out = run("quota", cfg, stats, T0, active=frozenset({warn, crit}), quotas=idle)
    assert (out[warn].active, out[crit].active) == (False, False)


def test_quota_alert_says_used_limit_reset_and_exhaustion() -> None:
    cfg, stats = integration(), Stats()
    out = run("quota", cfg, stats, T0, quotas=quota(0.9, reset_seconds=120, exhaustion_seconds=600))
    cond = out[alert_key("acme", "quota", "api", Severity.WARNING)]
    assert cond.quota == "api"
    assert "900/1000 used" in cond.summary and "resets in 2m" in cond.summary and "~10m" in cond.summary
    assert cond.details["quota used"] == "900 / 1000 (90.0%, redis)"
    assert cond.details["exhausted in"] == "~10m at the current rate"


def test_a_used_up_quota_says_so_not_that_it_runs_out_in_no_time() -> None:
    cfg, stats = integration(), Stats()
    out = run("quota", cfg, stats, T0, quotas=quota(1.0, exhaustion_seconds=0.0))
    cond = out[alert_key("acme", "quota", "api", Severity.CRITICAL)]
    assert cond.summary.endswith("1000/1000 used, used up"), cond.summary
    assert cond.details["exhausted in"] == "now (used up)"


# ---- probe_down -------------------------------------------------------------------------------------

def test_probe_down_after_n_consecutive_failures() -> None:
    cfg, stats = integration(), Stats()
    key = alert_key("acme", "probe_down", "api", Severity.CRITICAL)
    now = feed(stats, T0, [True, False, False])
    assert run("probe_down", cfg, stats, now)[key].active is False
    now = feed(stats, now, [False])
    cond = run("probe_down", cfg, stats, now)[key]
    assert cond.active and "3 failed runs in a row" in cond.summary
    assert cond.for_seconds == 0.0 and cond.keep_firing_for == 60.0
    now = feed(stats, now, [True])
    assert run("probe_down", cfg, stats, now)[key].active is False


def test_auth_failure_fires_at_once_even_with_for() -> None:
    cfg, stats = integration({"probe_down": {"for": "2m"}}), Stats()
    stats.add(result(T0 - 30))  # a success first: the streak below starts in our sight
    stats.add(result(T0, False, ErrorClass.AUTH, status=401))
    cond = run("probe_down", cfg, stats, T0 + 1)[alert_key("acme", "probe_down", "api", Severity.CRITICAL)]
    assert cond.active and cond.for_seconds == 0.0 and "credentials rejected (HTTP 401)" in cond.summary
    stats.add(result(T0 + 30, False, ErrorClass.TIMEOUT, status=None))
    cond = run("probe_down", cfg, stats, T0 + 31)[alert_key("acme", "probe_down", "api", Severity.CRITICAL)]
    assert not cond.active and cond.for_seconds == 120.0  # 2 failures, not auth: waits for N


def test_probe_down_cannot_judge_a_streak_that_began_before_a_restart() -> None:
    # After a restart the statistics start empty: 2 failures and no success may be the tail of a longer
    # streak, so the rule says nothing (a firing alert loaded from Redis must not resolve) until it sees
    # N failures (down) or a success (up).
    cfg, stats = integration({}), Stats()
    key = alert_key("acme", "probe_down", "api", Severity.CRITICAL)
    stats.add(result(T0, False, ErrorClass.HTTP_5XX, status=503))
    stats.add(result(T0 + 30, False, ErrorClass.HTTP_5XX, status=503))
    assert key not in run("probe_down", cfg, stats, T0 + 31)
    stats.add(result(T0 + 60, False, ErrorClass.HTTP_5XX, status=503))
    assert run("probe_down", cfg, stats, T0 + 61)[key].active
    stats.add(result(T0 + 90))
    assert not run("probe_down", cfg, stats, T0 + 91)[key].active


def test_probe_down_messages_tell_the_error_classes_once() -> None:
    # Console, Slack and Alertmanager render an alert's error classes on their own ("error classes:",
    # "*Error classes:*", the error_classes annotation): a details entry saying them too printed the
    # line twice in every probe-down message.
    cfg, stats = integration(), Stats()
    feed(stats, T0, [True, False, False], error=ErrorClass.AUTH, status=401)
    cond = run("probe_down", cfg, stats, T0 + 91)[alert_key("acme", "probe_down", "api", Severity.CRITICAL)]
    assert cond.active and cond.error_classes == {"auth": 2}
    alert = Alert(key=cond.key, integration="acme", alert="probe_down", severity=cond.severity,
                  status=AlertStatus.FIRING, summary=cond.summary, check="api", details=cond.details,
                  error_classes=cond.error_classes)
    text = render_text(Notification(group_key="acme", alerts=(alert,), created_at=T0 + 91))
    assert text.count("auth ×2") == 1, text
    slack = json.dumps(build_message(Notification(group_key="acme", alerts=(alert,), created_at=T0 + 91)).blocks,
                       ensure_ascii=False)
    assert slack.count("auth ×2") == 1, slack


# ---- latency ----------------------------------------------------------------------------------------

def test_latency_p95_against_the_checks_max_latency() -> None:
    cfg = integration(expect={"max_latency": "1s"})
    stats = Stats()
    key = alert_key("acme", "latency", "api", Severity.WARNING)
    now = T0
    for i in range(20):
        stats.add(result(now, duration=0.2 if i < 18 else 3.0))
        now += 10
    # 2 slow runs of 20: p95 (nearest rank 19) is slow
    cond = run("latency", cfg, stats, now)[key]
    assert cond.active and "p95 latency 3.0s" in cond.summary and cond.for_seconds == 300.0
    stats.add(result(now, duration=0.2))
    now += 400  # the window moves past the slow runs
    for _ in range(5):
        stats.add(result(now, duration=0.3))
        now += 10
    assert run("latency", cfg, stats, now)[key].active is False
    assert run("latency", integration(), stats, now) == {}  # no threshold anywhere: not judged


# ---- tls_expiry -------------------------------------------------------------------------------------

def test_tls_expiry_warning_and_critical() -> None:
    cfg, stats = integration(), Stats()
    stats.add(result(T0, tls_expiry=T0 + 10 * 86400))
    out = run("tls_expiry", cfg, stats, T0)
    assert out[alert_key("acme", "tls_expiry", "api", Severity.WARNING)].active
    assert not out[alert_key("acme", "tls_expiry", "api", Severity.CRITICAL)].active
    out = run("tls_expiry", cfg, stats, T0 + 8 * 86400)
    assert out[alert_key("acme", "tls_expiry", "api", Severity.CRITICAL)].active
    out = run("tls_expiry", cfg, stats, T0 - 30 * 86400)
    assert not any(c.active for c in out.values())


# ---- statistics ------------------------------------------------------------------------------------

def test_windows_beyond_the_raw_ring_come_from_buckets() -> None:
    stats = CheckStats(raw_capacity=10, bucket_seconds=60)
    at = T0 - T0 % 60
    for i in range(100):  # 100 runs, one every 30 s, every 4th fails
        stats.add(result(at + i * 30, ok=i % 4 != 0))
    now = at + 99 * 30
    exact = stats.window(now, 120)  # inside the raw ring: exact
    assert exact.total == 4
    wide = stats.window(now, 1800)  # beyond it: buckets, at most one bucket more
    assert 60 <= wide.total <= 62 and wide.errors == wide.classes["http_5xx"]
    assert stats.window(now, 86400).total == 100
    assert stats.consecutive_failures == 0 and stats.first_failure_at is None


def test_a_longer_window_added_by_a_reload_widens_the_buckets_and_keeps_history() -> None:
    stats = Stats(max_window=3600, raw_capacity=10)  # buckets of 60 s: 480 of them reach back 8 h
    assert stats.bucket_seconds == 60
    at = T0 - T0 % 3600
    for i in range(6 * 120):  # 6 h of runs every 30 s; the first hour fails every other run
        stats.add(result(at + i * 30, ok=not (i < 120 and i % 2 == 0)))
    check = stats.check("acme", "api")
    assert check is not None
    before = check.window(at + 6 * 3600, 86400)
    assert (before.total, before.errors) == (720, 60)

    assert stats.resize(86400)  # a reload adds a 1-day window: buckets of 180 s reach back a day
    assert stats.bucket_seconds == 180
    assert check.window(at + 6 * 3600, 86400) == before  # the history is kept, merged
    for i in range(6 * 120, 22 * 120):  # 16 h more, all green: 22 h in all, beyond 480 buckets of 60 s
        stats.add(result(at + i * 30))
    day = check.window(at + 22 * 3600, 86400)
    assert (day.total, day.errors, day.classes) == (22 * 120, 60, {"http_5xx": 60})  # the first hour still counts

    assert not stats.resize(3600)  # a shorter window keeps the width (finer counts cannot come back)
    assert stats.bucket_seconds == 180


def test_latency_quantile_nearest_rank_ignores_runs_without_response() -> None:
    stats = CheckStats()
    for i, d in enumerate([0.1, 0.2, 0.3, 0.4, 5.0]):
        stats.add(result(T0 + i, duration=d))
    stats.add(result(T0 + 10, False, ErrorClass.CONNECT, status=None, duration=9.0))
    assert stats.latency_quantile(T0 + 10, 60, 0.95) == (5.0, 5)
    assert stats.latency_quantile(T0 + 10, 60, 0.5) == (0.3, 5)
    assert stats.consecutive_failures == 1 and stats.first_failure_at == T0 + 10
