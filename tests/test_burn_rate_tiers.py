"""The error-rate rule's burn-rate tiers asked cheaply (alerts/rules/error_rate.py ``_burn_rate``: the
cheap questions first, a tier not asked when its verdict cannot change the outcome, a long window's
runs known from a window inside it counted the same way, error classes only for the tier a message
tells of) give what asking every tier's two windows gives, as the rule did before: the same conditions —
verdicts, summaries, details, error classes — on random histories (failures of several classes, runs
out of order, some older than the buckets reach, a raw ring that overflows into buckets by its number
of runs or their age, buckets widened by a reload, the statistics started again), random tiers and
guards, judged after every run."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.config import BurnRateWindow, ErrorRateRule
from alerts.model import Severity
from alerts.rules import RULES, Condition, RuleInput, error_rate
from alerts.rules.error_rate import _burning, _condition, _Subject
from alerts.stats import Stats, WindowCounts
from alerts.traffic_stats import TrafficStats
from integration_kit.errors import ErrorClass
from integration_kit.results import CheckResult

T0 = 1_800_000_000.0
CLASSES = [None, None, None, None, ErrorClass.HTTP_5XX, ErrorClass.TIMEOUT, ErrorClass.AUTH]
SECONDS = [60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0]


def every_window(inp: RuleInput, rule: ErrorRateRule, subject: _Subject, severities: tuple[Severity, ...],
                 told: tuple[Severity, ...]) -> Iterator[Condition]:
    """The rule as it was: both windows of every tier, with their error classes, then the verdicts (the
    text of a tier that fires is ``_burning``'s either way)."""
    budget = 1.0 - rule.slo
    verdicts: dict[Severity, list[bool | None]] = {}
    best: dict[Severity, tuple[str, dict[str, str], WindowCounts]] = {}
    for tier, severity in zip(rule.windows, severities, strict=True):
        long = subject.stats.window(inp.now, tier.long)
        short = subject.stats.window(inp.now, tier.short)
        judged = subject.stats.covers(inp.now, tier.short)
        if not judged or long.total < subject.min_samples or short.total < subject.min_short_samples:
            verdicts.setdefault(severity, []).append(None)
            continue
        firing = long.ratio / budget >= tier.factor and short.ratio / budget >= tier.factor
        verdicts.setdefault(severity, []).append(firing)
        if firing and severity not in best:
            best[severity] = (*_burning(rule, tier, subject, long, short), long)
    for severity, results in verdicts.items():
        if severity in best:
            summary, details, counts = best[severity]
            yield _condition(inp, rule, subject, severity, True, summary, details, counts)
        elif all(r is not None for r in results):
            yield _condition(inp, rule, subject, severity, False, "", {}, WindowCounts(total=0, errors=0))


@st.composite
def tiers(draw: Any) -> BurnRateWindow:
    short = draw(st.sampled_from(SECONDS))
    return BurnRateWindow(long=draw(st.sampled_from([s for s in SECONDS if s >= short])), short=short,
                          factor=draw(st.sampled_from([0.5, 1.0, 2.0, 6.0, 14.4, 50.0])),
                          severity=draw(st.sampled_from(["critical", "warning"])))


rules = st.builds(
    ErrorRateRule, windows=st.lists(tiers(), min_size=1, max_size=4).map(tuple),
    slo=st.sampled_from([0.5, 0.9, 0.99]), min_samples=st.integers(1, 12), min_short_samples=st.integers(1, 6),
)
# Gaps of up to 4 minutes, or a few seconds (bursts: a short window holding more runs than a longer one
# counted another way, or enough runs for another tier's guard).
runs = st.lists(st.tuples(st.floats(min_value=0, max_value=240, allow_nan=False) | st.sampled_from([2.0, 10.0]),
                          st.sampled_from(CLASSES)), min_size=1, max_size=150)
# A few runs reported after a later one (while one is in the raw ring, windows are walked: CheckStats._scan).
late = st.sets(st.integers(min_value=0, max_value=149), max_size=2)
# A run reported long after it ran: older than the buckets reach (in the raw ring only), or just inside them.
far = st.dictionaries(st.integers(min_value=0, max_value=149), st.sampled_from([7_000.0, 30_000.0, 100_000.0]),
                      max_size=2)


def reload_or_restart(stats: Stats, n: int, *, resize_at: int, forget_at: int, longer: float) -> None:
    """Before run ``n``: a reload that configures a ``longer`` window (wider buckets), or acme/api's
    statistics forgotten (judged elsewhere meanwhile: they start again)."""
    if n == resize_at:
        stats.resize(longer)
    if n == forget_at:
        stats.forget_check("acme", "api")


def result(at: float, error: ErrorClass | None) -> CheckResult:
    return CheckResult(integration="acme", check="api", kind="http", ok=error is None, error_class=error,
                       detail="", started_at=at, duration=0.1, total_duration=0.1, status_code=200)


@settings(max_examples=300, deadline=None)
@given(rule=rules, runs=runs, late=late, offsets=st.lists(st.floats(min_value=-60, max_value=600, allow_nan=False),
                                              min_size=1, max_size=3),
       capacity=st.integers(min_value=1, max_value=60), max_window=st.sampled_from([3600.0, 86400.0]),
       exact_window=st.sampled_from([math.inf, 600.0, 3600.0]), far=far, resize_at=st.integers(0, 200),
       forget_at=st.integers(0, 200), failing_every=st.sampled_from([1, 1, 25]))
def test_the_tiers_asked_cheaply_give_what_every_window_gives(
    rule: ErrorRateRule, runs: list[tuple[float, ErrorClass | None]], late: set[int], offsets: list[float],
    capacity: int, max_window: float, exact_window: float, far: dict[int, float], resize_at: int, forget_at: int,
    failing_every: int,
) -> None:
    stats = Stats(max_window=max_window, exact_window=exact_window, raw_capacity=capacity)
    traffic = TrafficStats(max_window=max_window)
    config: Any = SimpleNamespace(alerts=SimpleNamespace(error_rate=rule), checks=[SimpleNamespace(name="api")])
    at = T0
    for n, (step, error) in enumerate(runs):
        reload_or_restart(stats, n, resize_at=resize_at, forget_at=forget_at, longer=max_window * 4)
        at += -step / 2 if n in late else step
        if n % failing_every:
            error = None  # a mostly healthy check: its tiers judged clear, not firing
        stats.add(result(at - far.get(n, 0.0), error))
        traffic.add(at - at % 10, 7, {str(error): 2} if error is not None else {})
        for offset in offsets:
            inp = RuleInput(integration="acme", config=config, stats=stats, quotas={}, now=at + offset,
                            active=frozenset(), traffic=traffic)
            cheaply = list(RULES["error_rate"](inp))
            with mock.patch.object(error_rate, "_burn_rate", every_window):
                assert cheaply == list(RULES["error_rate"](inp))
