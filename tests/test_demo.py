"""The demo: the simulated vendor API misbehaves as documented, the bundled config loads and points at
it, the Redis traffic is what the real rate limiters write, and the whole demo shows what issue 2 promises."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import http_sfv
import pytest
import redis.asyncio
import redis.exceptions
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from multidict import CIMultiDict
from processes import ROOT
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_servers import SHARED_REDIS, OwnRedis, tag_of
from waiting import until

from integration_kit.errors import ErrorClass
from integration_kit.oauth2 import basic_authorization
from integration_kit.ratelimit_headers import parse_rate_limit_headers
from integration_kit.webhooks import stats_key
from monitor.demo import Demo
from monitor.demo.oauth import CLIENT_ID as DEMO_CLIENT_ID
from monitor.demo.oauth import CLIENT_SECRET as DEMO_CLIENT_SECRET
from monitor.demo.traffic import DEMO_STREAMS, RateLimiterTraffic, WebhookStream, WebhookTraffic, cleanup
from monitor.demo.vendor import SimulatedVendor, VendorBehaviour
from monitor.quota.service import QuotaService
from monitor.settings import load_config
from monitor.traffic.service import TrafficService
from monitor.webhooks.service import WebhookService


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def vendor(clock: FakeClock) -> AsyncIterator[SimulatedVendor]:
    v = SimulatedVendor(VendorBehaviour(slow_seconds=0.2, hang_seconds=5.0, large_body_bytes=300_000), clock=clock)
    await v.start()
    yield v
    await v.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def call(
    session: aiohttp.ClientSession, vendor: SimulatedVendor, path: str, method: str = "GET"
) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.request(method, f"{vendor.url}{path}") as response:
        return response.status, response.headers.copy(), await response.read()


# -- the vendor's endpoints -----------------------------------------------------------------------------


async def test_index_lists_every_endpoint(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    status, _, body = await call(http, vendor, "/")
    assert status == 200
    listed = {(e["method"], e["path"]) for e in json.loads(body)["endpoints"]}
    assert listed == {(e.method, e.path) for e in vendor.endpoints}
    assert len(listed) >= 18


async def test_healthy_endpoint(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        status, _, body = await call(http, vendor, "/payments/v1/account")
        assert status == 200
        assert json.loads(body)["charges_enabled"] is True


async def test_503_bursts_fail_n_of_every_m_calls(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    statuses = [(await call(http, vendor, "/payments/v1/balance"))[0] for _ in range(12)]
    assert statuses == [503, 503, 503, 200, 200, 200] * 2
    _, _, body = await call(http, vendor, "/payments/v1/balance")  # call 12: a failing one again
    assert json.loads(body)["error"]["type"] == "api_error"
    for _ in range(2):
        await call(http, vendor, "/payments/v1/balance")
    status, _, body = await call(http, vendor, "/payments/v1/balance")
    assert status == 200
    assert isinstance(json.loads(body)["available"][0]["amount"], int)


async def test_429_with_retry_after(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    results = [await call(http, vendor, "/payments/v1/charges") for _ in range(8)]
    assert [r[0] for r in results] == [429, 429, 200, 200] * 2
    assert results[0][1]["Retry-After"] == "1"
    assert "Retry-After" not in results[2][1]
    assert json.loads(results[2][2])["data"][0]["id"].startswith("ch_")


async def test_null_field(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    status, _, body = await call(http, vendor, "/payments/v1/customers/cus_demo")
    data = json.loads(body)
    assert status == 200
    assert "email" in data and data["email"] is None


async def test_missing_field_and_ietf_ratelimit_headers(
    vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    clock.now += 5.0  # half-way through a 10 s burst window
    status, headers, body = await call(http, vendor, "/crm/v3/contacts")
    assert status == 200
    contact = json.loads(body)["results"][0]
    assert "id" not in contact and contact["hs_object_id"]
    policy, state = http_sfv.List(), http_sfv.List()
    policy.parse(headers["RateLimit-Policy"].encode())
    state.parse(headers["RateLimit"].encode())
    assert [(p.value, p.params["q"], p.params["w"]) for p in policy] == [("burst", 100, 10), ("daily", 25_000, 86_400)]
    burst, daily = state[0], state[1]
    assert (burst.value, burst.params["r"], burst.params["t"]) == ("burst", 100 - 31, 5)
    assert daily.value == "daily" and daily.params["r"] == 25_000 - 18_015
    assert daily.params["t"] == 86_400 - int(clock.now) % 86_400


async def test_auth_failure(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    status, headers, body = await call(http, vendor, "/crm/v3/owners")
    assert status == 401
    assert "invalid_token" in headers["WWW-Authenticate"]
    assert json.loads(body)["category"] == "EXPIRED_AUTHENTICATION"


async def test_oauth2_tokens_expire_and_are_revoked_early(
    vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    token_url = f"{vendor.url}/crm/oauth/v1/token"
    basic = {"Authorization": basic_authorization(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)}
    wrong = {"Authorization": basic_authorization(DEMO_CLIENT_ID, "wrong-secret")}
    async with http.post(token_url, data={"grant_type": "client_credentials"}, headers=wrong) as r:
        assert (r.status, (await r.json())["error"]) == (401, "invalid_client")

    async def token() -> str:
        async with http.post(token_url, data={"grant_type": "client_credentials"}, headers=basic) as response:
            body = await response.json()
            assert body["expires_in"] == vendor.behaviour.token_lifetime
            return str(body["access_token"])

    async def deals(access_token: str) -> int:
        async with http.get(f"{vendor.url}/crm/v3/objects/deals",
                            headers={"Authorization": f"Bearer {access_token}"}) as response:
            return response.status

    first = await token()
    assert await deals(first) == 200
    assert await deals("forged") == 401
    clock.now += vendor.behaviour.token_lifetime + 1
    assert await deals(first) == 401  # expired
    second = await token()
    assert await deals(second) == 200
    clock.now = vendor.started_at + vendor.behaviour.token_revoke_every + 1  # the vendor rotated its key
    assert await deals(second) == 401  # revoked long before its expires_in
    assert await deals(await token()) == 200


async def test_graphql_cost_bucket_drains_throttles_in_a_200_and_refills(
    vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    url = f"{vendor.url}/storefront/admin/api/2024-01/graphql.json"
    cycle = vendor.behaviour.graphql_cycle

    async def query(text: str = "{ shop { name } }") -> dict[str, Any]:
        async with http.post(url, json={"query": text}) as response:
            assert response.status == 200
            return dict(await response.json())

    levels = []
    for at in (0.05, 0.3, 0.6):
        clock.now = vendor.started_at + at * cycle
        body = await query()
        assert body["data"]["shop"]["name"] == "Demo Store"
        levels.append(body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"])
    assert levels == sorted(levels, reverse=True) and levels[0] > 900 > 500 > levels[-1]
    clock.now = vendor.started_at + 0.72 * cycle  # the bucket is empty: throttled, in a 200
    throttled = await query()
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED" and "data" not in throttled
    clock.now = vendor.started_at + 0.99 * cycle
    assert (await query())["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] > 900
    legacy = await query("{ shop { legacyResourceId } }")
    assert legacy["data"] is None and legacy["errors"][0]["extensions"]["code"] == "undefinedField"


async def test_test_objects_for_the_flow_lag_now_and_then(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    base = f"{vendor.url}/payments/v1/test_charges"
    statuses = []
    for _ in range(vendor.behaviour.flow_lag_every):
        async with http.post(base, json={"amount": 100}) as created:
            assert created.status == 201 and created.headers["ETag"]
            oid = (await created.json())["id"]
        async with http.get(f"{base}/{oid}") as read:
            statuses.append(read.status)
        async with http.delete(f"{base}/{oid}") as deleted:
            assert deleted.status == 204
    assert statuses == [200] * (vendor.behaviour.flow_lag_every - 1) + [404]  # not replicated yet
    assert vendor.objects.live == {}


async def test_salesforce_usage_climbs(vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock) -> None:
    _, first, _ = await call(http, vendor, "/crm/services/data/v59.0/limits")
    clock.now += 100
    _, later, body = await call(http, vendor, "/crm/services/data/v59.0/limits")
    assert first["Sforce-Limit-Info"] == "api-usage=3600/5000"
    assert later["Sforce-Limit-Info"] == "api-usage=3800/5000"
    assert json.loads(body)["DailyApiRequests"]["Remaining"] == 1200


async def test_slow_response_answers_late(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, body = await call(http, vendor, "/shipping/v1/rates")
    assert status == 200 and json.loads(body)["rates"]
    assert loop.time() - started >= 0.2  # behaviour, not speed: it must not answer before slow_seconds


async def test_very_slow_response_outlasts_a_deadline(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    with pytest.raises(TimeoutError):
        async with http.get(
            f"{vendor.url}/shipping/v1/track/1Z999AA10123456784", timeout=aiohttp.ClientTimeout(total=0.3)
        ) as response:
            await response.read()
    # The hanging handler must not keep the vendor from shutting down (close() in the fixture).


async def test_empty_body(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    status, headers, body = await call(http, vendor, "/shipping/v1/labels", method="POST")
    assert status == 200 and body == b""
    assert headers["Content-Type"].startswith("application/json")


async def test_incident_window(vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock) -> None:
    status, headers, _ = await call(http, vendor, "/shipping/v1/status")
    assert status == 503 and headers["Retry-After"] == "30"
    clock.now += vendor.behaviour.incident_seconds + 1
    status, _, body = await call(http, vendor, "/shipping/v1/status")
    assert status == 200 and json.loads(body)["status"] == "operational"
    clock.now += vendor.behaviour.incident_period
    assert (await call(http, vendor, "/shipping/v1/status"))[0] == 200
    clock.now += vendor.behaviour.incident_period - vendor.behaviour.incident_seconds - 1
    assert (await call(http, vendor, "/shipping/v1/status"))[0] == 503  # the next incident


async def test_malformed_json(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    for _ in range(2):  # an HTML page, then a truncated document; both labelled JSON
        status, headers, body = await call(http, vendor, "/messaging/v1/messages")
        assert status == 200 and body
        assert headers["Content-Type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)


async def test_github_rate_limit_headers_climb_and_reset(
    vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    window = vendor.behaviour.rate_window
    seen = []
    for offset in (0.0, 0.2 * window, 0.6 * window):
        clock.now = vendor.started_at + offset
        status, headers, _ = await call(http, vendor, "/messaging/v1/usage")
        assert status == 200
        used, limit = int(headers["x-ratelimit-used"]), int(headers["x-ratelimit-limit"])
        assert int(headers["x-ratelimit-remaining"]) == limit - used
        assert int(headers["x-ratelimit-reset"]) == math.ceil(vendor.started_at + window)
        assert headers["x-ratelimit-resource"] == "core"
        seen.append(used / limit)
    assert seen[0] < 0.55 < seen[1] < 0.65 < 0.85 < seen[2] < 0.9
    # Near the end of the window the limit is exhausted: 429 until the reset.
    clock.now = vendor.started_at + 0.9 * window
    status, headers, _ = await call(http, vendor, "/messaging/v1/usage")
    assert status == 429
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["Retry-After"] == str(math.ceil(0.1 * window))
    # …and after the reset, back to half.
    clock.now = vendor.started_at + window + 1
    status, headers, _ = await call(http, vendor, "/messaging/v1/usage")
    assert status == 200
    assert int(headers["x-ratelimit-reset"]) == math.ceil(vendor.started_at + 2 * window)
    assert 0.5 <= int(headers["x-ratelimit-used"]) / 5000 < 0.55


async def test_large_body(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    status, headers, body = await call(http, vendor, "/messaging/v1/export")
    assert status == 200
    assert int(headers["Content-Length"]) == len(body) == 300_000
    assert json.loads(body)["messages"][0]["status"] == "delivered"
    # A client that stops reading at its cap: the vendor copes and keeps serving.
    async with http.get(f"{vendor.url}/messaging/v1/export") as response:
        await response.content.readexactly(1024)
        response.close()
    assert (await call(http, vendor, "/payments/v1/account"))[0] == 200


async def test_disconnect_mid_body(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{vendor.url}/messaging/v1/stream") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_shopify_bucket_fills_then_429(
    vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    cycle = vendor.behaviour.shopify_cycle
    status, headers, _ = await call(http, vendor, "/storefront/admin/api/2024-01/shop.json")
    assert status == 200 and headers["X-Shopify-Shop-Api-Call-Limit"] == "9/40"
    clock.now = vendor.started_at + 0.5 * cycle
    status, headers, _ = await call(http, vendor, "/storefront/admin/api/2024-01/shop.json")
    assert status == 200 and headers["X-Shopify-Shop-Api-Call-Limit"] == "33/40"
    clock.now = vendor.started_at + 0.74 * cycle
    status, headers, _ = await call(http, vendor, "/storefront/admin/api/2024-01/shop.json")
    assert status == 429
    assert headers["X-Shopify-Shop-Api-Call-Limit"] == "40/40"
    assert headers["Retry-After"] == "2.0"
    clock.now = vendor.started_at + 0.95 * cycle  # draining
    status, headers, _ = await call(http, vendor, "/storefront/admin/api/2024-01/shop.json")
    assert status == 200 and int(headers["X-Shopify-Shop-Api-Call-Limit"].split("/")[0]) < 20


async def test_retired_version_and_wrong_type(vendor: SimulatedVendor, http: aiohttp.ClientSession) -> None:
    status, _, body = await call(http, vendor, "/storefront/admin/api/2023-01/orders.json")
    assert status == 410 and "no longer supported" in json.loads(body)["errors"]
    status, _, body = await call(http, vendor, "/storefront/admin/api/2024-01/inventory_levels.json")
    available = json.loads(body)["inventory_levels"][0]["available"]
    assert status == 200 and isinstance(available, str) and available.isdigit()


async def test_bodies_are_reproducible_per_seed(clock: FakeClock, http: aiohttp.ClientSession) -> None:
    async def bodies(seed: int) -> list[bytes]:
        v = SimulatedVendor(VendorBehaviour(seed=seed, slow_seconds=0.0), clock=clock)
        await v.start()
        try:
            paths = ["/payments/v1/balance"] * 6 + ["/payments/v1/charges"] * 4 + ["/crm/v3/contacts"]
            return [(await call(http, v, p))[2] for p in paths]
        finally:
            await v.close()

    first, again, other = await bodies(1), await bodies(1), await bodies(2)
    assert first == again
    assert first != other


async def test_quota_headers_are_understood_by_the_monitor(
    vendor: SimulatedVendor, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    expected = {
        "/crm/v3/contacts": {"burst": 100, "daily": 25_000},
        "/crm/services/data/v59.0/limits": {"api-usage": 5000},
        "/messaging/v1/usage": {"core": 5000},
        "/storefront/admin/api/2024-01/shop.json": {"default": 40},
    }
    for path, limits in expected.items():
        _, headers, _ = await call(http, vendor, path)
        observed = {o.policy: o for o in parse_rate_limit_headers(headers, now=clock.now)}
        assert {name: o.limit for name, o in observed.items()} == limits, path
        assert all(o.used is not None and 0 < o.used <= o.limit for o in observed.values() if o.limit), path


# -- the bundled config ---------------------------------------------------------------------------------

BUNDLED = Path(str(resources.files("monitor.demo").joinpath("config.yaml")))


def test_bundled_config_loads_and_targets_only_the_vendor() -> None:
    vendor = SimulatedVendor()
    base, tls_base = "http://127.0.0.1:65000", "https://127.0.0.1:65001"
    config = load_config(BUNDLED, env={"DEMO_VENDOR_URL": base, "DEMO_VENDOR_TLS_URL": tls_base})
    assert set(config.integrations) == {"payments", "crm", "shipping", "messaging", "storefront"}
    routes = {(e.method, e.path) for e in vendor.endpoints}
    for integration, check in config.iter_checks():
        # A flow sends one request per step; a step's reference to an earlier response is a path parameter.
        for request in [*check.steps, *check.cleanup] if check.kind == "flow" else [check]:
            url = re.sub(r"\$\{steps\.[^}]+\}", "{id}", request.url)
            assert url.startswith((base + "/", tls_base + "/")), (integration, check.name)
            path = url.removeprefix(base).removeprefix(tls_base)
            assert (request.method, path) in routes, (integration, check.name)
        assert 5.0 <= check.interval <= 10.0
    for name, section in config.integrations.items():
        assert section.notes is not None and section.notes.is_file(), name
        assert "quirks" in section.notes.read_text(encoding="utf-8")
    assert config.monitor.listen == "127.0.0.1:9478"
    assert config.monitor.redis_url is None  # no REDIS_URL given: the demo needs no Redis
    assert config.alerting.slack is None  # console notifier
    sources = {q.source for i in config.integrations.values() for q in i.quotas}
    assert sources == {"headers", "redis"}


def test_bundled_config_takes_listen_prefix_and_redis_from_env() -> None:
    config = load_config(
        BUNDLED,
        env={
            "DEMO_VENDOR_URL": "http://127.0.0.1:1",
            "DEMO_VENDOR_TLS_URL": "https://127.0.0.1:2",
            "DEMO_LISTEN": "127.0.0.1:0",
            "DEMO_KEY_PREFIX": "imdemo-x",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
        },
    )
    assert config.monitor.listen == "127.0.0.1:0"
    assert config.monitor.redis_url is not None
    payments = config.integrations["payments"]
    assert payments.quotas[0].match == "imdemo-x:rl:payments:*"  # type: ignore[union-attr]
    assert payments.webhooks is not None and payments.webhooks.key_prefix == "imdemo-x:wh:"


# -- what the demo writes into Redis --------------------------------------------------------------------

@pytest.fixture
def demo_prefix(prefix: str) -> str:
    """The demo's key prefix for this test (``DEMO_KEY_PREFIX``: no trailing colon); the shared_redis
    fixture deletes what a failing test left under it."""
    return f"imdemo-{tag_of(prefix)}"


async def test_rate_limiter_traffic_is_what_the_libraries_write(
    shared_redis: redis.asyncio.Redis, demo_prefix: str
) -> None:
    traffic = RateLimiterTraffic(shared_redis, demo_prefix)
    try:
        await traffic.step(10.0)
        await traffic.step(10.0)
        busiest = f"{demo_prefix}:rl:payments:acct_0000"
        assert await shared_redis.get(busiest) == b"220"  # 11 calls/s for 20 s
        assert 0 < await shared_redis.pttl(busiest) <= 60_000
        merchants = [k async for k in shared_redis.scan_iter(match=f"{demo_prefix}:rl:payments:*")]
        assert len(merchants) == 8
        # The `limits` package itself reads the sync worker's fixed window: 280 of 1000 used.
        # Sharing our client's pool: closed with it (the options are passed through to redis-py).
        pool: Any = shared_redis.connection_pool
        storage = RedisStorage(f"async+{SHARED_REDIS}", implementation="redispy", connection_pool=pool)
        stats = await FixedWindowRateLimiter(storage).get_window_stats(
            RateLimitItemPerMinute(1000), demo_prefix, "crm", "sync"
        )
        assert stats.remaining == 1000 - 280
        assert 0 < stats.reset_time - time.time() <= 60
    finally:
        deleted = await cleanup(shared_redis, demo_prefix)
    assert deleted == 9
    assert [k async for k in shared_redis.scan_iter(match=f"*{demo_prefix}*")] == []


async def test_rate_limiter_traffic_survives_redis_errors(caplog: pytest.LogCaptureFixture) -> None:
    # A Redis that is not there: the background task logs and keeps going; close() ends it.
    client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    traffic = RateLimiterTraffic(client, "imdemo-test-unreachable", tick=0.05)
    traffic.start()
    await until(lambda: "could not write rate-limit counters" in caplog.text, "the failed write logged")
    assert traffic.running
    await traffic.close()
    assert "could not write rate-limit counters" in caplog.text
    assert not traffic.running
    await client.aclose()


async def test_webhook_traffic_delivers_duplicates_to_the_ledger_receiver(
    shared_redis: redis.asyncio.Redis, demo_prefix: str
) -> None:
    stream = WebhookStream(integration="payments", event_types=("invoice.paid",), every=0.01, duplicate_every=2)
    traffic = WebhookTraffic(shared_redis, demo_prefix, streams=(stream,))
    await traffic.start()
    try:
        await until(lambda: traffic.results[("payments", "duplicate")], "3 duplicate deliveries",
                    holds=lambda n: n >= 3)
    finally:
        await traffic.close()
    processed, duplicates = traffic.results[("payments", "processed")], traffic.results[("payments", "duplicate")]
    assert duplicates >= 3
    assert set(traffic.results) <= {("payments", "processed"), ("payments", "duplicate")}
    # Every 2nd event is delivered twice; the receiver recorded exactly that in the monitor's keys.
    # (close() may cancel the loop between an event's two copies: one duplicate fewer.)
    assert (processed - 1) // 2 <= duplicates <= (processed + 1) // 2
    stats = await shared_redis.hgetall(stats_key("payments", traffic.ledger_prefix))
    # (a delivery cancelled by close() may have been recorded without its answer being counted: +1)
    assert processed + duplicates <= int(stats[b"received"]) <= processed + duplicates + 1
    assert duplicates <= int(stats[b"duplicates"]) <= duplicates + 1
    assert float(stats[b"last_event_ts"]) > 0
    assert await cleanup(shared_redis, demo_prefix) >= processed + 2
    assert [k async for k in shared_redis.scan_iter(match=f"*{demo_prefix}*")] == []


def test_webhook_events_are_seeded_and_duplicated_every_nth() -> None:
    stream = DEMO_STREAMS[0]
    client = redis.asyncio.Redis()  # never connected: events() is pure
    first = list(itertools.islice(WebhookTraffic(client, "p", seed=1).events(stream), 8))
    again = list(itertools.islice(WebhookTraffic(client, "p", seed=1).events(stream), 8))
    other = list(itertools.islice(WebhookTraffic(client, "p", seed=2).events(stream), 8))
    assert first == again and first != other
    assert [copies for _, copies in first] == [1, 1, 1, 2] * 2
    assert len({event["id"] for event, _ in first}) == 8
    assert {event["type"] for event, _ in first} <= set(stream.event_types)


# -- the whole demo -------------------------------------------------------------------------------------

# Every probe metric family (README, "Metrics"): the demo must show all of them.
PROBE_FAMILIES = (
    "integration_probe_success",
    "integration_probe_duration_seconds",
    "integration_probe_phase_seconds",
    "integration_probe_runs_total",
    "integration_probe_errors_total",
    "integration_probe_retries_total",
    "integration_probe_http_status_code",
    "integration_probe_tls_cert_expiry_timestamp_seconds",
)


def error_classes(status: dict[str, Any]) -> set[str]:
    return {
        check["error_class"]
        for integration in status["integrations"].values()
        for check in integration["checks"].values()
        if check.get("error_class")
    }


Samples = dict[str, list[tuple[dict[str, str], float]]]


def metric_samples(text: str) -> Samples:
    """Sample name → (labels, value) of each series."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def missing_families(samples: Samples) -> list[str]:
    return [f for f in PROBE_FAMILIES if not any(name == f or name.startswith(f + "_") for name in samples)]


