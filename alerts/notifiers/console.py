"""Console notifier: prints each notification as a readable block (stdout, stderr or the log).

The default when Slack is not configured, and what the demo uses, so an alert is visible without any
external service.
"""

from __future__ import annotations

import logging
import sys

from alerts.message import render_text
from alerts.model import Notification, Severity
from alerts.notifier_config import ConsoleConfig
from alerts.notifiers.base import DeliveryError, DeliveryReceipt, NotifierContext

log = logging.getLogger("alerts.console")

_RULE = "─" * 72


class ConsoleNotifier:
    name = "console"
    min_interval = 0.0
    channel_key: str | None = None

    def __init__(self, config: ConsoleConfig, context: NotifierContext) -> None:
        self._config = config
        self._redactor = context.redactor
        self.min_severity: Severity = config.min_severity

    async def send(self, notification: Notification) -> DeliveryReceipt:
        text = render_text(notification, self._redactor)
        if self._config.stream == "log":
            level = logging.WARNING if notification.firing else logging.INFO
            log.log(level, "alert notification\n%s", text)
        else:
            stream = sys.stdout if self._config.stream == "stdout" else sys.stderr
            try:
                stream.write(f"{_RULE}\n{text}\n{_RULE}\n")
                stream.flush()
            except (OSError, ValueError) as exc:  # closed pipe or closed stream
                raise DeliveryError(f"cannot write to {self._config.stream}: {exc}", retryable=False) from None
        return DeliveryReceipt(notifier=self.name, action="printed")

    async def close(self) -> None:
        return None
