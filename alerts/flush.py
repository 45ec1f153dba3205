"""The alert engine's output at each evaluation: notification groups flushed to the notifiers (the sink),
the current state to the alert feed, and the notification log as the notifiers confirm delivery.

The sink (the notifier dispatcher) only enqueues; a failing or slow sink never stops evaluation — the
group is simply flushed again on the next evaluation. The feed (Alertmanager) gets the whole current
state after every evaluation, whatever changed, as Alertmanager expects; it must not block either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from alerts.content import NotesReader
from alerts.grouping import GroupLog, next_flush, nflog_field, plan, split_field
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.notifiers.base import severity_rank
from alerts.outbox import Record
from alerts.routing import Outgoing, outgoing, select
from alerts.silences import Silence, silenced_by
from alerts.state import Event, forgettable

if TYPE_CHECKING:
    from alerts.config import AlertingConfig
    from alerts.inputs import AlertMetrics, ConfigView
    from alerts.replica_voice import ReplicaVoice
    from alerts.silence_book import SilenceBook
    from alerts.store_sync import StoreSync
    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT = 5.0


class NotificationSink(Protocol):
    """The notifier side (alerts.delivery.Dispatcher): enqueue only; it delivers, retries and writes the
    notification log once a notifier confirmed delivery (``Record``), telling the engine (``on_finished``)."""

    def notifier_floors(self) -> Sequence[tuple[str, Severity]]: ...

    def pending(self, notifier: str, group_key: str) -> bool: ...

    async def submit_to(self, notifier: str, notification: Notification, record: Record) -> None: ...

    def on_finished(self, listener: Callable[[Record, str], None]) -> None: ...

    async def synced(self) -> bool:
        """What the notifiers keep in Redis about sent messages (Slack thread records) is written there."""
        ...


class AlertFeed(Protocol):
    """A notifier that follows alert state (alerts.notifiers.alertmanager.feed.AlertmanagerFeed): after every
    evaluation, every firing and resolved alert. Returns at once; it delivers and retries on its own."""

    def publish(self, alerts: Sequence[Alert], *, now: float, interval: float) -> None: ...


class Flusher:
    def __init__(self, memory: StoreSync, replicas: ReplicaVoice, silence_book: SilenceBook, *,
                 metrics: AlertMetrics, redactor: Redactor, sink: NotificationSink | None, feed: AlertFeed | None,
                 clock: Callable[[], float], config: Callable[[], ConfigView]) -> None:
        self._memory = memory
        self._replicas = replicas
        self._silence_book = silence_book
        self._metrics = metrics
        self._redactor = redactor
        self.sink = sink
        self.feed = feed
        self._clock = clock
        self._config = config
        self._notes = NotesReader()
        self._outgoing = Outgoing()  # what select tells of each alert, remembered while its state is the same
        self.submit_failing: bool | None = None  # the last hand-off to the sink failed (self-health reads it)
        self._retry_at: dict[str, float] = {}  # nflog field → when a dropped notification is planned again
        self._held_since: dict[str, float] = {}  # alert key → when its last news or repeat was held back
        if sink is not None:
            sink.on_finished(self._delivery_finished)

    async def notify(self, cfg: ConfigView, now: float, events: Mapping[str, tuple[Event, ...]],
                     due: list[float]) -> list[Notification]:
        """Flush every group of this replica's that is due; the deadlines of those that will be go to ``due``."""
        timing = cfg.alerting
        memory, replicas = self._memory, self._replicas
        states = replicas.mine(memory.states)
        logs = {k: g for k, g in memory.groups.items() if replicas.group_mine(split_field(k)[1], cfg)}
        told: dict[str, set[str]] = {}  # group key → alerts some notifier delivered
        for field, entry in logs.items():
            told.setdefault(split_field(field)[1], set()).update(entry.sent)
        silences = self._silence_book.in_force()  # (once, not per alert)
        chosen = select(states, told, events, group_by=timing.group_by, send_resolved=timing.send_resolved,
                        muted=lambda alert: self._muted(alert, cfg, now, silences), tell=self._outgoing)
        self._outgoing.keep_only(states)
        self._count_suppressed(cfg, now, chosen.suppressed, self._repeats_held(chosen.held_firing, logs, now, timing))

        handed: list[Notification] = []
        candidates, forget = chosen.candidates, chosen.forget
        for notifier, min_severity in self.sink.notifier_floors() if self.sink is not None else ():
            mine = {split_field(k)[1] for k in logs if split_field(k)[0] == notifier}
            for gkey in sorted(set(candidates) | mine | set(forget)):
                field = nflog_field(notifier, gkey)
                if self.sink is None or self.sink.pending(notifier, gkey) or self._retry_at.get(field, now) > now:
                    continue  # on its way (its log is written once delivered), or dropped a moment ago
                old = memory.groups.get(field)
                told_here = old.sent if old is not None else {}
                # What this notifier takes, and only resolves of what it told.
                alerts = [a for a in candidates.get(gkey, ())
                          if severity_rank(a.severity) >= severity_rank(min_severity)
                          and (a.status is AlertStatus.FIRING or a.flapping or a.key in told_here)]
                new, notification = plan(old, gkey, alerts, now, timing, forget=forget.get(gkey, ()))
                if notification is None:
                    if new != old:
                        memory.put_group(field, new)
                    flush_at = next_flush(new, alerts, timing)
                    if flush_at is not None:
                        due.append(flush_at)
                    continue
                notification = self._with_notes(notification, cfg)
                record = Record(field, new, replicas.group_fence(gkey, timing.group_by))
                if await self._submit(notifier, notification, record):
                    handed.append(notification)
                    self._log_latency(notification)

        # Forget alerts with nothing left to tell or remember.
        in_logs = {k for g in memory.groups.values() for k in g.sent}
        for key in [k for k, s in states.items() if forgettable(s) and k not in in_logs]:
            memory.drop_state(key)
        return handed

    def _repeats_held(self, held: list[tuple[str, str]], logs: Mapping[str, GroupLog], now: float,
                      timing: AlertingConfig) -> list[tuple[str, str]]:
        """The alerts firing under a silence (maintenance, inhibition) whose repeat would go out now: one
        ``repeat_interval`` after they were last told (their group's last flush) or last held back."""
        unknown = {key for key, _ in held if key not in self._held_since}
        last_told: dict[str, float] = {}
        for entry in logs.values() if unknown else ():
            if entry.last_flush is not None:
                flushed = entry.last_flush
                for key in unknown.intersection(entry.sent):
                    last_told[key] = max(last_told.get(key, flushed), flushed)
        repeats, still = [], {}
        for key, why in held:
            # Neither told nor held back here yet (this process started since): its repeats count from now.
            since = self._held_since.get(key, last_told.get(key, now))
            if now >= since + timing.repeat_interval:
                repeats.append((key, f"repeat, {why}"))
                since = now
            still[key] = since
        self._held_since = still
        return repeats

    def _count_suppressed(self, cfg: ConfigView, now: float, *held: list[tuple[str, str]]) -> None:
        count = 0
        for key, why in (pair for pairs in held for pair in pairs):
            log.info("alert %s: notification suppressed (%s)", key, why)
            self._held_since[key] = now
            count += 1
        if count:
            for notifier in self._notifier_names(cfg):
                self._metrics.notifications.labels(notifier=notifier, result="suppressed").inc(count)

    def publish(self, cfg: ConfigView, now: float) -> None:
        """The current state to the feed: firing (flapping counts as firing) and resolved alerts, whether or
        not they are silenced here — on that route, silencing is the Alertmanager's."""
        if self.feed is None:
            return
        try:
            current = [
                self._noted(outgoing(s), cfg) for s in self._replicas.mine(self._memory.states).values()
                if s.alert is not None and (s.status in (AlertStatus.FIRING, AlertStatus.RESOLVED) or s.flapping)
            ]
            self.feed.publish(current, now=now, interval=cfg.monitor.evaluation_interval)
        except Exception:  # the other notifiers and the state must not suffer from it
            log.exception("publishing alerts to the alert feed failed")

    def _delivery_finished(self, record: Record, result: str) -> None:
        """The dispatcher delivered (the record is the notification log now) or gave up a notification
        (the log stays as it was: planned again after ``group_interval``, as Alertmanager retries a flush)."""
        if result == "sent":
            self._retry_at.pop(record.field, None)
            self._memory.put_group(record.field, record.log)
        elif result == "failed":
            self._retry_at[record.field] = self._clock() + self._config().alerting.group_interval

    def _muted(self, alert: Alert, cfg: ConfigView, now: float, silences: Sequence[Silence]) -> str | None:
        """Why notifications of this alert are held back now (silence or maintenance), or None."""
        icfg = cfg.integrations.get(alert.integration)
        if icfg is not None and icfg.alerts.in_maintenance(now):
            return "maintenance"
        silence = silenced_by(alert, silences, now)
        return f"silence {silence.id}" if silence is not None else None

    def _with_notes(self, notification: Notification, cfg: ConfigView) -> Notification:
        return replace(notification, alerts=tuple(self._noted(alert, cfg) for alert in notification.alerts))

    def _noted(self, alert: Alert, cfg: ConfigView) -> Alert:
        icfg = cfg.integrations.get(alert.integration)
        notes = self._notes.read(icfg.notes, cfg.alerting.notes_max_chars) if icfg else None
        return replace(alert, notes=notes) if notes else alert

    async def _submit(self, notifier: str, notification: Notification, record: Record) -> bool:
        assert self.sink is not None
        try:
            async with asyncio.timeout(SUBMIT_TIMEOUT):
                await self.sink.submit_to(notifier, notification, record)
        except Exception as exc:
            self.submit_failing = True
            log.warning("notifier queue refused notification for %s: %s", notification.group_key,
                        self._redactor.text(repr(exc)))
            return False
        self.submit_failing = False
        return True

    def _log_latency(self, notification: Notification) -> None:
        handed_at = self._clock()
        for alert in notification.firing:
            if alert.first_failure_at is not None:
                log.info(
                    "alert %s handed to notifiers %.3fs after its first failing probe",
                    alert.key, handed_at - alert.first_failure_at,
                    extra={"alert_key": alert.key, "alert_latency_seconds": handed_at - alert.first_failure_at},
                )

    def _notifier_names(self, cfg: ConfigView) -> list[str]:
        names = getattr(self.sink, "notifier_names", None)
        if names:
            return list(names)
        return ["slack"] if cfg.alerting.slack is not None else ["console"]