async def test_demo_shows_five_error_classes_and_every_probe_metric_then_stops_on_sigterm(
    http: aiohttp.ClientSession,
) -> None:
    demo = Demo(listen="127.0.0.1:0")
    task = asyncio.create_task(demo.run())
    loop = asyncio.get_running_loop()
    started = loop.time()
    classes: set[str] = set()
    samples: Samples = {}

    async def shown() -> tuple[list[str], list[str]]:
        """The error classes /api/status shows, and the probe metric families /metrics lacks."""
        nonlocal classes, samples
        assert not task.done(), "the demo stopped"  # (its error is shown below)
        url = demo.monitor_url
        if url is not None:
            async with http.get(f"{url}/api/status") as response:
                classes = error_classes(await response.json())
            async with http.get(f"{url}/metrics") as response:
                samples = metric_samples(await response.text())
        return sorted(classes), sorted(missing_families(samples) if samples else ["(no /metrics yet)"])

    try:
        # Issue 2: "/metrics with every probe metric family within 30 s and /api/status shows at least five
        # distinct error classes". The bound is that promise; the time it took is printed.
        await until(shown, "five error classes in /api/status and every probe metric family in /metrics",
                    holds=lambda seen: len(seen[0]) >= 5 and not seen[1], within=30.0, every=0.5)
        print(f"demo: {len(classes)} error classes and all probe families after {loop.time() - started:.1f}s")
        assert classes <= {c.value for c in ErrorClass}
        # The error counter carries the same classes, and the vendor was the only target.
        counted = {labels["error_class"] for labels, _ in samples["integration_probe_errors_total"]}
        assert classes <= counted
        integrations = {labels["integration"] for labels, _ in samples["integration_probe_success"]}
        assert integrations <= {"payments", "crm", "shipping", "messaging", "storefront"}
    finally:
        # Only while the demo runs is the daemon's own SIGTERM handler installed; a demo that already ended
        # (it failed) must show its error, not have pytest itself killed by the signal.
        if task.done():
            task.result()
            pytest.fail("the demo stopped before it was sent SIGTERM")
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            pytest.fail("the demo is stopping (its SIGTERM handler is gone) before it was sent SIGTERM")
        assert demo.monitor_url is not None
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own handler is installed: it stops cleanly
        assert await asyncio.wait_for(task, timeout=30) == 0
    # Everything is down again: the vendor no longer answers.
    assert demo.vendor.url is not None
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, demo.vendor, "/payments/v1/account")


