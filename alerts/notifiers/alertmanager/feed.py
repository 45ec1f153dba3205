"""The Alertmanager route, as a daemon Component: after every evaluation the alert engine hands it the
current alerts (``publish``, which never blocks), and it keeps every configured Alertmanager up to date.

This is how Prometheus talks to Alertmanager, and what Alertmanager expects: every firing alert is posted
again on every evaluation with ``endsAt`` four intervals ahead (at least four minutes, as Prometheus), so
Alertmanager resolves it by itself if the monitor goes away; a resolve is a post with ``endsAt`` at the
time it resolved, repeated for ``RESOLVED_RETENTION`` so that an Alertmanager that was down at the time
still learns of it. Pending alerts are not sent. Grouping, silences, inhibition, repeats and receivers are
Alertmanager's job on this route: the monitor's own silences, maintenance windows and grouping apply to
its Slack and console notifiers only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alerts.model import Alert, AlertStatus
from alerts.notifiers.alertmanager.notifier import AlertmanagerNotifier
from alerts.notifiers.alertmanager.payload import postable_alert
from alerts.notifiers.alertmanager.pusher import Batch, Pusher, PushPolicy
from alerts.notifiers.base import NotifierContext, severity_rank
from alerts.reloads import OrderedReloads
from integration_kit.supervisor import Supervisor

if TYPE_CHECKING:
    from alerts.inputs import ConfigView, NotificationMetrics
    from alerts.notifier_config import AlertmanagerConfig
    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

RESOLVED_RETENTION = 900.0  # seconds a resolved alert is re-posted (Prometheus: 15 minutes)
MIN_RESEND_DELAY = 60.0  # endsAt = now + 4 × max(evaluation interval, this), as Prometheus


@dataclass(frozen=True, slots=True)
class _Built:
    section: AlertmanagerConfig | None
    public_url: str
    notifier: AlertmanagerNotifier | None


def valid_for(interval: float) -> float:
    return 4 * max(interval, MIN_RESEND_DELAY)


class AlertmanagerFeed:
    """A Component: ``start``/``close``, ``on_config`` (rebuilds on a changed ``alerting.alertmanager``),
    ``publish`` (called by the alert engine), ``status`` and ``ready``. Idle while no URL is configured."""

    name = "alertmanager"

    def __init__(
        self, config: ConfigView, *, redactor: Redactor, metrics: NotificationMetrics | None = None,
        policy: PushPolicy | None = None,
    ) -> None:
        self._redactor = redactor
        self._metrics = metrics
        self._policy = policy or PushPolicy()
        self._section: AlertmanagerConfig | None = None
        self._public_url = ""
        self._notifier: AlertmanagerNotifier | None = None
        self._pushers: list[Pusher] = []
        self._reloads = OrderedReloads("alerting.alertmanager")
        self._dropped = 0
        self._initial = config
        self._built_from: tuple[AlertmanagerConfig | None, str] | None = None  # what the notifier was built from
        # The component's verdict, as the notifiers' (alerts/delivery.py): integration_monitor_component_ok
        # {component="alertmanager"} 0 while an Alertmanager does not take the alerts, set after every attempt.
        self._supervisor = Supervisor(
            self.name, redact=redactor.text,
            on_state=(lambda ok: metrics.component_ok.labels(self.name).set(1 if ok else 0)) if metrics else None,
        )

    # -- Component ---------------------------------------------------------------------------------
    async def start(self) -> None:
        built = self._prepare(self._initial)
        if built is not None:
            await self._swap(built)

    async def close(self) -> None:
        await self._reloads.wait()
        await self._stop()
        self._built_from = None

    def on_result(self, result: object) -> None:
        return None

    def on_config(self, config: ConfigView) -> None:
        """Reload hook (synchronous by contract). The new notifier is built here, so a config it cannot be
        built from fails the reload (the app then puts the old config back everywhere); swapping it in runs
        as a task, one at a time, in order."""
        built = self._prepare(config)
        if built is not None:
            self._reloads.submit(lambda: self._swap(built))

    def status(self) -> dict[str, Any]:
        if self._notifier is None:
            return {"enabled": False}
        return {"enabled": True, "alertmanagers": {p.url: p.status() for p in self._pushers},
                "ok": self._supervisor.ok, "problem": self._supervisor.problem or None}

    def ready(self) -> tuple[bool, str]:
        broken = [f"{p.url}: {p.permanent_error}" for p in self._pushers if p.permanent_error]
        if broken:
            return False, "alertmanager refuses our alerts, not retried (fix the config): " + "; ".join(broken)
        return True, "alertmanager ok" if self._pushers else "alertmanager not configured"

    def _report(self) -> None:
        failing = [f"{p.url}: {p.error}" for p in self._pushers if p.error]
        self._supervisor.report(not failing, "; ".join(failing))

    # -- the engine's side ---------------------------------------------------------------------------
    def publish(self, alerts: Sequence[Alert], *, now: float, interval: float) -> None:
        """The current alerts (firing, and resolved ones): posted to every Alertmanager soon. Never blocks."""
        section, notifier = self._section, self._notifier
        if section is None or notifier is None or not self._pushers:
            return
        floor = severity_rank(section.min_severity)
        chosen = [
            a for a in alerts
            if severity_rank(a.severity) >= floor and (
                a.status is AlertStatus.FIRING
                or (a.status is AlertStatus.RESOLVED and (a.resolved_at or 0.0) >= now - RESOLVED_RETENTION)
            )
        ]
        if not chosen:
            return
        chosen.sort(key=lambda a: (-severity_rank(a.severity), a.status is AlertStatus.RESOLVED, a.key))
        self._note_dropped(chosen[self._policy.max_alerts :])
        lasting = valid_for(interval)
        batch = Batch(
            tuple(
                postable_alert(a, now=now, valid_for=lasting, extra_labels=section.labels,
                               base_url=self._public_url, redactor=self._redactor)
                for a in chosen[: self._policy.max_alerts]
            ),
            interval=interval,
        )
        for pusher in self._pushers:
            pusher.offer(batch)

    def _note_dropped(self, dropped: Sequence[Alert]) -> None:
        if len(dropped) != self._dropped and dropped:
            log.error("%d alert(s) over the limit of %d per batch are not sent to Alertmanager (least severe first)",
                      len(dropped), self._policy.max_alerts)
        if dropped:
            self._count("failed")
        self._dropped = len(dropped)

    # -- building and rebuilding -----------------------------------------------------------------
    def _prepare(self, config: ConfigView) -> _Built | None:
        """What ``config`` asks for, built (not started), or None when that is what runs already. Raises if
        the notifier cannot be built (a CA file that is not one), changing nothing."""
        section = config.alerting.alertmanager
        wanted = (section if section is not None and section.enabled else None, config.monitor.public_url)
        if wanted == self._built_from:
            return None
        section, public_url = wanted
        context = NotifierContext(redactor=self._redactor, public_url=public_url)
        notifier = AlertmanagerNotifier(section, context) if section is not None else None
        self._built_from = wanted
        return _Built(section, public_url, notifier)

    async def _swap(self, built: _Built) -> None:
        await self._stop()
        self._section, self._public_url, self._notifier = built.section, built.public_url, built.notifier
        if built.section is None or built.notifier is None:
            return
        post = built.notifier.post
        self._pushers = [Pusher(url, post, policy=self._policy, count=self._count, on_attempt=self._report)
                         for url in built.section.urls]
        for pusher in self._pushers:
            pusher.start()
        log.info("alerts go to Alertmanager at %s", ", ".join(built.section.urls))

    async def _stop(self) -> None:
        pushers, self._pushers = self._pushers, []
        for pusher in pushers:
            await pusher.close()
        self._report()  # (what failed is gone)
        notifier, self._notifier = self._notifier, None
        self._section = None
        if notifier is not None:
            await notifier.close()

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.notifications.labels(notifier=AlertmanagerNotifier.name, result=result).inc()
