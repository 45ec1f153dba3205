"""``error_rate``: spike detection per check.

Burn-rate mode (default; Google SRE workbook, multi-window multi-burn-rate): a tier fires when both its
long and short window burn the error budget faster than its factor (burn = error ratio / (1 - slo)).
Threshold mode: the error ratio over one window reaches ``threshold``. Both need ``min_samples`` runs in
the (long) window and ``min_short_samples`` in the short one — a synthetic probe gives few samples, and
one failure out of two runs must never page. A tier is also only judged once the statistics reach back
its short window: five minutes of history say nothing about a day, and one failure out of twenty runs
must not read as a day-long 5 % burn (after a restart the alert is held meanwhile).
"""

from __future__ import annotations

from collections.abc import Iterator

from alerts.config import ErrorRateRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput
from alerts.rules.text import classes_text, fmt_ratio, fmt_seconds, last_failure_detail
from alerts.stats import CheckStats, WindowCounts


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: ErrorRateRule = inp.rule_config("error_rate")
    for check in inp.config.checks:
        stats = inp.stats.check(inp.integration, check.name)
        if stats is None:
            continue
        if rule.mode == "threshold":
            yield from _threshold(inp, rule, check.name, stats)
        else:
            yield from _burn_rate(inp, rule, check.name, stats)


def _condition(inp: RuleInput, rule: ErrorRateRule, check: str, severity: Severity, active: bool,
               summary: str, details: dict[str, str], counts: WindowCounts, stats: CheckStats) -> Condition:
    if active:
        details = {**details, **last_failure_detail(stats)}
    return Condition(
        integration=inp.integration, alert="error_rate", severity=severity, active=active, target=check,
        check=check, summary=summary, details=details, error_classes=counts.classes if active else {},
        for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
    )


def _threshold(inp: RuleInput, rule: ErrorRateRule, check: str, stats: CheckStats) -> Iterator[Condition]:
    counts = stats.window(inp.now, rule.window)
    if counts.total < rule.min_samples:
        return
    active = counts.ratio >= rule.threshold
    summary = (
        f"{inp.integration}/{check}: {fmt_ratio(counts.ratio)} of runs failed in the last "
        f"{fmt_seconds(rule.window)} ({counts.errors}/{counts.total}; {classes_text(counts.classes)})"
    )
    details = {
        "error rate": f"{fmt_ratio(counts.ratio)} ({counts.errors}/{counts.total} runs, {fmt_seconds(rule.window)})",
        "threshold": fmt_ratio(rule.threshold),
    }
    yield _condition(inp, rule, check, Severity(rule.severity), active, summary, details, counts, stats)


def _burn_rate(inp: RuleInput, rule: ErrorRateRule, check: str, stats: CheckStats) -> Iterator[Condition]:
    budget = 1.0 - rule.slo
    # Per severity: fires if any tier fires; known-clear only if every tier could be judged.
    verdicts: dict[Severity, list[bool | None]] = {}
    best: dict[Severity, tuple[str, dict[str, str], WindowCounts]] = {}
    for tier in rule.windows:
        severity = Severity(tier.severity)
        long = stats.window(inp.now, tier.long)
        short = stats.window(inp.now, tier.short)
        judged = stats.covers(inp.now, tier.short)
        if not judged or long.total < rule.min_samples or short.total < rule.min_short_samples:
            verdicts.setdefault(severity, []).append(None)
            continue
        long_burn, short_burn = long.ratio / budget, short.ratio / budget
        firing = long_burn >= tier.factor and short_burn >= tier.factor
        verdicts.setdefault(severity, []).append(firing)
        if firing and severity not in best:
            summary = (
                f"{inp.integration}/{check}: error budget burning {long_burn:.1f}× "
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
            yield _condition(inp, rule, check, severity, True, summary, details, counts, stats)
        elif all(r is not None for r in results):
            yield _condition(inp, rule, check, severity, False, "", {}, WindowCounts(total=0, errors=0), stats)
