"""Verdicts of "not active" asked for only where they are stepped (``RuleInput.known_targets``): a
check or quota the engine knows no alert of gets only what fires from the rules — the stepper
(alerts/stepping.py) drops a verdict of "not active" of an alert it knows nothing of, and making one cost
more than judging a healthy check — and the error-rate rule asks nothing of such a check with no failed
run in its history (``CheckStats.holds_failures``).

On random histories (failures of several classes, runs out of order, a raw ring overflowing into
buckets, a bucket ring dropping its oldest, buckets widened by a reload, a check's statistics forgotten
and started again): no window counts an error when ``holds_failures`` says none is held; each per-check
rule told which targets have alerts known yields exactly the verdicts of the same rule asked for
everything that are active or about those targets; and
two engines, one asking its rules for every verdict, reach the same alert states, notifications and
deadlines after every evaluation."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_alert_engine import Clock, Sink
from test_burn_rate_tiers import reload_or_restart
from test_burn_rate_tiers import rules as burn_rate_rules

from alerts.config import ErrorRateRule, LatencyRule, ProbeDownRule, QuotaRule, TlsExpiryRule
from alerts.engine import AlertEngine
from alerts.rules import RULES, Condition, RuleInput, alert_key
from alerts.rules.base import known_targets
from alerts.stats import CheckStats, QuotaReading, Stats
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import parse_config

T0 = 1_800_000_000.0
CLASSES = [None, None, None, None, ErrorClass.HTTP_5XX, ErrorClass.TIMEOUT, ErrorClass.AUTH]
WINDOWS = [1.0, 60.0, 300.0, 1800.0, 3600.0, 7200.0, 86400.0]


def result(at: float, error: ErrorClass | None, *, latency: float = 0.1, tls_expiry: float | None = None,
           check: str = "api") -> CheckResult:
    return CheckResult(integration="acme", check=check, kind="http", ok=error is None, error_class=error,
                       detail="", started_at=at, duration=latency, total_duration=latency,
                       status_code=None if error is ErrorClass.TIMEOUT else 200, tls_expiry=tls_expiry)


# (seconds after the previous run — negative: reported after a later one —, error class)
histories = st.lists(st.tuples(st.floats(min_value=-400, max_value=900, allow_nan=False), st.sampled_from(CLASSES)),
                     min_size=0, max_size=120)


@settings(max_examples=300, deadline=None)
@given(runs=histories, capacity=st.integers(min_value=1, max_value=40),
       raw_seconds=st.sampled_from([math.inf, 60.0, 300.0, 1800.0]), bucket_seconds=st.sampled_from([60.0, 180.0]),
       widen_at=st.integers(min_value=0, max_value=150),
       queries=st.lists(st.tuples(st.floats(min_value=-600, max_value=90_000, allow_nan=False),
                                  st.sampled_from(WINDOWS)), min_size=1, max_size=6))
def test_no_window_counts_an_error_when_none_is_held(
    runs: list[tuple[float, ErrorClass | None]], capacity: int, raw_seconds: float, bucket_seconds: float,
    widen_at: int, queries: list[tuple[float, float]],
) -> None:
    stats = CheckStats(raw_capacity=capacity, raw_seconds=raw_seconds, bucket_seconds=bucket_seconds,
                       max_buckets=20)  # (a small ring: failures leave it, and runs come older than it reaches)
    at = T0
    for n, (step, error) in enumerate(runs):
        if n == widen_at:
            stats.rebucket(bucket_seconds * 3)
        at += step
        stats.add(result(at, error))
        if not stats.holds_failures():
            for offset, seconds in queries:
                assert stats.window(at + offset, seconds).errors == 0
                assert stats._scan(at + offset, seconds).errors == 0


def view(error_rate: ErrorRateRule, latency: LatencyRule, probe_down: ProbeDownRule, quota: QuotaRule,
         tls: TlsExpiryRule, max_latency: float | None) -> Any:
    """An integration as the rules read it: the rules' settings and two checks."""
    alerts = SimpleNamespace(error_rate=error_rate, latency=latency, probe_down=probe_down, quota=quota,
                             tls_expiry=tls)
    checks = [SimpleNamespace(name=name, interval=30.0, expect=SimpleNamespace(max_latency=max_latency))
              for name in ("api", "idle")]  # ("idle" never runs: no statistics)
    return SimpleNamespace(alerts=alerts, checks=checks)


