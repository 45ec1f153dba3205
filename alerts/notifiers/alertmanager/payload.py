"""What is posted to Alertmanager's ``POST /api/v2/alerts``: a pure function of our ``Alert``.

* **Labels** are the alert's identity, and Alertmanager deduplicates by them: ``alertname``
  (``Integration`` + the rule in CamelCase: ``IntegrationProbeDown``), ``integration``, ``rule``,
  ``severity``, ``sender="integration-monitor"``, the ``check`` or ``quota`` the alert is about (or
  ``target``: a webhook event type, real traffic, a notifier), plus the configured extra labels. Nothing in them
  depends on the replica, the time or a measured value, so every replica posts the same label set and
  Alertmanager keeps one alert.
* **Annotations** tell what is wrong: ``summary``, ``description``, ``error_classes``, ``last_request``,
  ``response_excerpt``, ``runbook_url``, ``notes``. Redacted again here (defence in depth) and bounded.
* ``startsAt`` is when the alert started firing; ``endsAt`` is ``now + valid_for`` while it fires (the
  monitor re-posts it every evaluation, so Alertmanager resolves it by itself only if the monitor goes
  away) and the time it resolved once it has.
* ``generatorURL`` links to the monitor's status of the check (or of the integration).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from alerts.content import bounded
from alerts.model import Alert, AlertStatus
from alerts.rules.base import key_target
from alerts.rules.text import classes_text
from alerts.self_health import MONITOR

if TYPE_CHECKING:
    from integration_kit.redact import Redactor

SENDER = "integration-monitor"
ANNOTATION_MAX = 2000  # per annotation: Alertmanager has no limit, its receivers (Slack, PagerDuty) do


def alertname(rule: str) -> str:
    """``probe_down`` → ``IntegrationProbeDown``; ``monitor_redis_down`` → ``IntegrationMonitorRedisDown``."""
    return "Integration" + "".join(part[:1].upper() + part[1:] for part in rule.split("_") if part)


def alert_labels(alert: Alert, extra: Mapping[str, str]) -> dict[str, str]:
    """The alert's identity in Alertmanager: the same for the same alert on every replica."""
    out = dict(extra)
    out.update(
        alertname=alertname(alert.alert), integration=alert.integration, rule=alert.alert,
        severity=str(alert.severity), sender=SENDER,
    )
    if alert.check:
        out["check"] = alert.check
    if alert.quota:
        out["quota"] = alert.quota
    target = key_target(alert.key)
    if target is not None and target not in (alert.check, alert.quota):
        out["target"] = target
    return out


def alert_annotations(alert: Alert, redactor: Redactor) -> dict[str, str]:
    description = "\n".join(f"{name}: {value}" for name, value in alert.details.items())
    if alert.flapping:
        description = "flapping: fired and resolved repeatedly; held as firing until it settles\n" + description
    values = {
        "summary": alert.summary,
        "description": description,
        "error_classes": classes_text(alert.error_classes),
        "last_request": alert.last_request or "",
        "response_excerpt": alert.response_excerpt or "",
        "runbook_url": alert.runbook_url or "",
        "notes": alert.notes or "",
    }
    return {name: bounded(redactor.text(value.strip()), ANNOTATION_MAX) for name, value in values.items() if value}


def generator_url(alert: Alert, base_url: str) -> str:
    """The monitor's status page of what the alert is about: the check, else the integration."""
    if alert.integration == MONITOR or alert.key.count("/") < 3:  # the monitor itself, or a test alert
        return f"{base_url}/api/status"
    path = f"{base_url}/api/status/{quote(alert.integration, safe='')}"
    return f"{path}/{quote(alert.check, safe='')}" if alert.check else path


def rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def postable_alert(
    alert: Alert, *, now: float, valid_for: float, extra_labels: Mapping[str, str], base_url: str, redactor: Redactor
) -> dict[str, Any]:
    """One element of the ``POST /api/v2/alerts`` body."""
    if alert.status is AlertStatus.RESOLVED:
        ends = alert.resolved_at if alert.resolved_at is not None else now
    else:
        ends = now + valid_for
    starts = min(alert.started_at or now, ends)
    return {
        "labels": alert_labels(alert, extra_labels),
        "annotations": alert_annotations(alert, redactor),
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
        "generatorURL": generator_url(alert, base_url),
    }
