"""``tls_expiry``: the earliest certificate a check saw expires within ``days`` (warning) or
``critical_days`` (critical)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from alerts.config import TlsExpiryRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: TlsExpiryRule = inp.rule_config("tls_expiry")
    for check, stats in inp.checks_with_stats():
        if stats.tls_expiry is None:
            continue
        days_left = (stats.tls_expiry - inp.now) / 86400
        when = dt.datetime.fromtimestamp(stats.tls_expiry, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        for severity, days in ((Severity.CRITICAL, rule.critical_days), (Severity.WARNING, rule.days)):
            active = days_left < days
            if not active and not inp.wants_clear(check.name):
                continue
            yield Condition(
                integration=inp.integration, alert="tls_expiry", severity=severity, active=active,
                target=check.name, check=check.name,
                summary=(
                    f"{inp.integration}/{check.name}: TLS certificate expires in {days_left:.1f} days ({when})"
                    if days_left >= 0 else f"{inp.integration}/{check.name}: TLS certificate expired ({when})"
                ) if active else "",
                details={"certificate expires": when} if active else {},
                for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
            )
