"""``latency``: a quantile (p95 by default) of run durations over a window above a threshold — the
rule's ``threshold`` or else the check's ``expect.max_latency``; checks with neither are not judged."""

from __future__ import annotations

from collections.abc import Iterator

from alerts.config import LatencyRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput
from alerts.rules.text import fmt_seconds


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: LatencyRule = inp.rule_config("latency")
    severity = Severity(rule.severity)
    for check, stats in inp.checks_with_stats():
        threshold = rule.threshold
        if threshold is None and (threshold := getattr(getattr(check, "expect", None), "max_latency", None)) is None:
            continue
        value, samples = stats.latency_quantile(inp.now, rule.window, rule.quantile)
        if value is None or samples < rule.min_samples:
            continue
        active = value > threshold
        if not active and not inp.wants_clear(check.name):
            continue
        label = f"p{rule.quantile * 100:g}"
        yield Condition(
            integration=inp.integration, alert="latency", severity=severity, active=active,
            target=check.name, check=check.name,
            summary=(
                f"{inp.integration}/{check.name}: {label} latency {fmt_seconds(value)} over the last "
                f"{fmt_seconds(rule.window)} (threshold {fmt_seconds(threshold)})"
            ) if active else "",
            details={label: f"{fmt_seconds(value)} ({samples} runs)", "threshold": fmt_seconds(threshold)}
            if active else {},
            for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
        )
