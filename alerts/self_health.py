"""Alerts about the monitor itself: Redis unreachable, a notifier failing, the scheduler lagging.

Pure: the engine samples the facts (its own Redis pings, the notification and scheduler-lag metrics) into
a ``HealthSample`` and this turns them into ``Condition``s of the pseudo-integration ``_monitor``; they
go through the same state machine and notifiers as every other alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from alerts.config import SelfHealthConfig
from alerts.model import Severity
from alerts.rules.base import Condition
from alerts.rules.text import fmt_seconds

MONITOR = "_monitor"


def is_monitor(integration: str) -> bool:
    """The pseudo-integration of the monitor's own health (``_monitor``, or ``_monitor@<replica>``)."""
    return integration == MONITOR or integration.startswith(MONITOR + "@")


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSample:
    redis_up: bool | None  # None: no Redis configured
    notifiers: Mapping[str, bool | None] = field(default_factory=dict)  # name → failing? (None: no traffic)
    scheduler_lag: float | None = None  # mean start delay since the last evaluation; None: no runs
    redis_error: str = ""


def evaluate(sample: HealthSample, cfg: SelfHealthConfig, *, integration: str = MONITOR) -> list[Condition]:
    """``integration``: the pseudo-integration the alerts belong to (``_monitor@<replica>`` in a cluster,
    where each replica tells of its own health)."""
    if not cfg.enabled:
        return []
    out: list[Condition] = []
    if sample.redis_up is not None:
        down = not sample.redis_up
        out.append(Condition(
            integration=integration, alert="monitor_redis_down", severity=Severity.CRITICAL, active=down,
            summary=f"integration monitor cannot reach Redis ({sample.redis_error or 'no answer'}): alert state "
                    "is kept in memory only and Redis quotas are not read" if down else "",
            for_seconds=cfg.redis_down_for,
        ))
    for name, failing in sorted(sample.notifiers.items()):
        if failing is None:
            continue
        out.append(Condition(
            integration=integration, alert="monitor_notifier_failing", severity=Severity.CRITICAL, active=failing,
            target=name, summary=f"notifier {name} is failing to deliver alerts" if failing else "",
            for_seconds=cfg.notifier_failing_for,
        ))
    if sample.scheduler_lag is not None:
        lagging = sample.scheduler_lag > cfg.scheduler_lag
        out.append(Condition(
            integration=integration, alert="monitor_scheduler_lagging", severity=Severity.WARNING, active=lagging,
            summary=f"probes start {fmt_seconds(sample.scheduler_lag)} late on average "
                    f"(threshold {fmt_seconds(cfg.scheduler_lag)}): the monitor is overloaded" if lagging else "",
            details={"mean start delay": fmt_seconds(sample.scheduler_lag)} if lagging else {},
            for_seconds=60.0,
        ))
    return out