async def test_demo_with_redis_feeds_the_quota_webhook_and_traffic_readers_then_cleans_up(
    http: aiohttp.ClientSession, shared_redis: redis.asyncio.Redis, demo_prefix: str
) -> None:
    demo = Demo(listen="127.0.0.1:0", redis_url=SHARED_REDIS, key_prefix=demo_prefix,
                components=[QuotaService, WebhookService, TrafficService])
    await demo.start()

    def series(samples: Samples, name: str, **match: str) -> list[float]:
        return [v for labels, v in samples.get(name, []) if all(labels.get(k) == x for k, x in match.items())]

    def complete(samples: Samples) -> bool:
        return bool(
            series(samples, "integration_quota_used", integration="payments", source="redis")
            and series(samples, "integration_quota_used", integration="crm", source="redis")
            and series(samples, "integration_quota_used", integration="messaging", source="headers")
            and any(v >= 1 for v in series(samples, "integration_webhook_duplicates_total", integration="payments"))
            and series(samples, "integration_webhook_last_event_timestamp_seconds", integration="shipping")
            and series(samples, "integration_traffic_requests_total", integration="payments", error_class="ok")
            and series(samples, "integration_traffic_throttled_total", integration="crm")
        )

    samples: Samples = {}

    async def readers_series() -> Samples:
        """The series of the quota, webhook and traffic readers (all the samples kept in ``samples``)."""
        nonlocal samples
        async with http.get(f"{demo.monitor_url}/metrics") as response:
            samples = metric_samples(await response.text())
        return {k: v for k, v in samples.items() if any(w in k for w in ("quota", "webhook", "traffic"))}

    try:
        assert demo.monitor_url is not None and demo.webhooks is not None
        await until(readers_series, "every reader's series from the demo's services", holds=complete, every=0.5)
        assert samples["integration_monitor_redis_up"] == [({}, 1.0)]
        # The counters the demo wrote are the ones the readers saw.
        assert series(samples, "integration_quota_limit", integration="payments", source="redis") == [600.0]
        # crm: the sync worker's `limits` counter, and the sync job's kit limiter (8 a second).
        assert sorted(series(samples, "integration_quota_limit", integration="crm", source="redis")) == [8.0, 1000.0]
        # Real traffic: the services' calls through the kit, counted by the monitor.
        assert demo.kit_traffic is not None
        ok_calls = series(samples, "integration_traffic_requests_total", integration="payments", error_class="ok")[0]
        assert 0 < ok_calls <= demo.kit_traffic.payments.stats.calls
        received = series(samples, "integration_webhook_events_total", integration="payments")[0]
        assert (
            0
            < received
            <= demo.webhooks.results[("payments", "processed")] + demo.webhooks.results[("payments", "duplicate")]
        )
    finally:
        await demo.close()
    assert [k async for k in shared_redis.scan_iter(match=f"*{demo_prefix}*")] == []


