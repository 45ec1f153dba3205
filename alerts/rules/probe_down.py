"""``probe_down``: N consecutive failed runs of a check; an ``auth`` failure (401/403) fires at once,
because credentials don't fix themselves."""

from __future__ import annotations

from collections.abc import Iterator

from alerts.config import ProbeDownRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput
from alerts.rules.text import last_failure_detail
from integration_kit.errors import ErrorClass


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: ProbeDownRule = inp.rule_config("probe_down")
    known = inp.known_targets  # (``inp.wants_clear`` written out: a check's name is its key's target)
    for check, stats in inp.checks_with_stats():
        last = stats.last_result
        if last is None:
            continue
        auth = rule.auth_immediately and not last.ok and last.error_class is ErrorClass.AUTH
        down = stats.consecutive_failures >= rule.consecutive_failures
        active = auth or down
        if not active and known is not None and check.name not in known:
            continue
        if not active and not last.ok and not stats.succeeded_since_start:
            # Fewer failures than N since a (re)start, none of them after a success: the streak may have
            # begun before we started watching, so this can't tell "down" from "not down" yet.
            continue
        summary = details = None
        classes: dict[str, int] = {}
        if active:
            if auth:
                summary = (
                    f"{inp.integration}/{check.name}: credentials rejected (HTTP {last.status_code or '401/403'})"
                )
            else:
                summary = f"{inp.integration}/{check.name}: down, {stats.consecutive_failures} failed runs in a row"
            recent = stats.window(inp.now, max(check.interval * stats.consecutive_failures * 2, check.interval))
            classes = dict(recent.classes)
            # The error classes travel in ``error_classes``, which every message renders on its own.
            details = {"failed in a row": str(stats.consecutive_failures), **last_failure_detail(stats)}
        yield Condition(
            integration=inp.integration, alert="probe_down", severity=Severity.CRITICAL, active=active,
            target=check.name, check=check.name, summary=summary or "", details=details or {},
            error_classes=classes, for_seconds=0.0 if auth else rule.for_, keep_firing_for=rule.keep_firing_for,
        )
