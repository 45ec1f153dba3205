"""Quota alerts on the limits a vendor announces in its response headers, through the daemon (in process)
against a loopback API.

Each response that announces limits replaces what the previous one announced (monitor/quota/service.py): a
policy it no longer names has no series any more. Its quota alert must resolve with it, as an alert of a
quota a reload removed does; before, the rule judged only the policies announced now, and the alert of one
that went away stayed firing for good, with no series left to say why. A policy that is still announced keeps
its alert, even when the response leaves its usage out, and a response without any quota header changes
nothing. A lone policy is labelled with the quota's plain name, several with ``<name>/<policy>`` each: a
vendor going from one policy to two (or back) moves the series, and the alerts of the old labels resolve.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from targets import Reply, Target
from waiting import until

from monitor.app import App
from monitor.settings import parse_config

BURST_NEARLY_USED = {"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400',
                     "RateLimit": '"burst";r=2;t=30, "daily";r=100;t=40000'}  # burst 98 %, daily 90 %
# Both policies announced, the state of only one: the IETF draft lets a server leave a policy out of RateLimit
# (burst's usage is unknown now, not over).
BURST_UNSAID = {"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400', "RateLimit": '"daily";r=100;t=40000'}
DAILY_ONLY = {"RateLimit-Policy": '"daily";q=1000;w=86400', "RateLimit": '"daily";r=100;t=40000'}
BURST_ONLY = {"RateLimit-Policy": '"burst";q=100;w=60', "RateLimit": '"burst";r=2;t=30'}  # burst 98 %


def _config(target: Target) -> str:
    return json.dumps({
        "monitor": {"listen": "127.0.0.1:0", "evaluation_interval": "200ms"},
        "integrations": {"acme": {
            "checks": [{"name": "api", "kind": "http", "url": target.url("/limits"), "interval": "200ms"}],
            "quotas": [{"name": "api-headers", "source": "headers", "check": "api"}],
            "alerts": {"error_rate": {"enabled": False}, "latency": {"enabled": False},
                       "probe_down": {"enabled": False}},
        }},
    })


def _firing(app: App) -> list[str]:
    return app.status_document()["components"]["alerts"]["alerts"]["firing"]


@pytest.fixture
async def app(target: Target) -> AsyncIterator[App]:
    target.route("/limits", *[Reply(json={"ok": True}, headers=BURST_NEARLY_USED)] * 10_000)
    daemon = App(parse_config(_config(target)))
    await daemon.start()
    yield daemon
    await daemon.close()


async def test_the_alert_of_a_policy_no_longer_announced_resolves(app: App, target: Target) -> None:
    burst = {"acme/quota/api-headers/burst/critical", "acme/quota/api-headers/burst/warning"}
    daily = "acme/quota/api-headers/daily/warning"
    await until(lambda: burst | {daily} <= set(_firing(app)), "the burst and daily quota alerts")

    for headers, what in (({}, "without quota headers"), (BURST_UNSAID, "leaving burst's usage out")):
        target.route("/limits", *[Reply(json={"ok": True}, headers=headers)] * 10_000)  # changes nothing
        runs = len(target.hits("/limits"))
        await until(lambda: len(target.hits("/limits")) >= runs + 3, f"three runs {what}")  # noqa: B023
        assert burst | {daily} <= set(_firing(app)), what

    # Burst is gone; daily, still at 90 %, is the lone policy now: the quota's plain name.
    target.route("/limits", *[Reply(json={"ok": True}, headers=DAILY_ONLY)] * 10_000)
    plain = "acme/quota/api-headers/warning"
    await until(lambda: not (burst | {daily}) & set(_firing(app)) and plain in _firing(app),
                "the alerts of the two policies to resolve, the plain name's to fire")
    assert "acme/quota/api-headers/critical" not in _firing(app)


async def test_a_vendor_going_from_one_policy_to_two_and_back_leaves_no_alert_behind(app: App, target: Target) -> None:
    plain = {"acme/quota/api-headers/critical", "acme/quota/api-headers/warning"}
    named = {"acme/quota/api-headers/burst/critical", "acme/quota/api-headers/burst/warning",
             "acme/quota/api-headers/daily/warning"}
    for headers, firing, gone in ((BURST_ONLY, plain, named), (BURST_NEARLY_USED, named, plain),
                                  (BURST_ONLY, plain, named)):
        target.route("/limits", *[Reply(json={"ok": True}, headers=headers)] * 10_000)
        await until(lambda: firing <= set(_firing(app)) and not gone & set(_firing(app)),  # noqa: B023
                    f"{sorted(firing)} firing and nothing of {sorted(gone)}")