threshold_rules = st.builds(ErrorRateRule, mode=st.just("threshold"),
                            threshold=st.sampled_from([0.01, 0.1, 0.5, 1.0]), window=st.sampled_from(WINDOWS[1:]),
                            min_samples=st.integers(1, 12))
latency_rules = st.builds(LatencyRule, threshold=st.none() | st.sampled_from([0.05, 0.2, 1.0]),
                          window=st.sampled_from(WINDOWS[1:]), quantile=st.sampled_from([0.5, 0.95]),
                          min_samples=st.integers(1, 6))
probe_down_rules = st.builds(ProbeDownRule, consecutive_failures=st.integers(1, 4), auth_immediately=st.booleans())
quota_rules = st.sampled_from([QuotaRule(), QuotaRule(warning=0.5, critical=0.9, clear=0.2)])
readings = st.dictionaries(st.sampled_from(["calls", "tokens"]), st.builds(
    QuotaReading, integration=st.just("acme"), quota=st.just("q"), source=st.just("redis"),
    used=st.sampled_from([0.0, 10.0, 79.0, 85.0, 99.0]), limit=st.sampled_from([None, 100.0])), max_size=2)


@settings(max_examples=300, deadline=None)
@given(runs=histories, error_rate=burn_rate_rules | threshold_rules, latency=latency_rules,
       probe_down=probe_down_rules, quota=quota_rules, quotas=readings,
       max_latency=st.none() | st.sampled_from([0.1, 0.3]),
       latencies=st.lists(st.sampled_from([0.01, 0.1, 0.25, 2.0]), min_size=1, max_size=7),
       tls_days=st.none() | st.sampled_from([-1.0, 2.0, 10.0, 40.0]),
       capacity=st.integers(min_value=1, max_value=60), max_window=st.sampled_from([3600.0, 86400.0]),
       exact_window=st.sampled_from([math.inf, 600.0, 3600.0]), resize_at=st.integers(0, 150),
       forget_at=st.integers(0, 150), firing=st.sets(st.sampled_from(["calls", "tokens"])),
       known=st.none() | st.frozensets(st.sampled_from(["api", "idle", "calls", "tokens", "-", "other"])),
       offsets=st.lists(st.floats(min_value=-60, max_value=7200, allow_nan=False), min_size=1, max_size=3))
def test_rules_yield_what_fires_and_what_clears_of_known_targets(
    runs: list[tuple[float, ErrorClass | None]], error_rate: ErrorRateRule, latency: LatencyRule,
    probe_down: ProbeDownRule, quota: QuotaRule, quotas: dict[str, QuotaReading], max_latency: float | None,
    latencies: list[float], tls_days: float | None, capacity: int, max_window: float, exact_window: float,
    resize_at: int, forget_at: int, firing: set[str], known: frozenset[str] | None, offsets: list[float],
) -> None:
    stats = Stats(max_window=max_window, exact_window=exact_window, raw_capacity=capacity)
    config = view(error_rate, latency, probe_down, quota, TlsExpiryRule(), max_latency)
    active = frozenset(alert_key("acme", "quota", name, "warning") for name in firing)
    per_rule = {name: RULES[name] for name in ("error_rate", "latency", "probe_down", "quota", "tls_expiry")}
    at = T0
    for n, (step, error) in enumerate(runs):
        reload_or_restart(stats, n, resize_at=resize_at, forget_at=forget_at, longer=max_window * 2)
        at += step
        stats.add(result(at, error, latency=latencies[n % len(latencies)],
                         tls_expiry=None if tls_days is None else T0 + tls_days * 86400))
        for offset in offsets:
            everything = RuleInput(integration="acme", config=config, stats=stats, quotas=quotas, now=at + offset,
                                   active=active)
            told_of_known = dataclasses.replace(everything, known_targets=known)
            for rule in per_rule.values():
                told = list(rule(everything))
                assert list(rule(told_of_known)) == [
                    c for c in told if c.active or known is None or (c.target or "-") in known]


# -- the engine -------------------------------------------------------------------------------------------------

INTEGRATIONS = ("acme", "beta")
CHECKS = ("api", "login")


