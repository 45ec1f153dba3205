"""The one JSON encoding of alerting's data: alerts, notifications, alert states and notification logs.

Used by the alert store (``alerts/store.py``: state and notification log in Redis hashes) and by the
notifier outbox (``alerts/outbox.py``: notifications in Redis lists). What is in Redis outlives the
process that wrote it, so the wire format only ever grows: decoding ignores fields it does not know (an
entry written by a newer version) and gives fields an older version did not write their default.

An alert's ``notes`` travel in a notification (they are part of the message) but are not stored with
its state: they are re-read from the notes file when the next message is built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from alerts.grouping import GroupLog
from alerts.memo import LastMade, identity
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.state import AlertState


def alert_to_dict(alert: Alert, *, notes: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": alert.key, "integration": alert.integration, "alert": alert.alert,
        "severity": str(alert.severity), "status": str(alert.status), "summary": alert.summary,
        "check": alert.check, "quota": alert.quota, "started_at": alert.started_at,
        "resolved_at": alert.resolved_at, "details": dict(alert.details),
        "error_classes": alert.error_classes_by_count, "last_request": alert.last_request,
        "response_excerpt": alert.response_excerpt,
    }
    if notes:
        out["notes"] = alert.notes
    out.update(runbook_url=alert.runbook_url, flapping=alert.flapping, first_failure_at=alert.first_failure_at)
    return out


def alert_from_dict(data: Mapping[str, Any]) -> Alert:
    return Alert(
        key=data["key"], integration=data["integration"], alert=data["alert"],
        severity=Severity(data["severity"]), status=AlertStatus(data["status"]), summary=data["summary"],
        check=data.get("check"), quota=data.get("quota"), started_at=float(data.get("started_at", 0.0)),
        resolved_at=data.get("resolved_at"), details=dict(data.get("details", {})),
        error_classes={k: int(v) for k, v in data.get("error_classes", {}).items()},
        last_request=data.get("last_request"), response_excerpt=data.get("response_excerpt"),
        notes=data.get("notes"), runbook_url=data.get("runbook_url"), flapping=bool(data.get("flapping", False)),
        first_failure_at=data.get("first_failure_at"),
    )


def notification_to_dict(notification: Notification) -> dict[str, Any]:
    doc = {
        "group_key": notification.group_key,
        "created_at": notification.created_at,
        "is_test": notification.is_test,
        "alerts": [alert_to_dict(a) for a in notification.alerts],
    }
    if notification.incident:  # absent before incidents were numbered
        doc["incident"] = notification.incident
    return doc


def notification_from_dict(data: Mapping[str, Any]) -> Notification:
    return Notification(
        group_key=data["group_key"],
        alerts=tuple(alert_from_dict(a) for a in data["alerts"]),
        created_at=float(data["created_at"]),
        is_test=bool(data.get("is_test", False)),
        incident=str(data.get("incident", "")),
    )


def state_to_json(state: AlertState, texts: LastMade[str, str] | None = None) -> str:
    """``json.dumps`` of the state's fields, its alert last: that one's text kept in ``texts`` (the store's,
    by alert key) while the alert is the same, from pass to pass while an alert fires (only ``last_true``
    moves): alerts are frozen, a firing alert's content is the same object pass after pass
    (alerts/stepping.py), and encoding it was most of what writing its state cost."""
    head = json.dumps({
        "key": state.key, "status": str(state.status), "pending_since": state.pending_since,
        "firing_since": state.firing_since, "last_true": state.last_true, "resolved_at": state.resolved_at,
        "transitions": list(state.transitions), "flapping": state.flapping,
    })
    alert = state.alert
    if alert is None:
        return f"{head[:-1]}, \"alert\": null}}"
    inputs = identity(alert)
    text = None if texts is None else texts.get(alert.key, inputs)
    if text is None:
        text = json.dumps(alert_to_dict(alert, notes=False))
        if texts is not None:
            texts.put(alert.key, inputs, text)
    return f"{head[:-1]}, \"alert\": {text}}}"


def state_from_json(text: str | bytes) -> AlertState:
    data = json.loads(text)
    return AlertState(
        key=data["key"], status=AlertStatus(data["status"]), pending_since=data.get("pending_since"),
        firing_since=data.get("firing_since"), last_true=data.get("last_true"),
        resolved_at=data.get("resolved_at"), transitions=tuple(data.get("transitions", ())),
        flapping=bool(data.get("flapping", False)),
        alert=alert_from_dict(data["alert"]) if data.get("alert") else None,
    )


def group_to_json(log: GroupLog) -> str:
    return json.dumps({"group_key": log.group_key, "created_at": log.created_at, "last_flush": log.last_flush,
                       "sent": dict(log.sent)})


def group_from_json(text: str | bytes) -> GroupLog:
    data = json.loads(text)
    return GroupLog(group_key=data["group_key"], created_at=float(data["created_at"]),
                    last_flush=data.get("last_flush"), sent=dict(data.get("sent", {})))
