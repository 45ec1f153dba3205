"""Notifier plug-ins, in the manner of Gatus's alert providers: each is configured under its own key of
``alerting`` (``alerting.slack``, ``alerting.console``), validated by its own pydantic model, and built
into an object with ``async send(notification) -> DeliveryReceipt``.

Adding a notifier: a config model (subclass of ``NotifierConfigBase``, a field on ``AlertingConfig``), a
class following ``Notifier``, and one ``NotifierPlugin`` line in ``PLUGINS`` below.
"""

from __future__ import annotations

import logging

from alerts.config import AlertingConfig
from alerts.notifier_config import ConsoleConfig, SlackConfig
from alerts.notifiers.base import (
    DeliveryError,
    DeliveryReceipt,
    Notifier,
    NotifierContext,
    NotifierPlugin,
    for_severity,
)
from alerts.notifiers.console import ConsoleNotifier
from alerts.notifiers.slack import SlackBotNotifier, SlackWebhookNotifier, build_slack

__all__ = [
    "PLUGINS",
    "ConsoleNotifier",
    "DeliveryError",
    "DeliveryReceipt",
    "Notifier",
    "NotifierContext",
    "NotifierPlugin",
    "SlackBotNotifier",
    "SlackWebhookNotifier",
    "build_notifiers",
    "close_quietly",
    "for_severity",
]

log = logging.getLogger(__name__)

PLUGINS: dict[str, NotifierPlugin] = {
    "slack": NotifierPlugin("slack", SlackConfig, build_slack, enabled=lambda c: bool(c.enabled)),
    "console": NotifierPlugin("console", ConsoleConfig, ConsoleNotifier),
}


def build_notifiers(alerting: AlertingConfig, context: NotifierContext) -> list[Notifier]:
    """One notifier per configured plug-in; the console alone when none is configured."""
    notifiers: list[Notifier] = []
    for key, plugin in PLUGINS.items():
        config = getattr(alerting, key, None)
        if config is None:
            continue
        if not plugin.enabled(config):
            log.info("alerting.%s is present but not enabled (no token or URL set); skipping it", key)
            continue
        notifiers.append(plugin.factory(config, context))
    if not notifiers:
        log.info("no notifier configured (alerting.slack); alerts go to the console")
        notifiers.append(ConsoleNotifier(ConsoleConfig(), context))
    return notifiers


async def close_quietly(notifier: Notifier) -> None:
    """Close a notifier; a failure is logged, never raised (closing must go on with the others)."""
    try:
        await notifier.close()
    except Exception:
        log.exception("closing notifier %s failed", notifier.name)
