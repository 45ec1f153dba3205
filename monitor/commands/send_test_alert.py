"""``integration-monitor send-test-alert -c FILE``: one test message through every configured notifier.

Prints one line per notifier (``slack: ok — posted to channel C123 (ts …)`` or ``slack: FAILED — …``)
and exits 0 when all delivered, 1 when one failed, 2 when the config is invalid. A 429 or 5xx is retried
a few times (Retry-After honoured up to 10 s); a configuration error is reported at once.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.notifiers import DeliveryError, DeliveryReceipt, Notifier, NotifierContext, build_notifiers, close_quietly
from integration_kit.redact import Redactor
from monitor.commands.common import EXIT_CONFIG, load_or_report, run_async

if TYPE_CHECKING:
    from monitor.settings import Config

TEST_ATTEMPTS = 3
TEST_MAX_WAIT = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "send-test-alert", help="send one test message through every configured notifier and print the result"
    )
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config file")
    parser.set_defaults(func=cmd_send_test_alert)


def cmd_send_test_alert(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    return run_async(send_test_alert(config))


def make_test_notification(now: float | None = None) -> Notification:
    now = time.time() if now is None else now
    alert = Alert(
        key="integration-monitor/test",
        integration="integration-monitor",
        alert="test",
        severity=Severity.INFO,
        status=AlertStatus.FIRING,
        summary="Test alert: notifications from integration-monitor reach this channel",
        started_at=now,
        details={"Sent by": "integration-monitor send-test-alert"},
    )
    return Notification(group_key=f"test:{uuid.uuid4().hex[:8]}", alerts=(alert,), created_at=now, is_test=True)


async def send_test_alert(
    config: Config,
    *,
    redactor: Redactor | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Send one test message through every configured notifier; print one result line each.

    Returns the exit code: 0 when every notifier delivered, 1 otherwise.
    """
    redactor = redactor or Redactor(config.secret_values())
    context = NotifierContext(redactor=redactor, public_url=config.monitor.public_url)
    notifiers = build_notifiers(config.alerting, context, state_followers=True)
    notification = make_test_notification()
    failures = 0
    for notifier in notifiers:
        try:
            receipt = await _send_with_retries(notifier, notification)
        except DeliveryError as exc:
            failures += 1
            hint = "" if exc.retryable else " (not retried: check token, channel and scopes)"
            out(f"{notifier.name}: FAILED — {redactor.text(exc.reason)}{hint}")
        else:
            where = f" to channel {receipt.channel}" if receipt.channel else ""
            ts = f" (ts {receipt.ts})" if receipt.ts else ""
            out(f"{notifier.name}: ok — {receipt.action}{where}{ts}")
        finally:
            await close_quietly(notifier)
    return 1 if failures else 0


async def _send_with_retries(notifier: Notifier, notification: Notification) -> DeliveryReceipt:
    for attempt in range(1, TEST_ATTEMPTS + 1):
        try:
            return await notifier.send(notification)
        except DeliveryError as exc:
            if not exc.retryable or attempt == TEST_ATTEMPTS:
                raise
            wait = exc.retry_after if exc.retry_after is not None else float(attempt)
            await asyncio.sleep(min(wait, TEST_MAX_WAIT))
    raise AssertionError("unreachable")
