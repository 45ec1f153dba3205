"""The kit's requests adapter (blocking code) against the misbehaving loopback vendor and a real Redis:
the same classes, retries and typed redacted error as the aiohttp middleware, the shared limiter, and
the counters the monitor reads. The blocking calls run in a thread while the target serves."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis
import redis.asyncio
import requests
from redis_servers import SHARED_REDIS
from targets import Reply, Target, closed_port

from integration_kit.calls import CallError, Expect
from integration_kit.errors import ErrorClass
from integration_kit.limiter import RateLimit
from integration_kit.requests_adapter import KitAdapter
from integration_kit.retry import RetryPolicy
from integration_kit.sync_client import SyncIntegration
from integration_kit.traffic import decode_bucket

CANARY = "sk_live_CANARY_requests_1234"
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


def session_for(kit: SyncIntegration, base: str, *, expect: Expect | None = None) -> requests.Session:
    session = requests.Session()
    session.mount(base, KitAdapter(kit, expect=expect))
    return session


async def test_answers_retries_and_contract_violations(target: Target) -> None:
    target.route("/flaky", Reply(status=503, headers={"Retry-After": "0.2"}), Reply(json={"id": "ch_1"}))
    target.route("/null", Reply(json={"email": None}))
    kit = SyncIntegration("payments", retry=FAST, timeout=5.0)
    http = session_for(kit, target.url("/"))
    resp = await asyncio.to_thread(http.get, target.url("/flaky"))
    assert (resp.status_code, resp.json()) == (200, {"id": "ch_1"})
    first, second = target.hits("/flaky")
    assert second.at - first.at >= 0.2  # Retry-After honoured
    strict = session_for(kit, target.url("/null"), expect=Expect(not_null=("email",)))
    with pytest.raises(CallError) as caught:
        await asyncio.to_thread(strict.get, target.url("/null"))
    assert (caught.value.error_class, caught.value.detail) == (ErrorClass.NULL_FIELD, "null_field: email")
    assert len(target.hits("/null")) == 1
    assert kit.stats.calls == 2 and kit.stats.failed == 1


async def test_a_non_retryable_failure_is_a_redacted_call_error(target: Target, caplog) -> None:
    target.route("/charge", Reply(status=401, json={"error": f"bad key {CANARY}"}))
    kit = SyncIntegration("payments", retry=FAST, secrets=[CANARY])
    http = session_for(kit, target.url("/"))
    with caplog.at_level(logging.DEBUG, logger="integration_kit"), pytest.raises(CallError) as caught:
        await asyncio.to_thread(http.get, target.url("/charge"), params={"key": CANARY},
                                headers={"Authorization": f"Bearer {CANARY}"})
    err = caught.value
    assert (err.error_class, err.status, err.attempts) == (ErrorClass.AUTH, 401, 1)
    assert err.request.headers["Authorization"] == "[REDACTED]"
    assert err.request.url.endswith("/charge?key=[REDACTED]")
    assert err.response_excerpt is not None and "bad key [REDACTED]" in err.response_excerpt
    assert CANARY not in " ".join([str(err), repr(err.request), err.response_excerpt, caplog.text])
    assert "payments: GET" in caplog.text and "auth: 401 Unauthorized (1 attempt)" in caplog.text


async def test_network_failures_get_the_probes_classes(target: Target) -> None:
    target.route("/slow", Reply(json={}, delay=2.0))
    kit = SyncIntegration("payments", retry=RetryPolicy(attempts=2, backoff=0.01), timeout=0.5)
    http = session_for(kit, "http://127.0.0.1")
    with pytest.raises(CallError) as slow:
        await asyncio.to_thread(http.get, target.url("/slow"))
    assert slow.value.error_class is ErrorClass.TIMEOUT
    assert target.hits("/slow") and target.answered("/slow") == 0  # the deadline ended the wait, not the vendor
    with pytest.raises(CallError) as refused:
        await asyncio.to_thread(http.get, f"http://127.0.0.1:{closed_port()}/")
    assert (refused.value.error_class, refused.value.attempts) == (ErrorClass.CONNECT, 2)
    assert refused.value.detail == "connect: connection refused"


async def test_limiter_and_counters_with_a_blocking_redis_client(
    target: Target, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    client = redis.Redis.from_url(SHARED_REDIS)
    kit = SyncIntegration("crm", redis=client, key_prefix=prefix, retry=FAST,
                          rate_limit=RateLimit(rate=10, per=1.0, burst=1, key=f"{prefix}rate:crm"))
    http = session_for(kit, target.url("/"))

    def job() -> float:
        started = time.monotonic()
        with kit:
            for _ in range(4):
                assert http.get(target.url("/ok")).status_code == 200
        return time.monotonic() - started

    elapsed = await asyncio.to_thread(job)
    assert elapsed >= 0.25  # one call per 100 ms after the first
    total = 0  # the calls may straddle a bucket boundary: every bucket of the integration
    async for key in shared_redis.scan_iter(match=f"{prefix}{{crm}}:1*"):
        fields = await shared_redis.hgetall(key)
        total += decode_bucket({k.decode(): v.decode() for k, v in fields.items()}).calls.get("ok", 0)
    assert total == 4
    client.close()
