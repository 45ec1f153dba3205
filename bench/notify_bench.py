"""Notifier costs: building a Block Kit message (1 and 200 alerts) and delivering through a loopback
Slack with pacing off (so the number is our overhead + slack-sdk + HTTP, not Slack's 1 msg/s).

    .venv/bin/python bench/notify_bench.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_slack import TOKEN, FakeSlack

from alerts.delivery import DeliveryPolicy, Dispatcher
from alerts.message import build_message
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.notifier_config import SlackConfig
from alerts.notifiers import NotifierContext, SlackBotNotifier
from integration_kit.redact import Redactor


def alert(i: int) -> Alert:
    return Alert(
        key=f"vendor/error_rate/check{i}", integration="vendor", alert="error_rate", severity=Severity.CRITICAL,
        status=AlertStatus.FIRING, summary=f"error rate 40% on check{i}", check=f"check{i}", started_at=time.time(),
        details={"Error rate": "40% over 5m", "Samples": "50"}, error_classes={"http_5xx": 15, "timeout": 5},
        last_request=f"GET https://api.vendor.example/v1/check{i}", response_excerpt='{"error":"boom"}' * 20,
        notes="Vendor returns 503 during deploys.\n" * 10, runbook_url="https://wiki.example.com/vendor",
    )


def time_build(count: int, rounds: int) -> float:
    alerts = tuple(alert(i) for i in range(count))
    notification = Notification(group_key="vendor", alerts=alerts, created_at=time.time())
    redactor = Redactor(["sk_live_secretsecret", "xoxb-1-secret"])
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        build_message(notification, redactor)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def time_delivery(count: int) -> tuple[float, float]:
    fake = await FakeSlack().start()
    config = SlackConfig(token=TOKEN, channel="#alerts", base_url=fake.api_url)
    dispatcher = Dispatcher(
        [SlackBotNotifier(config, NotifierContext(redactor=Redactor()))], policy=DeliveryPolicy(pace=0.0)
    )
    await dispatcher.start()
    start = time.perf_counter()
    for i in range(count):
        await dispatcher.submit(Notification(group_key=f"g{i}", alerts=(alert(i),), created_at=time.time()))
    submitted = time.perf_counter() - start
    assert await dispatcher.drain(120)
    total = time.perf_counter() - start
    await dispatcher.close()
    await fake.close()
    assert len(fake.delivered("chat.postMessage")) == count
    return submitted / count, total / count


def main() -> None:
    print(f"build_message, 1 alert:    {time_build(1, 200) * 1e3:.2f} ms (median)")
    print(f"build_message, 200 alerts: {time_build(200, 20) * 1e3:.2f} ms (median)")
    submit, per_message = asyncio.run(time_delivery(200))
    print(f"submit (in-memory outbox): {submit * 1e6:.0f} µs per notification")
    print(f"delivery, pacing off:      {per_message * 1e3:.2f} ms per message (loopback Slack, same process)")


if __name__ == "__main__":
    main()