async def test_demo_with_three_replicas_splits_the_checks_and_names_one_owner_per_integration(
    http: aiohttp.ClientSession, shared_redis: redis.asyncio.Redis, demo_prefix: str
) -> None:
    demo = Demo(listen="127.0.0.1:0", redis_url=SHARED_REDIS, key_prefix=demo_prefix, components=[], replicas=3)
    await demo.start()
    ids = ["demo-1", "demo-2", "demo-3"]
    try:
        assert [app.config.monitor.cluster.replica_id for app in demo.apps] == ids
        checks = sum(len(i.checks) for i in demo.apps[0].config.integrations.values())
        statuses: list[Any] = []

        async def views() -> list[list[str]]:
            """Each replica's view of the cluster (their whole /api/status kept in ``statuses``)."""
            statuses[:] = []
            for app in demo.apps:
                async with http.get(f"{app.server.url}/api/status") as response:
                    statuses.append(await response.json())
            return [s["monitor"]["cluster"]["view"] for s in statuses]

        await until(views, f"every replica to see {ids}", holds=lambda seen: seen == [ids] * 3, every=0.5)
        clusters = [s["monitor"]["cluster"] for s in statuses]
        shares = [c["owned_checks"] for c in clusters]
        assert sum(shares) == checks and all(shares), shares  # each replica a share, together every check
        owners = [{name: i["owner"] for name, i in s["integrations"].items()} for s in statuses]
        assert owners[0] == owners[1] == owners[2] and set(owners[0].values()) <= set(ids)
        owned = sorted(i for c in clusters for i in c["owned_integrations"])
        assert owned == sorted(owners[0])  # each integration owned once
    finally:
        await demo.close()
    assert [k async for k in shared_redis.scan_iter(match=f"*{demo_prefix}*")] == []


