"""``quota``: usage ratio with hysteresis. Warning at ≥ ``warning``, critical at ≥ ``critical``; a firing
warning holds until usage drops below ``clear``, a firing critical until it drops below ``warning``.
(The engine's inhibition mutes the warning while the critical of the same quota fires.)"""

from __future__ import annotations

from collections.abc import Iterator

from alerts.config import QuotaRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput, alert_key
from alerts.rules.text import fmt_ratio, fmt_seconds
from alerts.stats import QuotaReading


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: QuotaRule = inp.rule_config("quota")
    yield from _no_longer_announced(inp, rule)
    for name, reading in sorted(inp.quotas.items()):
        ratio = reading.ratio
        for severity, level, hold in (
            (Severity.CRITICAL, rule.critical, rule.warning),
            (Severity.WARNING, rule.warning, rule.clear),
        ):
            firing_already = alert_key(inp.integration, "quota", name, severity) in inp.active
            active = ratio >= level or (firing_already and ratio >= hold)
            if not active and not inp.wants_clear(name):
                continue
            yield Condition(
                integration=inp.integration, alert="quota", severity=severity, active=active, target=name,
                quota=name, summary=_summary(inp.integration, name, reading, level) if active else "",
                details=_details(reading) if active else {},
                for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
            )


_SEVERITIES = frozenset(Severity)


def _no_longer_announced(inp: RuleInput, rule: QuotaRule) -> Iterator[Condition]:
    """Resolve the alerts of a header quota's policy the vendor no longer announces. Each response that
    announces limits replaces what the previous one announced (the plain name for a lone limit,
    ``<name>/<policy>`` for each of several: monitor/quota/service.py; a vendor going from one policy to two
    replaces the one label by the others), so a label gone while another of the same quota is read is no
    longer there to judge: its alert clears as that of a quota a reload removed. A policy still announced
    whose usage the response left out (``QuotaReading.announced``), and a quota with no reading at all (a
    failed Redis read), are unknown, not gone: their alerts hold."""
    headers = [reading for reading in inp.quotas.values() if reading.source == "headers"]
    if not headers:
        return
    announcing = {reading.quota.split("/", 1)[0] for reading in headers}
    announced = frozenset().union(*(reading.announced for reading in headers))
    prefix = f"{inp.integration}/quota/"  # of alert_key(integration, "quota", target, severity)
    for key in sorted(inp.active):
        target, _, severity = key.removeprefix(prefix).rpartition("/")
        if (not key.startswith(prefix) or target in inp.quotas or target in announced
                or target.split("/", 1)[0] not in announcing or severity not in _SEVERITIES):
            continue
        yield Condition(
            integration=inp.integration, alert="quota", severity=Severity(severity), active=False, target=target,
            quota=target, summary="", details={}, for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
        )


def _summary(integration: str, name: str, reading: QuotaReading, level: float) -> str:
    text = (
        f"{integration} quota {name} at {fmt_ratio(reading.ratio)} (≥ {fmt_ratio(level)}): "
        f"{reading.used:g}/{reading.limit:g} used"
    )
    if reading.reset_seconds is not None:
        text += f", resets in {fmt_seconds(reading.reset_seconds)}"
    if reading.exhaustion_seconds is not None:
        text += f", {_exhaustion(reading.exhaustion_seconds)}"
    return text


def _exhaustion(seconds: float) -> str:
    """The projection as a reader takes it: a quota at or over its limit is used up now, not "exhausted in
    ~0ms at this rate" (the projection reads 0 there)."""
    return "used up" if seconds <= 0 else f"exhausted in ~{fmt_seconds(seconds)} at this rate"


def _details(reading: QuotaReading) -> dict[str, str]:
    out = {
        "quota used": f"{reading.used:g} / {reading.limit:g} ({fmt_ratio(reading.ratio)}, {reading.source})",
    }
    if reading.reset_seconds is not None:
        out["resets in"] = fmt_seconds(reading.reset_seconds)
    if reading.exhaustion_seconds is not None:
        seconds = reading.exhaustion_seconds
        out["exhausted in"] = "now (used up)" if seconds <= 0 else f"~{fmt_seconds(seconds)} at the current rate"
    return out
