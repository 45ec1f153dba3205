"""The alert timing the defaults promise: the real alert engine (rules, state machine, grouping) on a simulated
clock, driven as the daemon drives it — one check run every ``interval``, an evaluation every
``evaluation_interval``, and one early when a check starts failing or a deadline the engine named falls due
(``next_due``; no sooner than ``WAKE_GAP`` after the previous one; such an early one judges what changed,
the full pass stays on its own beat) — with no I/O and no delivery. What it
prints is the figure the README's "Alert timing" table quotes and the ceiling ``alert_latency.py`` puts
beside what the real daemon does.

A scenario is one check failing from one run on, and healthy again later: the model reports the time from
the first failing run to the firing notification, and from the first healthy run to the resolve. Each
scenario is run at several phases of the check's runs against the evaluations (they are independent in the
daemon), so what comes out is a range. ``scale`` divides every timing setting (the check interval,
``evaluation_interval``, ``group_wait``, ``group_interval``, each rule's ``for``, ``keep_firing_for`` and
windows) to model a quick run of the daemon.

Usage: python bench/alert_model.py [--scale 1] [--phases 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from alerts.config import DEFAULT_BURN_WINDOWS, AlertingConfig, AlertRulesConfig
from alerts.engine import DUE_MARGIN, WAKE_GAP, AlertEngine
from alerts.model import AlertStatus, Notification, Severity
from alerts.outbox import Record
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import Config, MonitorSection, parse_config

T0 = 1_800_000_000.0
DEFAULT_INTERVAL = 30.0  # a check's default interval (checks.base), asserted below against the code
OFF = {"enabled": False}


@dataclass(frozen=True)
class Scenario:
    name: str
    alert: str  # the rule whose firing and resolve are timed
    failure: ErrorClass | None = ErrorClass.HTTP_5XX  # None: the runs succeed but slowly (latency)
    alerts: dict[str, Any] = field(default_factory=dict)  # rule overrides (the others keep their defaults)
    outage: float = 600.0  # seconds the check fails, at scale 1
    warmup: float = 600.0  # healthy history before the outage, at scale 1 (burn rates want a day)
    max_latency: bool = False  # the check has expect.max_latency (what the latency rule's threshold defaults to)


SCENARIOS: dict[str, Scenario] = {
    "probe_down_5xx": Scenario("probe_down, 503", "probe_down", alerts={"error_rate": OFF, "latency": OFF}),
    "probe_down_auth": Scenario("probe_down, 401", "probe_down", ErrorClass.AUTH,
                                alerts={"error_rate": OFF, "latency": OFF}),
    "error_rate_burn": Scenario("error_rate, burn rate (10 min outage)", "error_rate",
                                alerts={"probe_down": OFF, "latency": OFF}, warmup=26 * 3600.0),
    "error_rate_burn_long": Scenario("error_rate, burn rate (25 min outage)", "error_rate",
                                     alerts={"probe_down": OFF, "latency": OFF}, outage=1500.0, warmup=26 * 3600.0),
    "error_rate_threshold": Scenario("error_rate, threshold 5 %", "error_rate",
                                     alerts={"probe_down": OFF, "latency": OFF, "error_rate": {"threshold": 0.05}}),
    "latency": Scenario("latency, p95 over max_latency", "latency", None,
                        alerts={"probe_down": OFF, "error_rate": OFF}, max_latency=True),
}


def scaled_settings(scale: float) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(monitor, alerting, alerts) overrides: every timing default divided by ``scale`` (empty at 1: the
    defaults themselves, read from the config models)."""
    if scale == 1:
        return {}, {}, {}
    monitor = {"evaluation_interval": MonitorSection().evaluation_interval / scale}
    timing = AlertingConfig()
    alerting = {k: getattr(timing, k) / scale for k in ("group_wait", "group_interval")}
    rules = AlertRulesConfig()
    alerts: dict[str, Any] = {}
    for name in ("error_rate", "probe_down", "latency", "quota", "webhook_silence"):
        rule = getattr(rules, name)
        alerts[name] = {"for": rule.for_ / scale, "keep_firing_for": rule.keep_firing_for / scale}
    alerts["error_rate"] |= {"window": rules.error_rate.window / scale, "windows": [
        {"long": w.long / scale, "short": w.short / scale, "factor": w.factor, "severity": w.severity}
        for w in DEFAULT_BURN_WINDOWS]}
    alerts["latency"]["window"] = rules.latency.window / scale
    return monitor, alerting, alerts


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_config(scenario: Scenario, scale: float) -> Config:
    monitor, alerting, alerts = scaled_settings(scale)
    check: dict[str, Any] = {"name": "api", "kind": "http", "url": "https://api.vendor.test/v1/ping"}
    if scale != 1:
        check["interval"] = DEFAULT_INTERVAL / scale
    if scenario.max_latency:
        check["expect"] = {"max_latency": 1.0}
    raw = {"monitor": monitor, "alerting": alerting,
           "integrations": {"vendor": {"checks": [check], "alerts": merged(alerts, scenario.alerts)}}}
    return parse_config(yaml.safe_dump(raw), env={})


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class _Sink:
    """One notifier that delivers at once (as the dispatcher does it, without the I/O)."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.got: list[tuple[float, Notification]] = []
        self._finished: list[Callable[[Record, str], None]] = []

    def notifier_floors(self) -> list[tuple[str, Severity]]:
        return [("slack", Severity.INFO)]

    def pending(self, notifier: str, group_key: str) -> bool:
        return False

    def on_finished(self, listener: Callable[[Record, str], None]) -> None:
        self._finished.append(listener)

    async def synced(self) -> bool:
        return True

    async def submit_to(self, notifier: str, notification: Notification, record: Record) -> None:
        self.got.append((self.clock.now, notification))
        for listener in self._finished:
            listener(record, "sent")


async def simulate(scenario: Scenario, *, scale: float = 1.0, phase: float = 0.0) -> tuple[float, float]:
    """(first failing run → firing notification, first healthy run → resolve notification), in seconds.
    ``phase``: the share of an evaluation interval the first run comes after the first evaluation."""
    config = model_config(scenario, scale)
    check = config.integrations["vendor"].checks[0]
    interval, evaluation = check.interval, config.monitor.evaluation_interval
    clock = _Clock()
    sink = _Sink(clock)
    engine = AlertEngine(config, metrics=Metrics(), redactor=Redactor(()), clock=clock, sink=sink, autorun=False)
    await engine.start()
    start = T0 + phase * evaluation
    runs = int(scenario.warmup / scale / interval) + 1
    first_fail = start + runs * interval
    first_ok = first_fail + int(scenario.outage / scale / interval) * interval
    end = first_ok + 4 * 3600 / scale
    next_run, next_eval, last_eval, wake = start, T0, T0 - evaluation, False
    last_full = -float("inf")  # a full pass every interval; between them, early evaluations of what changed
    fired = resolved = None
    while (fired is None or resolved is None) and min(next_run, next_eval) < end:
        if next_run < next_eval:
            clock.now = next_run
            failing = first_fail <= next_run < first_ok
            engine.on_result(_result(scenario, next_run, failing))
            wake = wake or next_run == first_fail
            next_run += interval
            if wake:  # a check started failing: the engine's loop wakes (not before WAKE_GAP)
                next_eval = min(next_eval, max(clock.now, last_eval + min(WAKE_GAP, evaluation)))
            continue
        clock.now = last_eval = next_eval
        wake = False
        full = clock.now - last_full >= evaluation - DUE_MARGIN
        await engine.evaluate(full=full)
        if full:
            last_full = clock.now
        next_eval = last_full + evaluation
        if engine.next_due is not None:  # a deadline before the next interval: the loop evaluates then
            next_eval = min(next_eval, max(engine.next_due + DUE_MARGIN, last_eval + min(WAKE_GAP, evaluation)))
        for at, notification in sink.got:
            for alert in notification.alerts:
                if alert.alert != scenario.alert:
                    continue
                if alert.status is AlertStatus.FIRING and fired is None:
                    fired = at - first_fail
                elif alert.status is AlertStatus.RESOLVED and resolved is None and at >= first_ok:
                    resolved = at - first_ok
        sink.got.clear()
    await engine.close()
    return (float("nan") if fired is None else fired, float("nan") if resolved is None else resolved)


def _result(scenario: Scenario, at: float, failing: bool) -> CheckResult:
    if scenario.failure is None:  # slow, not failing: the latency rule reads durations
        duration = 3.0 if failing else 0.1
        return CheckResult(integration="vendor", check="api", kind="http", ok=True, error_class=None, detail="",
                           started_at=at, duration=duration, total_duration=duration, status_code=200)
    status = 401 if scenario.failure is ErrorClass.AUTH else 503
    return CheckResult(
        integration="vendor", check="api", kind="http", ok=not failing,
        error_class=scenario.failure if failing else None,
        detail=f"{scenario.failure}: {status}" if failing else "", started_at=at, duration=0.1, total_duration=0.1,
        status_code=status if failing else 200,
    )


async def model_ranges(names: list[str], *, scale: float, phases: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per scenario: (firing latencies, resolve latencies) over ``phases`` phases."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name in names:
        scenario = SCENARIOS[name]
        count = 1 if scenario.warmup > 3600 else phases  # a day of history per phase: one is enough
        pairs = [await simulate(scenario, scale=scale, phase=i / count) for i in range(count)]
        out[name] = ([f for f, _ in pairs], [r for _, r in pairs])
    return out


def span(values: list[float]) -> str:
    digits = 1 if max(values) < 60 else 0
    if len(values) == 1:
        return f"{values[0]:.{digits}f} s"
    return f"{statistics.median(values):.{digits}f} s ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="divide every timing setting by this")
    parser.add_argument("--phases", type=int, default=4, help="phases of the runs against the evaluations")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    assert parse_config("integrations: {v: {checks: [{name: c, kind: http, url: 'http://x.test/'}]}}",
                        env={}).integrations["v"].checks[0].interval == DEFAULT_INTERVAL
    ranges = asyncio.run(model_ranges(args.only, scale=args.scale, phases=args.phases))
    print(f"alert engine on a simulated clock, default settings{f' / {args.scale:g}' if args.scale != 1 else ''}; "
          f"median (min–max) over {args.phases} phases of runs against evaluations")
    head = f"{'scenario':<42}{'1st failing run → message':>28}{'1st healthy run → resolve':>28}"
    print(head)
    print("-" * len(head))
    for name, (fired, resolved) in ranges.items():
        print(f"{SCENARIOS[name].name:<42}{span(fired):>28}{span(resolved):>28}")


if __name__ == "__main__":
    main()