def test_demo_replicas_need_a_redis() -> None:
    with pytest.raises(ValueError, match=r"replicas: 3 replicas share the work through Redis"):
        Demo(replicas=3)
    with pytest.raises(ValueError, match=r"replicas: expected 1 to 9, got 0"):
        Demo(replicas=0, redis_url=SHARED_REDIS)
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--replicas", "3"], capture_output=True, text=True, timeout=60,
        cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )
    assert done.returncode == 2, done.stderr
    assert "--redis-url URL or $REDIS_URL" in done.stderr


def test_the_vendor_port_cannot_be_one_the_replicas_listen_on() -> None:
    """The replicas listen on consecutive ports from --listen's: a --vendor-port among them is refused
    before anything starts, naming both options (it used to fail at the replica's bind, naming --listen
    only, after the vendor and the first replicas had started)."""
    with pytest.raises(ValueError, match=r"--vendor-port 9101 is one of the ports of --listen 127\.0\.0\.1:9100 "
                                         r"with --replicas 3 \(9100-9102\)"):
        Demo(listen="127.0.0.1:9100", vendor_port=9101, replicas=3, redis_url=SHARED_REDIS)
    with pytest.raises(ValueError, match=r"--vendor-port 9100 is the port of --listen 127\.0\.0\.1:9100"):
        Demo(listen="127.0.0.1:9100", vendor_port=9100)
    with pytest.raises(ValueError, match=r"--listen 127\.0\.0\.1:65534 with --replicas 3: ports 65534-65536, "
                                         r"past 65535"):
        Demo(listen="127.0.0.1:65534", replicas=3, redis_url=SHARED_REDIS)
    Demo(listen="127.0.0.1:9100", vendor_port=9103, replicas=3, redis_url=SHARED_REDIS)  # next to them: fine
    Demo(listen="127.0.0.1:0", vendor_port=9100, replicas=3, redis_url=SHARED_REDIS)  # ports the system picks
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--replicas", "2", "--listen", "127.0.0.1:9100", "--vendor-port",
         "9101", "--redis-url", SHARED_REDIS], capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert "--vendor-port 9101 is one of the ports of --listen 127.0.0.1:9100 with --replicas 2" in done.stderr


