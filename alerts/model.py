"""The events that cross from alert evaluation to notifiers. Frozen, slotted, keyword-only.

Evaluation (rules + state machine + grouping, no I/O) produces ``Notification``s; a notifier turns one
into a message (a pure function) and delivers it (``async send``). Keep this module free of I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert instance as a notifier sees it. ``key`` is stable across restarts (used for dedupe)."""

    key: str  # e.g. "stripe/error_rate/balance" — unique per alert instance
    integration: str
    alert: str  # rule name: a key of alerts.rules.RULES, webhook_duplicates or monitor_*
    severity: Severity
    status: AlertStatus  # FIRING or RESOLVED when notified
    summary: str  # one line: what is wrong
    check: str | None = None
    quota: str | None = None
    started_at: float = 0.0  # epoch seconds when it started firing
    resolved_at: float | None = None
    details: Mapping[str, str] = field(default_factory=dict)  # label → value shown as fields (redacted)
    error_classes: Mapping[str, int] = field(default_factory=dict)  # class → count in the window
    last_request: str | None = None  # redacted "GET https://…" of the last failing request
    response_excerpt: str | None = None  # redacted, bounded
    notes: str | None = None  # the integration's quirks (from its notes file)
    runbook_url: str | None = None
    flapping: bool = False
    first_failure_at: float | None = None  # epoch of the first failing probe behind it (latency tracing)

    @property
    def error_classes_by_count(self) -> dict[str, int]:
        """The error classes, the most frequent first, then by name: one order for one alert, whatever order
        its window was counted in (newest run first, by buckets, or kept from an earlier pass)."""
        return dict(sorted(self.error_classes.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """A group of alerts to deliver in one message (grouped by ``group_key``, integration by default)."""

    group_key: str
    alerts: tuple[Alert, ...]
    created_at: float
    is_test: bool = False
    # The group's incident: when its notification log began (alerts.grouping.plan). A Slack thread belongs
    # to one incident; the next incident of the group starts a new message.
    incident: str = ""

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.status is AlertStatus.FIRING)

    @property
    def resolved(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.status is AlertStatus.RESOLVED)
