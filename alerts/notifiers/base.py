"""What a notifier plug-in is: a validated config model + a class with ``async send(notification)``.

A notifier delivers one notification once; it does not retry, queue or pace (the Dispatcher in
alerts/delivery.py does, the same way for every notifier). It reports failure by raising
``DeliveryError`` saying whether trying again can help and how long the far side asked us to wait.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from alerts.model import Notification, Severity

if TYPE_CHECKING:
    import redis.asyncio

    from alerts.notifier_config import NotifierConfigBase
    from integration_kit.redact import Redactor

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReceipt:
    notifier: str
    action: str  # posted, updated, threaded, webhook, printed
    channel: str | None = None  # Slack channel ID when known
    ts: str | None = None  # Slack message timestamp (its ID) when known


class DeliveryError(Exception):
    """A failed send. ``reason`` is short, redacted and safe to log or show in /readyz."""

    def __init__(
        self, reason: str, *, retryable: bool, retry_after: float | None = None, code: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after  # seconds, when the far side said (429 Retry-After)
        self.code = code  # the service's own error code (Slack: invalid_auth, channel_not_found…)


class Notifier(Protocol):
    name: str  # the `notifier` metric label: bounded (one per plug-in kind)
    min_interval: float  # pacing between messages on its channel, seconds
    # Names its channel for the pace shared across replicas (alerts/channel_pace.py); None: not shared.
    # Never a secret: it is part of a Redis key.
    channel_key: str | None
    min_severity: Severity

    async def send(self, notification: Notification) -> DeliveryReceipt: ...

    async def close(self) -> None: ...


@dataclass(slots=True, kw_only=True)
class NotifierContext:
    """What a plug-in may use besides its own config."""

    redactor: Redactor
    redis: redis.asyncio.Redis | None = None
    key_prefix: str = "im:"  # Redis keys: {key_prefix}slack:thread:… etc.
    public_url: str = "http://localhost:9478"  # the monitor's address, for links back to it (monitor.public_url)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NotifierPlugin:
    """``key`` is the field of ``alerting`` that configures it (alerting.slack, alerting.console…)."""

    key: str
    config_model: type[NotifierConfigBase]
    factory: Callable[[Any, NotifierContext], Notifier]
    enabled: Callable[[Any], bool] = lambda config: True
    # False: grouped notifications through the dispatcher (Slack, console). True: the current alerts after
    # every evaluation, through a component of its own (Alertmanager); its send() serves send-test-alert.
    follows_state: bool = False


def severity_rank(severity: Severity) -> int:
    """info 0, warning 1, critical 2 (an unknown severity counts as critical: never hide it)."""
    return _SEVERITY_RANK.get(severity, 2)


def for_severity(notification: Notification, min_severity: Severity) -> Notification | None:
    """The notification with alerts below ``min_severity`` removed; None when nothing is left."""
    if notification.is_test or min_severity is Severity.INFO:
        return notification
    floor = severity_rank(min_severity)
    kept = tuple(a for a in notification.alerts if severity_rank(a.severity) >= floor)
    if not kept:
        return None
    return notification if len(kept) == len(notification.alerts) else replace(notification, alerts=kept)
