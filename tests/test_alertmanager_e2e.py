"""The Alertmanager route end to end: real ``integration-monitor run`` daemons, a real Alertmanager (Debian's
``prometheus-alertmanager``) whose webhook receiver is a loopback sink counting notifications, and a
misbehaving target on loopback.

Needs the ``prometheus-alertmanager`` binary: fails without it under CI, skips visibly otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from alertmanager_support import Alertmanager, AuthProxy, Notified, alertmanager_binary
from daemon_support import (
    CANARY_HEADER,
    CANARY_QUERY,
    CANARY_URL,
    Daemon,
    assert_no_canary,
    daemon,
    get,
    need_console_script,
    samples,
    write,
)
from targets import DOC, Reply, Target
from waiting import until

CANARY_AM_PASSWORD = "ampw_CANARY_basic_5c2e"
CANARY_AM_TOKEN = "amtok_CANARY_bearer_0b7d"
ALL_CANARIES = (CANARY_HEADER, CANARY_QUERY, CANARY_URL, CANARY_AM_PASSWORD, CANARY_AM_TOKEN)
EXTERNAL = "https://monitor.example.com"
NOTES = "Shop's API answers 503 during its nightly deploys (02:00–02:10 UTC); retry later."


@pytest.fixture(autouse=True)
def _needs() -> None:
    need_console_script()
    alertmanager_binary()


def failing(path: str = "/orders") -> Reply:
    """A 503 whose body echoes every secret the probe sent (a vendor debugging aid gone wrong)."""
    return Reply(status=503, body=f"maintenance; you sent {CANARY_HEADER} {CANARY_QUERY} {CANARY_URL} to {path}")


def monitor_config(
    tmp_path: Path, target: Target, urls: list[str], *, checks: tuple[str, ...] = ("orders",), auth: str = ""
) -> Path:
    notes = write(tmp_path / "shop-notes.md", NOTES)
    check_lines = "".join(
        f"""      - name: {name}
        kind: http
        url: "{target.url('/' + name)}?token={CANARY_URL}"
        headers: {{Authorization: "Bearer {CANARY_HEADER}"}}
        query: {{api_key: "{CANARY_QUERY}"}}
        interval: 200ms
        timeout: 2s
        retry: {{attempts: 1}}
"""
        for name in checks
    )
    return write(tmp_path / f"monitor-{len(list(tmp_path.glob('monitor-*.yaml')))}.yaml", f"""
monitor:
  listen: "127.0.0.1:0"
  jitter: 0
  shutdown_grace: 2s
  evaluation_interval: 1s
  external_url: "{EXTERNAL}/"
integrations:
  shop:
    runbook_url: https://wiki.example.com/runbooks/shop
    notes: {notes}
    checks:
{check_lines}
    alerts:
      error_rate: {{enabled: false}}
      latency: {{enabled: false}}
      probe_down: {{consecutive_failures: 2, keep_firing_for: 0s}}