def test_demo_command_reports_a_taken_port_and_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "monitor", "demo", "--listen", f"127.0.0.1:{port}", "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        )
    assert done.returncode == 1, done.stderr
    messages = [json.loads(line)["message"] for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(m.startswith("simulated vendor API on http://127.0.0.1:") for m in messages)
    assert any("demo could not start" in m and "--listen" in m for m in messages)


async def test_a_signal_read_as_the_daemon_takes_the_signals_over_stops_it() -> None:
    """The loop reads a signal and queues its handler's call in one turn, the run's own call may come first:
    a SIGTERM read as the integrations finished starting then reaches the demo's handler after app.run()
    installed its own. It must stop the daemon too (it set an event nobody waited for any more, and the demo
    ran on: the command test below hung about 1 run in 15 under load)."""
    demo = Demo(listen="127.0.0.1:0")
    start_integrations = demo._start_integrations

    async def started_as_a_sigterm_is_read() -> None:
        await start_integrations()
        loop = asyncio.get_running_loop()
        resumed = loop.create_future()
        loop.call_soon(resumed.set_result, None)  # ahead of the loop's read of the signal in the same turn
        os.kill(os.getpid(), signal.SIGTERM)  # the demo's handler is installed: the loop reads it, no default
        await resumed

    demo._start_integrations = started_as_a_sigterm_is_read  # type: ignore[method-assign]
    async with asyncio.timeout(60):
        assert await demo.run() == 0


async def test_demo_command_stops_cleanly_on_sigterm_while_its_integrations_start(own_redis: OwnRedis) -> None:
    """SIGTERM right after the simulated vendor is up (the integrations' traffic is starting, the daemon
    not yet running): exit 0 and every demo key deleted, not killed by the signal with the keys left over."""
    await own_redis.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "demo", "--listen", "127.0.0.1:0",
        cwd=ROOT, env={**os.environ, "REDIS_URL": own_redis.url},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("simulated vendor API on" in line for line in log):
                line = await proc.stderr.readline()
                assert line, "demo exited before starting its vendor:\n" + "".join(log)
                log.append(line.decode())
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            log += [line.decode() for line in (await proc.stderr.read()).splitlines(keepends=True)]
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(log)
    assert code == 0, text
    assert "SIGTERM received: stopping" in text and "demo: deleted" in text, text
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        assert [key async for key in client.scan_iter(match="*imdemo*")] == []
    finally:
        await client.aclose()
