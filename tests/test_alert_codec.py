"""Alerting's one JSON encoding (alerts/codec.py) reads what is already in Redis: the alert store's state
and notification-log hashes and the notifier outbox lists, as written before the two encoders became one
(the literals below), and writes them again byte for byte."""

from __future__ import annotations

import json
from dataclasses import replace

from alerts.codec import (
    group_from_json,
    group_to_json,
    notification_from_dict,
    notification_to_dict,
    state_from_json,
    state_to_json,
)
from alerts.grouping import GroupLog
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.state import AlertState

ALERT = Alert(
    key="stripe/error_rate/balance/critical", integration="stripe", alert="error_rate", severity=Severity.CRITICAL,
    status=AlertStatus.FIRING, summary="stripe/balance: 50.0% errors", check="balance", started_at=1700000000.5,
    details={"error rate": "50.0%"}, error_classes={"http_5xx": 3, "timeout": 1},
    last_request="GET https://api.stripe.com/v1/balance", response_excerpt='{"error": "x"}',
    notes="Stripe answers 503 on Sundays", runbook_url="https://runbooks.example/stripe",
    first_failure_at=1699999990.25,
)

OUTBOX_ENTRY = (
    '{"v": 1, "id": "e28628bf017d4c70b5770918026bae39", "n": {"group_key": "stripe", "created_at": 1700000001.0, '
    '"is_test": false, "alerts": [{"key": "stripe/error_rate/balance/critical", "integration": "stripe", '
    '"alert": "error_rate", "severity": "critical", "status": "firing", "summary": "stripe/balance: 50.0% errors", '
    '"check": "balance", "quota": null, "started_at": 1700000000.5, "resolved_at": null, '
    '"details": {"error rate": "50.0%"}, "error_classes": {"http_5xx": 3, "timeout": 1}, '
    '"last_request": "GET https://api.stripe.com/v1/balance", "response_excerpt": "{\\"error\\": \\"x\\"}", '
    '"notes": "Stripe answers 503 on Sundays", "runbook_url": "https://runbooks.example/stripe", '
    '"flapping": false, "first_failure_at": 1699999990.25}]}}'
)

STATE = (
    '{"key": "stripe/error_rate/balance/critical", "status": "firing", "pending_since": 1699999995.0, '
    '"firing_since": 1700000000.5, "last_true": 1700000001.0, "resolved_at": null, '
    '"transitions": [1699999995.0, 1700000000.5], "flapping": false, "alert": {'
    '"key": "stripe/error_rate/balance/critical", "integration": "stripe", "alert": "error_rate", '
    '"severity": "critical", "status": "firing", "summary": "stripe/balance: 50.0% errors", "check": "balance", '
    '"quota": null, "started_at": 1700000000.5, "resolved_at": null, "details": {"error rate": "50.0%"}, '
    '"error_classes": {"http_5xx": 3, "timeout": 1}, "last_request": "GET https://api.stripe.com/v1/balance", '
    '"response_excerpt": "{\\"error\\": \\"x\\"}", "runbook_url": "https://runbooks.example/stripe", '
    '"flapping": false, "first_failure_at": 1699999990.25}}'
)

GROUP = (
    '{"group_key": "stripe", "created_at": 1700000000.0, "last_flush": 1700000001.0, '
    '"sent": {"stripe/error_rate/balance/critical": "firing"}}'
)


def test_an_outbox_entry_of_the_previous_version_decodes_and_encodes_the_same() -> None:
    data = json.loads(OUTBOX_ENTRY)["n"]
    notification = notification_from_dict(data)
    assert notification == Notification(group_key="stripe", alerts=(ALERT,), created_at=1700000001.0)
    assert json.dumps(notification_to_dict(notification), ensure_ascii=False) == json.dumps(data, ensure_ascii=False)


def test_a_stored_state_of_the_previous_version_decodes_and_encodes_the_same() -> None:
    state = state_from_json(STATE)
    assert state == AlertState(
        key=ALERT.key, status=AlertStatus.FIRING, pending_since=1699999995.0, firing_since=1700000000.5,
        last_true=1700000001.0, transitions=(1699999995.0, 1700000000.5), alert=replace(ALERT, notes=None),
    )
    assert state_to_json(state) == STATE  # notes are not stored: re-read from the notes file when sending


def test_a_stored_notification_log_decodes_and_encodes_the_same() -> None:
    log = group_from_json(GROUP)
    assert log == GroupLog(group_key="stripe", created_at=1700000000.0, last_flush=1700000001.0,
                           sent={ALERT.key: "firing"})
    assert group_to_json(log) == GROUP
