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

from alerts.config import BurnRateWindow, ErrorRateRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput
from alerts.rules.text import classes_text, fmt_ratio, fmt_seconds, last_failure_detail
from alerts.stats import CheckStats, WindowCounts

TRAFFIC_TARGET = "real traffic"  # not a valid check name: never the target of a probe's alert
_NO_COUNTS = WindowCounts(total=0, errors=0)


class Windows(Protocol):
    def window(self, now: float, seconds: float, *, counts_only: bool = False) -> WindowCounts: ...

    def covers(self, now: float, seconds: float) -> bool: ...

    def nests(self, now: float, inner: float, outer: float) -> bool: ...


@dataclass(slots=True, kw_only=True)
class _Subject:
    """What is judged: one check's runs, or the integration's real-traffic calls. (One for every check at
    every full pass: not frozen, and its name made only for a message — both cost more than the rest.)"""

    integration: str
    target: str
    check: str | None
    unit: str  # "runs" / "calls"
    stats: Windows
    min_samples: int
    min_short_samples: int

    @property
    def name(self) -> str:
        """E.g. ``payments/balance``, ``payments real traffic``."""
        return f"{self.integration}/{self.target}" if self.check is not None else f"{self.integration} {self.target}"


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: ErrorRateRule = inp.rule_config("error_rate")
    known = inp.known_targets  # (``inp.wants_clear`` written out: a check's name is its key's target)
    subjects = [
        _Subject(integration=inp.integration, target=check.name, check=check.name, unit="runs",
                 stats=stats, min_samples=rule.min_samples, min_short_samples=rule.min_short_samples)
        for check, stats in inp.checks_with_stats()
        # Without a failed run in its history no window of a check counts an error, so neither mode can
        # fire: when only what fires is wanted (no alert of the check known: most checks, at every full
        # pass), nothing is asked of it.
        if known is None or check.name in known or stats.holds_failures()
    ]
    if inp.traffic is not None and rule.traffic.enabled:
        subjects.append(_Subject(
            integration=inp.integration, target=TRAFFIC_TARGET, check=None, unit="calls",
            stats=inp.traffic, min_samples=rule.traffic.min_samples, min_short_samples=rule.traffic.min_short_samples,
        ))
    severities = tuple(Severity(tier.severity) for tier in rule.windows)  # once, not per check and tier
    told = tuple(dict.fromkeys(severities))  # each once, in the order of their first tier
    for subject in subjects:
        if rule.mode == "threshold":
            yield from _threshold(inp, rule, subject)
        else:
            yield from _burn_rate(inp, rule, subject, severities, told)


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
    if not active and not inp.wants_clear(subject.target):
        return
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


def _burning(rule: ErrorRateRule, tier: BurnRateWindow, subject: _Subject, long: WindowCounts,
             short: WindowCounts) -> tuple[str, dict[str, str]]:
    """The summary and details of a tier that fires (``long`` with its error classes)."""
    budget = 1.0 - rule.slo
    long_burn, short_burn = long.ratio / budget, short.ratio / budget
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
    return summary, details


def _burn_rate(inp: RuleInput, rule: ErrorRateRule, subject: _Subject, severities: tuple[Severity, ...],
               told: tuple[Severity, ...]) -> Iterator[Condition]:
    """Per severity: fires if any of its tiers fires; known-clear only if every one of them could be judged.

    The cheap questions first (a full pass asks them of every check; six windows each, walked for their
    error classes, were two thirds of its instructions): whether the history reaches back the short window, then the
    short window's counts — a tier cannot fire without a failure in it (its factor is above 0) — and the
    long window's last; the error classes are found only for the tier a message tells of. A tier whose
    verdict cannot change the outcome is not asked at all: one of its severity fired already, or it cannot
    fire and its severity cannot be known-clear anyway (or that is not asked: ``wants_clear``). The long
    window of a tier that cannot fire is asked last, and only whether it holds ``min_samples`` runs: a
    window inside it that holds as many, counted the same way (``nests``), says so without counting it."""
    budget = 1.0 - rule.slo
    stats, now = subject.stats, inp.now
    wants_clear = inp.wants_clear(subject.target)
    unknown: set[Severity] = set()  # severities with a tier that could not be judged
    best: dict[Severity, tuple[BurnRateWindow, WindowCounts, WindowCounts]] = {}  # the tier that fires
    enough: list[float] = []  # windows counted that hold min_samples runs
    guards: list[tuple[float, Severity]] = []  # long windows of tiers that cannot fire, asked last
    for tier, severity in zip(rule.windows, severities, strict=True):
        if severity in best:
            continue
        if not stats.covers(now, tier.short):
            unknown.add(severity)
            continue
        short = stats.window(now, tier.short, counts_only=True)
        if short.total >= subject.min_samples:
            enough.append(tier.short)
        if short.total < subject.min_short_samples:
            unknown.add(severity)
            continue
        if not short.errors:
            # It cannot fire: its long window decides only between known-clear and unknown, asked once
            # the windows of every tier are counted (one of them may hold enough runs inside it).
            if wants_clear and severity not in unknown:
                guards.append((tier.long, severity))
            continue
        long = stats.window(now, tier.long, counts_only=True)
        if long.total < subject.min_samples:
            unknown.add(severity)
            continue
        enough.append(tier.long)
        if long.ratio / budget >= tier.factor and short.ratio / budget >= tier.factor:
            long = stats.window(now, tier.long)  # the same counts, with their classes for the message
            best[severity] = (tier, long, short)
    for seconds, severity in guards:
        # Enough runs in the long window: known without counting it when a window inside it, counted the
        # same way, holds that many (the default tiers: the 1 h window from the 30 m one, the 6 h and 1 d
        # windows from the 2 h one).
        if severity in best or severity in unknown:
            continue
        for inner in enough:
            if stats.nests(now, inner, seconds):
                break
        else:
            if stats.window(now, seconds, counts_only=True).total < subject.min_samples:
                unknown.add(severity)
            else:
                enough.append(seconds)
    for severity in told:
        if severity in best:
            yield _firing(inp, rule, subject, severity, *best[severity])
        elif severity not in unknown and wants_clear:
            yield _condition(inp, rule, subject, severity, False, "", {}, _NO_COUNTS)


def _firing(inp: RuleInput, rule: ErrorRateRule, subject: _Subject, severity: Severity, tier: BurnRateWindow,
            long: WindowCounts, short: WindowCounts) -> Condition:
    """The condition of ``tier`` firing (``long`` with its error classes): ``_burning``'s texts, the same
    condition object again when everything it tells is what it was (``inp.fired``, the engine's): an alert
    that keeps firing is told the same counts pass after pass (its windows hold the same runs between two
    runs of its check, often across them), and its texts and condition made anew were a third of what it
    cost a full pass."""
    failure = subject.stats.last_failure if isinstance(subject.stats, CheckStats) else None
    told = None if failure is None else (failure.error_class, failure.detail, failure.status_code)
    inputs = (rule, tier, subject.check, subject.unit, subject.min_samples, long, short, told)
    fired, key = inp.fired, (inp.integration, subject.target, severity)
    condition = None if fired is None else fired.get(key, inputs)
    if condition is None:
        condition = _condition(inp, rule, subject, severity, True, *_burning(rule, tier, subject, long, short), long)
        if fired is not None:
            fired.put(key, inputs, condition)
    return condition
