"""Grouping and the notification log (Alertmanager's semantics). Pure: no I/O, ``now`` is an argument.

A group (alerts sharing the ``group_by`` labels) is flushed as one ``Notification``:
- first flush ``group_wait`` after the group got something to say (alerts resolved before that are never
  sent);
- later, when what would be sent differs from what was last sent, at most every ``group_interval`` —
  except a resolve, which goes out at once (README, "Alert timing": ``keep_firing_for`` already held it,
  and batching new alerts is what ``group_interval`` is for; Alertmanager holds resolves too, we do not);
- unchanged but still firing: again every ``repeat_interval``.
The log (``GroupLog``) remembers the last flush and what each alert was last sent as; it is persisted,
so a restarted daemon neither repeats a message inside ``repeat_interval`` nor forgets a resolve.

Like Alertmanager's nflog, there is one log per notifier and group (``nflog_field``), and it records a
flush only once that notifier confirmed delivery: the engine plans against it, hands the notification
together with the log it leads to (``alerts.outbox.Record``), and the notifier's lane writes that log
after the send succeeded. A notification that is dropped (a non-retryable error, ``give_up_after``, a
full queue, a crash before delivery) leaves the log as it was, so it is planned again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from alerts.config import AlertingConfig
from alerts.model import Alert, AlertStatus, Notification

FLAPPING = "flapping"


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupLog:
    group_key: str
    created_at: float  # when the group first had something to send
    last_flush: float | None = None
    sent: Mapping[str, str] = field(default_factory=dict)  # alert key → fingerprint last sent (not resolved)


def nflog_field(notifier: str, group_key: str) -> str:
    """The notification log's field for one notifier and group: ``<notifier>|<group key>``."""
    return f"{notifier}|{group_key}"


def split_field(name: str) -> tuple[str, str]:
    """``nflog_field``'s (notifier, group key); notifier names never contain ``|``."""
    notifier, _, key = name.partition("|")
    return notifier, key


def incident_id(created_at: float) -> str:
    """A group's incident: when its notification log began. The log lives from the group's first news to
    the flush that leaves nothing to remember, in Redis across restarts and failovers."""
    return f"{created_at:.3f}"


def fingerprint(alert: Alert) -> str:
    return FLAPPING if alert.flapping else f"{alert.status}:{alert.severity}"


def group_key(alert: Alert, group_by: Sequence[str]) -> str:
    values = {"integration": alert.integration, "alert": alert.alert, "check": alert.check or "-",
              "severity": str(alert.severity)}
    return "|".join(values[label] for label in group_by) or "all"


def plan(
    log: GroupLog | None,
    key: str,
    candidates: Sequence[Alert],
    now: float,
    timing: AlertingConfig,
    *,
    forget: Collection[str] = (),
) -> tuple[GroupLog | None, Notification | None]:
    """Decide whether to flush the group now.

    ``candidates``: what may be told — firing alerts that are not muted, flapping alerts (as flapping),
    and resolved alerts whose firing was sent. ``forget``: alerts dropped from the log without telling
    (resolved while silenced, or send_resolved off). Returns the new log (None = nothing to remember).
    """
    sent = {k: v for k, v in (log.sent if log else {}).items() if k not in forget}
    included = {a.key: fingerprint(a) for a in candidates}
    if (log is None or log.last_flush is None) and not included:
        return (GroupLog(group_key=key, created_at=log.created_at, sent=sent) if log and sent else None), None
    due_at = _due_at(log, sent, candidates, now, timing)
    due = due_at is not None and now >= due_at

    if not due:
        if log is None:
            return GroupLog(group_key=key, created_at=now, sent=sent), None
        if not sent and not included:
            return None, None
        return GroupLog(group_key=key, created_at=log.created_at, last_flush=log.last_flush, sent=sent), None

    order = {AlertStatus.FIRING: 0, AlertStatus.RESOLVED: 1}
    alerts = tuple(sorted(candidates, key=lambda a: (order.get(a.status, 2), a.key)))
    created = log.created_at if log is not None else now
    notification = Notification(group_key=key, alerts=alerts, created_at=now, incident=incident_id(created))
    for alert in candidates:
        if alert.status is AlertStatus.RESOLVED and not alert.flapping:
            sent.pop(alert.key, None)
        else:
            sent[alert.key] = fingerprint(alert)
    if not sent:
        return None, notification
    return GroupLog(group_key=key, created_at=created, last_flush=now, sent=sent), notification


def next_flush(log: GroupLog | None, candidates: Sequence[Alert], timing: AlertingConfig) -> float | None:
    """When ``plan`` would flush this group (its log as ``plan`` returned it) if the candidates stay as they
    are; None: not while they do. The engine evaluates then, so ``group_wait`` and ``group_interval`` end on
    time rather than at the evaluation after."""
    if log is None or (log.last_flush is None and not candidates):
        return None
    return _due_at(log, log.sent, candidates, log.created_at, timing)


def _due_at(log: GroupLog | None, sent: Mapping[str, str], candidates: Sequence[Alert], now: float,
            timing: AlertingConfig) -> float | None:
    """When the group is due: ``group_wait`` after it got something to say; ``group_interval`` after its last
    message when what it would say changed (a resolve at once); ``repeat_interval`` while it fires."""
    if log is None or log.last_flush is None:
        return (log.created_at if log is not None else now) + timing.group_wait
    told = [a for a in candidates if a.key in sent or a.status is not AlertStatus.RESOLVED or a.flapping]
    if any(sent.get(a.key) != fingerprint(a) for a in told):
        if any(a.status is AlertStatus.RESOLVED and not a.flapping for a in told):
            return log.last_flush  # a resolve goes out at once (README, "Alert timing")
        return log.last_flush + timing.group_interval
    if any(a.status is AlertStatus.FIRING for a in told):
        return log.last_flush + timing.repeat_interval
    return None