alerting:
  alertmanager:
    urls: {json.dumps(urls)}
    timeout: 2s
    labels: {{team: payments}}
{auth}
""")


# The sender's decision after each failed attempt (alerts/notifiers/alertmanager/pusher.py), in the daemon's log:
# a warning for the first failure of a kind and for a refusal no retry can fix, DEBUG for the retries.
_NEXT_TRY = re.compile(r"alerts not delivered to alertmanager (\S+) \(attempt \d+ in a row\): "
                       r".*; next try in ([\d.]+)s")


def next_tries(d: Daemon, url: str) -> list[float]:
    """The wait the daemon decided on after each failed attempt to post to ``url``, in order."""
    return [float(wait) for to, wait in _NEXT_TRY.findall(d.log) if to == url]


async def _notify_ended(am: Alertmanager, count: int) -> bool:
    return await am.webhook_notifies_ended() >= count


async def firing_in(am: Alertmanager, check: str, **kwargs: Any) -> dict[str, Any] | None:
    for alert in await am.alerts(**kwargs):
        if alert["labels"].get("check") == check and alert["status"]["state"] == "active":
            return alert
    return None


def notified(am: Alertmanager, check: str, status: str) -> list[Notified]:
    return [n for n in am.notifications() if any(a["labels"].get("check") == check and a["status"] == status
                                                 for a in n.alerts)]


async def metric(d: Daemon, name: str, **labels: str) -> float:
    values = samples((await get(f"{d.url}/metrics"))[2])
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


async def sent(d: Daemon) -> float:
    return await metric(d, "integration_notifications_total", notifier="alertmanager", result="sent")


async def test_failing_check_reaches_alertmanager_once_with_labels_and_annotations_then_resolves(
    target: Target, tmp_path: Path
) -> None:
    target.route("/orders", failing())
    async with Target() as sink, Alertmanager(tmp_path / "am", sink) as am:
        config = monitor_config(tmp_path, target, [am.url])
        async with daemon(config) as d:
            await until(lambda: firing_in(am, "orders"), "the alert in Alertmanager")
            alert = await firing_in(am, "orders")
            assert alert is not None
            assert alert["labels"] == {
                "alertname": "IntegrationProbeDown", "integration": "shop", "check": "orders", "rule": "probe_down",
                "severity": "critical", "sender": "integration-monitor", "team": "payments",
            }
            notes = alert["annotations"]
            assert "shop/orders" in notes["summary"] and "failed" in notes["summary"], notes
            assert notes["runbook_url"] == "https://wiki.example.com/runbooks/shop"
            assert notes["notes"] == NOTES
            assert notes["error_classes"].startswith("http_5xx")
            assert notes["last_request"].startswith(f"GET {target.url('/orders')}"), notes
            assert "last error: http_5xx: 503" in notes["description"], notes
            assert alert["generatorURL"] == f"{EXTERNAL}/api/status/shop/orders"
            # The link works on the monitor itself (here under its loopback address).
            status, _, body = await get(alert["generatorURL"].replace(EXTERNAL, d.url))
            assert status == 200 and json.loads(body)["check"] == "orders" and json.loads(body)["ok"] is False
            status, _, body = await get(f"{d.url}/api/status/shop")
            assert status == 200 and list(json.loads(body)["checks"]) == ["orders"]
            assert (await get(f"{d.url}/api/status/nope"))[0] == 404
            assert (await get(f"{d.url}/api/status/shop/nope"))[0] == 404

            await until(lambda: notified(am, "orders", "firing"), "the firing notification")
            posts_then = await sent(d)
            await until(lambda: _grew(d, posts_then, 4), "four more posts of the firing alert")
            assert len(am.notifications()) == 1, am.notifications()  # re-posted every evaluation, notified once

            target.route("/orders", Reply(json=DOC))
            await until(lambda: notified(am, "orders", "resolved"), "the resolved notification")
            assert await firing_in(am, "orders") is None
            posts_then = await sent(d)
            await until(lambda: _grew(d, posts_then, 3), "three more posts of the resolved alert")
            told = [n.alert_statuses() for n in am.notifications()]
            assert told == [[("orders", "firing")], [("orders", "resolved")]], told
            assert await metric(d, "integration_notifications_total", notifier="alertmanager", result="failed") == 0
            ready = json.loads((await get(f"{d.url}/readyz"))[2])
            assert ready["status"] == "ready", ready


async def _grew(d: Daemon, before: float, by: int) -> bool:
    return await sent(d) >= before + by


async def test_two_daemons_sending_the_same_alert_are_delivered_once(target: Target, tmp_path: Path) -> None:
    target.route("/orders", failing())
    async with Target() as sink, Alertmanager(tmp_path / "am", sink) as am:
        config = monitor_config(tmp_path, target, [am.url])
        async with daemon(config) as first, daemon(config) as second:
            await until(lambda: notified(am, "orders", "firing"), "the firing notification")
            marks = (await sent(first), await sent(second))
            await until(lambda: _grew(first, marks[0], 5), "five more posts from the first daemon")
            await until(lambda: _grew(second, marks[1], 5), "five more posts from the second daemon")
            assert len(am.notifications()) == 1, am.notifications()
            held = [a for a in await am.alerts() if a["labels"].get("check") == "orders"]
            assert len(held) == 1, held  # one alert: both daemons posted the same label set

            target.route("/orders", Reply(json=DOC))
            await until(lambda: notified(am, "orders", "resolved"), "the resolved notification")
            await until(lambda: _none_firing(am), "no alert left firing")
            assert am.notifications()[-1].status == "resolved"


async def _none_firing(am: Alertmanager) -> bool:
    return await firing_in(am, "orders") is None


async def test_alertmanager_away_for_30s_mid_incident(target: Target, tmp_path: Path) -> None:
    """The alert that fired while Alertmanager was down arrives once it is back; the daemon keeps running,
    its retries stay paced (no loop), and the incident that was already notified is not notified again."""
    target.route("/orders", failing())
    target.route("/refunds", Reply(json=DOC))
    async with Target() as sink, Alertmanager(tmp_path / "am", sink) as am:
        config = monitor_config(tmp_path, target, [am.url], checks=("orders", "refunds"))
        async with daemon(config, "--log-level", "DEBUG") as d:  # (DEBUG: every retry's decision is logged)
            await until(lambda: notified(am, "orders", "firing"), "the first incident's notification")
            await until(lambda: _notify_ended(am, 1), "Alertmanager past the notification (into its log)")
            await am.stop()
            assert next_tries(d, am.url) == []
            target.route("/refunds", failing("/refunds"))
            await asyncio.sleep(30)
            assert d.proc.returncode is None and (await get(f"{d.url}/healthz"))[0] == 200
            failed = await metric(d, "integration_notifications_total", notifier="alertmanager", result="failed")
            # Retried with backoff up to the evaluation interval (1 s here): every failed attempt put the next
            # one off by half the interval to the whole of it (equal jitter once the backoff is at its cap, as
            # from the start here), so at most two attempts an interval, never a loop.
            waits = next_tries(d, am.url)
            assert failed >= 1 and waits, (failed, waits)
            assert all(0.5 <= wait <= 1.0 for wait in waits), waits
            doc = json.loads((await get(f"{d.url}/api/status"))[2])["components"]["alertmanager"]
            assert doc["alertmanagers"][am.url]["state"] == "retrying", doc
            assert doc["alertmanagers"][am.url]["alerts_waiting"] == 2, doc  # both incidents, kept for the return

            await am.start()
            await until(lambda: firing_in(am, "refunds"), "the alert that fired during the outage")
            await until(lambda: notified(am, "refunds", "firing"), "its notification")
            assert await firing_in(am, "orders") is not None
            await asyncio.sleep(3)  # a few group intervals: nothing else is due
            assert len(notified(am, "orders", "firing")) == 1, am.notifications()
            assert len(notified(am, "refunds", "firing")) == 1, am.notifications()
            doc = json.loads((await get(f"{d.url}/api/status"))[2])["components"]["alertmanager"]
            assert doc["alertmanagers"][am.url]["state"] == "ok", doc
            assert "Traceback" not in d.log, d.log


async def test_nothing_secret_is_posted_through_an_authenticating_proxy(target: Target, tmp_path: Path) -> None:
    """Bearer token to a proxy in front of Alertmanager: the token goes in the header and nowhere else; no
    probe secret is in any body posted, in what Alertmanager holds or notifies, nor in the daemon's
    log, status or metrics."""
    target.route("/orders", failing())
    async with Target() as sink, Alertmanager(tmp_path / "am", sink) as am, AuthProxy(am.url, CANARY_AM_TOKEN) as proxy:
        auth = f'    bearer_token: "{CANARY_AM_TOKEN}"'
        config = monitor_config(tmp_path, target, [proxy.url], auth=auth)
        async with daemon(config) as d:
            await until(lambda: notified(am, "orders", "firing"), "the notification through the proxy")
            assert proxy.refused == 0 and proxy.requests
            for headers, body in proxy.requests:
                assert headers["Authorization"] == f"Bearer {CANARY_AM_TOKEN}"
                for canary in ALL_CANARIES:
                    assert canary.encode() not in body, f"{canary} posted to Alertmanager"
            await _assert_clean(am, d)


async def test_basic_auth_to_alertmanager_and_wrong_credentials_are_reported(target: Target, tmp_path: Path) -> None:
    target.route("/orders", failing())
    hashed = bcrypt.hashpw(CANARY_AM_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = f"basic_auth_users:\n  monitor: '{hashed}'\n"
    async with Target() as sink, Alertmanager(tmp_path / "am", sink, web_config=web_config) as am:
        good = f'    basic_auth: {{username: monitor, password: "{CANARY_AM_PASSWORD}"}}'
        async with daemon(monitor_config(tmp_path, target, [am.url], auth=good)) as d:
            await until(lambda: notified(am, "orders", "firing"), "the notification")
            basic = "Basic " + base64.b64encode(f"monitor:{CANARY_AM_PASSWORD}".encode()).decode()
            await _assert_clean(am, d, auth=basic)

        wrong = '    basic_auth: {username: monitor, password: "not-the-password"}'
        async with daemon(monitor_config(tmp_path, target, [am.url], auth=wrong)) as d:
            await until(lambda: _not_ready(d), "/readyz saying Alertmanager refuses us")
            status, _, body = await get(f"{d.url}/readyz")
            assert status == 503 and "401" in body and am.url in body, body
            await asyncio.sleep(3)  # a window of three evaluations (1 s) to judge the attempts by
            failed = await metric(d, "integration_notifications_total", notifier="alertmanager", result="failed")
            # One attempt per evaluation (1 s), not a loop: after every refusal (each logged, none retryable) the
            # next try was put off to the next evaluation's batch.
            waits = next_tries(d, am.url)
            assert failed >= 1 and set(waits) == {1.0}, (failed, waits)


async def _not_ready(d: Daemon) -> bool:
    return (await get(f"{d.url}/readyz"))[0] == 503


async def _assert_clean(am: Alertmanager, d: Daemon, *, auth: str | None = None) -> None:
    held = json.dumps(await am.alerts(auth=auth))
    assert "IntegrationProbeDown" in held
    texts = {
        "what Alertmanager holds": held,
        "the webhook notifications": "\n".join(n.raw.decode() for n in am.notifications()),
        "/api/status": (await get(f"{d.url}/api/status"))[2],
        "/readyz": (await get(f"{d.url}/readyz"))[2],
        "/metrics": (await get(f"{d.url}/metrics"))[2],
        "the daemon log": d.log,
    }
    for where, text in texts.items():
        assert_no_canary(text, where)
        for canary in (CANARY_AM_PASSWORD, CANARY_AM_TOKEN):
            assert canary not in text, f"{canary} leaked into {where}"