def engine_config() -> Any:
    rules = {
        # tiers short enough to fire and clear within the runs below; one warning tier
        "error_rate": {"windows": [{"long": "2m", "short": "30s", "factor": 20, "severity": "critical"},
                                   {"long": "10m", "short": "2m", "factor": 5, "severity": "warning"}],
                       "min_samples": 3, "min_short_samples": 1, "keep_firing_for": "30s"},
        "latency": {"window": "1m", "min_samples": 2, "threshold": "1s", "keep_firing_for": "20s"},
        "probe_down": {"consecutive_failures": 2, "keep_firing_for": "15s"},
    }
    integrations = {
        name: {"checks": [{"name": c, "kind": "http", "url": f"https://{name}.test/{c}", "interval": "15s"}
                          for c in CHECKS], "alerts": rules}
        for name in INTEGRATIONS
    }
    return parse_config(yaml.safe_dump({
        "monitor": {"evaluation_interval": "15s"},
        "integrations": integrations,
        "alerting": {"group_wait": "10s", "group_interval": "30s", "flapping": {"window": "1d"}},
    }), env={})


def _states(eng: AlertEngine) -> dict[str, tuple[Any, ...]]:
    return {k: (s.status, s.pending_since, s.firing_since, s.resolved_at, s.transitions, s.flapping)
            for k, s in eng.states.items()}


def _told(sink: Sink) -> list[tuple[Any, ...]]:
    return [(n.group_key, n.created_at, n.incident, tuple((a.key, a.status, a.flapping, a.summary) for a in n.alerts))
            for n in sink.got]


_STEP = st.tuples(
    st.integers(min_value=1, max_value=40),  # seconds on
    # results: integration, check, error class (None: ok), latency
    st.lists(st.tuples(st.sampled_from(INTEGRATIONS), st.sampled_from(CHECKS), st.sampled_from(CLASSES),
                       st.sampled_from([0.1, 3.0])), max_size=4),
    st.booleans(),  # a full pass (else an early evaluation)
)


def asking_for_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rule asked for every verdict, whatever the engine says (the engine before this change)."""
    for name, rule in list(RULES.items()):
        def every_verdict(inp: RuleInput, rule: Any = rule) -> Iterable[Condition]:
            return rule(dataclasses.replace(inp, known_targets=None))
        monkeypatch.setitem(RULES, name, every_verdict)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=30))
def test_an_engine_asking_for_what_fires_judges_as_one_asking_for_everything(
    steps: list[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two engines get the same results at the same moments and evaluate at the same moments, one with
    its rules asked for every verdict: after every evaluation their alert states, the notifications
    handed out and the next deadline are the same."""

    async def run() -> None:
        cfg = engine_config()
        clocks, sinks = (Clock(), Clock()), (Sink(), Sink())
        engines = [AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), sink=sink, clock=clock, autorun=False)
                   for clock, sink in zip(clocks, sinks, strict=True)]
        for eng in engines:
            await eng.start()
        for seconds, results, full_pass in steps:
            for clock in clocks:
                clock.now += seconds
            for integration, check, error, latency in results:
                for eng, clock in zip(engines, clocks, strict=True):
                    eng.on_result(dataclasses.replace(result(clock.now, error, latency=latency, check=check),
                                                      integration=integration))
            await engines[0].evaluate(full=full_pass)
            with monkeypatch.context() as patched:
                asking_for_everything(patched)
                await engines[1].evaluate(full=full_pass)
            assert _states(engines[0]) == _states(engines[1])
            assert _told(sinks[0]) == _told(sinks[1])
            assert engines[0].next_due == engines[1].next_due
        for eng in engines:
            await eng.close()

    asyncio.run(run())


def test_known_targets_are_read_from_the_alert_keys() -> None:
    keys = [alert_key("acme", "probe_down", "api", "critical"), alert_key("acme", "quota", "calls/day", "warning"),
            alert_key("acme", "traffic_silence", None, "warning"), alert_key("beta", "error_rate", "-", "critical"),
            "gamma/test"]
    assert known_targets(keys) == {"acme": frozenset({"api", "calls/day", "-"}), "beta": frozenset({"-"}),
                                   "gamma": None}
    inp = RuleInput(integration="acme", config=SimpleNamespace(), stats=Stats(), quotas={}, now=T0,
                    active=frozenset(), known_targets=known_targets(keys)["acme"])
    assert [inp.wants_clear(t) for t in ("api", "calls/day", None, "login")] == [True, True, True, False]
