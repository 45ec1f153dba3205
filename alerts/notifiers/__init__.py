"""Notifier plug-ins, in the manner of Gatus's alert providers: each is configured under its own key of
``alerting`` (``alerting.slack``, ``alerting.alertmanager``, ``alerting.console``), validated by its own
pydantic model, and built into an object with ``async send(notification) -> DeliveryReceipt``.

Two ways of delivering: Slack and the console get grouped notifications through the dispatcher
(alerts/delivery.py); Alertmanager follows the alert state instead (``follows_state``: the current alerts
after every evaluation, through alerts/notifiers/alertmanager/feed.py), and does its own grouping.

Adding a notifier: a config model (subclass of ``NotifierConfigBase``, a field on ``AlertingConfig``), a
class following ``Notifier``, and one ``NotifierPlugin`` line in ``PLUGINS`` below.
"""

from __future__ import annotations

import logging

from alerts.config import AlertingConfig
from alerts.notifier_config import AlertmanagerConfig, ConsoleConfig, SlackConfig
from alerts.notifiers.alertmanager import AlertmanagerNotifier
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
    "AlertmanagerNotifier",
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
    "alertmanager": NotifierPlugin(
        "alertmanager", AlertmanagerConfig, AlertmanagerNotifier, enabled=lambda c: bool(c.enabled), follows_state=True
    ),
    "console": NotifierPlugin("console", ConsoleConfig, ConsoleNotifier),
}


def build_notifiers(
    alerting: AlertingConfig, context: NotifierContext, *, state_followers: bool = False
) -> list[Notifier]:
    """One notifier per configured plug-in that takes grouped notifications (with ``state_followers``, the
    Alertmanager too: send-test-alert tries them all); the console alone when nothing is configured."""
    notifiers: list[Notifier] = []
    anything = False
    for key, plugin in PLUGINS.items():
        config = getattr(alerting, key, None)
        if config is None:
            continue
        if not plugin.enabled(config):
            log.info("alerting.%s is present but not enabled (no token or URL set); skipping it", key)
            continue
        anything = True
        if state_followers or not plugin.follows_state:
            notifiers.append(plugin.factory(config, context))
    if not anything:
        log.info("no notifier configured (alerting.slack, alerting.alertmanager); alerts go to the console")
        notifiers.append(ConsoleNotifier(ConsoleConfig(), context))
    return notifiers


async def close_quietly(notifier: Notifier) -> None:
    """Close a notifier; a failure is logged, never raised (closing must go on with the others)."""
    try:
        await notifier.close()
    except Exception:
        log.exception("closing notifier %s failed", notifier.name)
