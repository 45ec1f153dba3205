"""``error_rate``: spike detection per check.

Burn-rate mode (default; Google SRE workbook, multi-window multi-burn-rate): a tier fires when both its
long and short window burn the error budget faster than its factor (burn = error ratio / (1 - slo)).
Threshold mode: the error ratio over one window reaches ``threshold``. Both need ``min_samples`` runs in
the (long) window and ``min_short_samples`` in the short one — a synthetic probe gives few samples, and
one failure out of two runs must never page. A tier is also only judged once the statistics reach back
its short window: five minutes of history say nothing about a day, and one failure out of twenty runs
must not read as a day-long 5 % burn (after a restart the alert is held meanwhile).

Real traffic: an integration whose services record their calls with the integration kit (and whose
config has a ``traffic`` section) is judged the same way on those calls, with its own minimum-samples
guard (``traffic``: a service makes far more calls than a probe makes runs). That alert's target is
``real traffic`` and its text says "calls", so a message tells which one fired.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from alerts.config import ErrorRateRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput
from alerts.rules.text import classes_text, fmt_ratio, fmt_seconds, last_failure_detail
from alerts.stats import CheckStats, WindowCounts

TRAFFIC_TARGET = "real traffic"  # not a valid check name: never the target of a probe's alert


class Windows(Protocol):
    def window(self, now: float, seconds: float) -> WindowCounts: ...

    def covers(self, now: float, seconds: float) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Subject:
    """What is judged: one check's runs, or the integration's real-traffic calls."""

    name: str  # "payments/balance", "payments real traffic"
    target: str
    check: str | None
    unit: str  # "runs" / "calls"
    stats: Windows
    min_samples: int
    min_short_samples: int


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: ErrorRateRule = inp.rule_config("error_rate")
    subjects = [
        _Subject(name=f"{inp.integration}/{check.name}", target=check.name, check=check.name, unit="runs",
                 stats=stats, min_samples=rule.min_samples, min_short_samples=rule.min_short_samples)
        for check in inp.checks
        if (stats := inp.stats.check(inp.integration, check.name)) is not None
    ]
    if inp.traffic is not None and rule.traffic.enabled:
        subjects.append(_Subject(
            name=f"{inp.integration} {TRAFFIC_TARGET}", target=TRAFFIC_TARGET, check=None, unit="calls",
            stats=inp.traffic, min_samples=rule.traffic.min_samples, min_short_samples=rule.traffic.min_short_samples,
        ))
    severities = tuple(Severity(tier.severity) for tier in rule.windows)  # once, not per check and tier
    for subject in subjects:
        if rule.mode == "threshold":
            yield from _threshold(inp, rule, subject)
        else:
            yield from _burn_rate(inp, rule, subject, severities)


def _condition(inp: RuleInput, rule: ErrorRateRule, subject: _Subject, severity: Severity, active: bool,
               summary: str, details: dict[str, str], counts: WindowCounts) -> Condition:
    if active and isinstance(subject.stats, CheckStats):
        details = {**details, **last_failure_detail(subject.stats)}
    return Condition(
        integration=inp.integration, alert="error_rate", severity=severity, active=active, target=subject.target,
        check=subject.check, summary=summary, details=details, error_classes=counts.classes if active else {},
        for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
    )


def _threshold(inp: RuleInput, rule: ErrorRateRule, subject: _Subject) -> Iterator[Condition]:
    counts = subject.stats.window(inp.now, rule.window)
    if counts.total < subject.min_samples:
        return
    active = counts.ratio >= rule.threshold
    unit = subject.unit
    summary = (
        f"{subject.name}: {fmt_ratio(counts.ratio)} of {unit} failed in the last "
        f"{fmt_seconds(rule.window)} ({counts.errors}/{counts.total}; {classes_text(counts.classes)})"
    )
    details = {
        "error rate": f"{fmt_ratio(counts.ratio)} ({counts.errors}/{counts.total} {unit}, {fmt_seconds(rule.window)})",
        "threshold": fmt_ratio(rule.threshold),
    }
    yield _condition(inp, rule, subject, Severity(rule.severity), active, summary, details, counts)


def _burn_rate(inp: RuleInput, rule: ErrorRateRule, subject: _Subject,
               severities: tuple[Severity, ...]) -> Iterator[Condition]:
    budget = 1.0 - rule.slo
    # Per severity: fires if any tier fires; known-clear only if every tier could be judged.
    verdicts: dict[Severity, list[bool | None]] = {}
    best: dict[Severity, tuple[str, dict[str, str], WindowCounts]] = {}
    for tier, severity in zip(rule.windows, severities, strict=True):
        long = subject.stats.window(inp.now, tier.long)
        short = subject.stats.window(inp.now, tier.short)
        judged = subject.stats.covers(inp.now, tier.short)
        if not judged or long.total < subject.min_samples or short.total < subject.min_short_samples:
            verdicts.setdefault(severity, []).append(None)
            continue
        long_burn, short_burn = long.ratio / budget, short.ratio / budget
        firing = long_burn >= tier.factor and short_burn >= tier.factor
        verdicts.setdefault(severity, []).append(firing)
        if firing and severity not in best:
            summary = (
                f"{subject.name}: error budget burning {long_burn:.1f}× "
                f"({fmt_ratio(long.ratio)} failed over {fmt_seconds(tier.long)}, {fmt_ratio(short.ratio)} over "
                f"{fmt_seconds(tier.short)}; {classes_text(long.classes)})"
            )
            details = {
                "error rate": (
                    f"{fmt_ratio(long.ratio)} ({long.errors}/{long.total}) over {fmt_seconds(tier.long)}, "
                    f"{fmt_ratio(short.ratio)} ({short.errors}/{short.total}) over {fmt_seconds(tier.short)}"
                ),
                "burn rate": f"{long_burn:.1f}× / {short_burn:.1f}× (limit {tier.factor:g}×, SLO {rule.slo * 100:g}%)",
            }
            best[severity] = (summary, details, long)
    for severity, results in verdicts.items():
        if severity in best:
            summary, details, counts = best[severity]
            yield _condition(inp, rule, subject, severity, True, summary, details, counts)
        elif all(r is not None for r in results):
            yield _condition(inp, rule, subject, severity, False, "", {}, WindowCounts(total=0, errors=0))
