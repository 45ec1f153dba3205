"""The token cache across processes: replicas sharing a real Redis fetch one token between them, follow one
chain of rotated refresh tokens, invalidate only the token that failed, report a fetch that failed once,
and keep working on their own when Redis is unreachable. Two whole daemons sharing Redis, too."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio
from oauth2_server import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, OAuth2Server
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_servers import SHARED_REDIS
from targets import closed_port
from waiting import until

from integration_kit.errors import ErrorClass
from integration_kit.oauth2 import TokenError, TokenGrant
from integration_kit.token_cache import TokenCache
from monitor.app import App
from monitor.settings import parse_config


@pytest.fixture
async def vendor() -> AsyncIterator[OAuth2Server]:
    async with OAuth2Server() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def grant(vendor: OAuth2Server, **fields: object) -> TokenGrant:
    return TokenGrant(token_url=vendor.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                      timeout=2.0, **fields)  # type: ignore[arg-type]


async def test_replicas_fetch_one_token_between_them(
    vendor: OAuth2Server, shared_redis: redis.asyncio.Redis, prefix: str, session: aiohttp.ClientSession
) -> None:
    vendor.delay, vendor.lifetime = 0.3, 600
    caches = [TokenCache(redis=shared_redis, prefix=prefix) for _ in range(4)]
    leases = await asyncio.gather(*(c.get("crm:k", grant(vendor), session) for c in caches))
    assert len(vendor.token_requests) == 1
    assert {lease.token.access_token for lease in leases} == {vendor.issued[0]}
    assert sorted(lease.source for lease in leases) == ["fetched", "redis", "redis", "redis"]
    # The shared copy expires refresh_margin (60 s) before the token: no replica is handed a dying token.
    ttl = await shared_redis.pttl(f"{prefix}{{crm:k}}:token")
    assert 530_000 < ttl <= 540_000
    assert await shared_redis.exists(f"{prefix}{{crm:k}}:lock") == 0  # released


async def test_a_later_replica_reads_the_shared_token(
    vendor: OAuth2Server, shared_redis: redis.asyncio.Redis, prefix: str, session: aiohttp.ClientSession
) -> None:
    first, second = TokenCache(redis=shared_redis, prefix=prefix), TokenCache(redis=shared_redis, prefix=prefix)
    a = await first.get("k", grant(vendor), session)
    b = await second.get("k", grant(vendor), session)
    assert (a.source, b.source) == ("fetched", "redis")
    assert a.token.access_token == b.token.access_token
    again = await second.get("k", grant(vendor), session)
    assert again.source == "memory" and again.waited == 0.0
    assert len(vendor.token_requests) == 1


async def test_invalidate_drops_only_the_token_that_failed(
    vendor: OAuth2Server, shared_redis: redis.asyncio.Redis, prefix: str, session: aiohttp.ClientSession
) -> None:
    first, second = TokenCache(redis=shared_redis, prefix=prefix), TokenCache(redis=shared_redis, prefix=prefix)
    old = (await first.get("k", grant(vendor), session)).token
    await second.get("k", grant(vendor), session)
    await first.invalidate("k", old)  # a 401 seen by the first replica
    new = (await first.get("k", grant(vendor), session)).token
    assert new.access_token != old.access_token
    await second.invalidate("k", old)  # the second replica's 401 to the old token: the new one stays
    assert (await second.get("k", grant(vendor), session)).token == new
    assert len(vendor.token_requests) == 2


async def test_a_failed_fetch_is_reported_to_the_waiting_replicas_not_repeated(
    vendor: OAuth2Server, shared_redis: redis.asyncio.Redis, prefix: str, session: aiohttp.ClientSession
) -> None:
    vendor.delay = 0.3
    bad = TokenGrant(token_url=vendor.token_url, client_id=CLIENT_ID, client_secret="cs_wrong_CANARY_77", timeout=2)
    caches = [TokenCache(redis=shared_redis, prefix=prefix) for _ in range(3)]
    outcomes = await asyncio.gather(*(c.get("k", bad, session) for c in caches), return_exceptions=True)
    assert len(vendor.token_requests) == 1
    assert all(isinstance(o, TokenError) for o in outcomes), outcomes
    assert {o.failure for o in outcomes if isinstance(o, TokenError)} == {
        (ErrorClass.AUTH, "auth: token endpoint: invalid_client (Client authentication failed)")
    }


async def test_a_failure_written_between_a_waiters_read_and_its_lock_is_reported_not_repeated(
    vendor: OAuth2Server, shared_redis: redis.asyncio.Redis, prefix: str, session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A waiter reads (no token, no failure yet), the holder's fetch fails meanwhile (its failure written,
    its lock released), then the waiter takes the free lock: it must find the failure, not ask again."""
    vendor.delay = 0.3
    bad = TokenGrant(token_url=vendor.token_url, client_id=CLIENT_ID, client_secret="cs_wrong_CANARY_78", timeout=2)
    holder, waiter = TokenCache(redis=shared_redis, prefix=prefix), TokenCache(redis=shared_redis, prefix=prefix)
    holding = asyncio.create_task(holder.get("k", bad, session))
    await until(lambda: bool(vendor.token_requests), "the holder's token request")  # it holds the lock
    real_mget = shared_redis.mget

    async def read_then_stall(*keys: str) -> object:  # the waiter's read, answered before the holder is done
        seen = await real_mget(*keys)
        monkeypatch.setattr(shared_redis, "mget", real_mget)
        await asyncio.wait([holding])
        return seen

    monkeypatch.setattr(shared_redis, "mget", read_then_stall)
    outcomes = await asyncio.gather(holding, waiter.get("k", bad, session), return_exceptions=True)
    assert len(vendor.token_requests) == 1
    assert [o.failure for o in outcomes if isinstance(o, TokenError)] == [
        (ErrorClass.AUTH, "auth: token endpoint: invalid_client (Client authentication failed)")
    ] * 2, outcomes


async def test_rotated_refresh_tokens_are_one_chain_across_replicas(
    vendor: OAuth2Server, shared_redis: redis.asyncio.Redis, prefix: str, session: aiohttp.ClientSession
) -> None:
    vendor.rotate, vendor.lifetime = True, 0.2
    refresh = TokenGrant(token_url=vendor.token_url, grant_type="refresh_token", client_id=CLIENT_ID,
                         refresh_token=REFRESH_TOKEN, refresh_margin=0.05, timeout=2)
    caches = [TokenCache(redis=shared_redis, prefix=prefix) for _ in range(3)]
    for round_ in range(4):
        await caches[round_ % 3].get("k", refresh, session)  # each replica in turn, after the last one expired
        await asyncio.sleep(0.25)  # past the token's 0.2 s lifetime: a time is the condition (load only lengthens it)
    presented = [r.form["refresh_token"] for r in vendor.token_requests]
    assert presented == [REFRESH_TOKEN, *vendor.refresh_tokens[:3]]  # never a rotated-away token: no invalid_grant
    assert await shared_redis.get(f"{prefix}{{k}}:refresh") == vendor.refresh_tokens[-1].encode()


async def test_without_redis_each_replica_fetches_its_own_and_keeps_working(
    vendor: OAuth2Server, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = redis.asyncio.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.5,
                                      retry=Retry(NoBackoff(), 0))  # fail at once: this test is not about retries
    caches = [TokenCache(redis=unreachable) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="integration_kit.token_cache"):
        leases = [await c.get("k", grant(vendor), session) for c in caches]
        again = await caches[0].get("k", grant(vendor), session)
    assert [lease.source for lease in leases] == ["fetched", "fetched"]
    assert again.source == "memory"
    assert len(vendor.token_requests) == 2
    assert "Redis unavailable" in caplog.text
    await unreachable.aclose()


async def test_redis_is_left_alone_for_a_while_after_an_error(
    vendor: OAuth2Server, session: aiohttp.ClientSession, prefix: str, shared_redis: redis.asyncio.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real_mget = shared_redis.mget

    async def failing_mget(*keys: str) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise redis.ConnectionError("Redis went away")
        return await real_mget(*keys)

    monkeypatch.setattr(shared_redis, "mget", failing_mget)
    cache = TokenCache(redis=shared_redis, prefix=prefix)
    await cache.get("k", grant(vendor), session)
    await cache.invalidate("k", (await cache.get("k", grant(vendor), session)).token)
    await cache.get("k", grant(vendor), session)  # within the pause: not asked
    assert calls == 1
    monkeypatch.setattr("integration_kit.token_cache.REDIS_PAUSE", 0.0)
    cache._redis_pause_until = 0.0
    await cache.invalidate("k", (await cache.get("k", grant(vendor), session)).token)
    lease = await cache.get("k", grant(vendor), session)
    assert calls == 3 and lease.source == "fetched"  # Redis asked again (read, lock, read), and written: shared again
    assert await shared_redis.exists(f"{prefix}{{k}}:token") == 1


async def test_two_daemons_sharing_redis_fetch_one_token(
    vendor: OAuth2Server, shared_redis: redis.asyncio.Redis
) -> None:
    integration = f"crm{uuid.uuid4().hex[:8]}"
    # Not a cluster: here both daemons probe every check, each needing the token at the same moment.
    text = f"""
monitor: {{listen: "127.0.0.1:0", redis_url: "{SHARED_REDIS}", jitter: 0, shutdown_grace: 1s,
          cluster: {{enabled: false}}}}
integrations:
  {integration}:
    auth: {{kind: oauth2_client_credentials, token_url: "{vendor.token_url}", client_id: {CLIENT_ID},
           client_secret: {CLIENT_SECRET}}}
    checks:
      - {{name: me, kind: http, url: "{vendor.url('/api/me')}", interval: 200ms, timeout: 2s}}
      - {{name: me-too, kind: http, url: "{vendor.url('/api/me')}", interval: 200ms, timeout: 2s}}
"""
    vendor.delay = 0.2  # both daemons start their first runs while the first token is being fetched
    apps = [App(parse_config(text, env={}), components=[]) for _ in range(2)]
    try:
        for app in apps:
            await app.start()
        await until(lambda: all(
            (s := app.status_store.get(integration, name)) is not None and s.runs >= 3 and s.ok
            for app in apps for name in ("me", "me-too")), "three good runs of every check in both daemons")
    finally:
        for app in apps:
            await app.close()
        keys = [k async for k in shared_redis.scan_iter(match=f"im:oauth2:{{{integration}:*", count=1000)]
        if keys:
            await shared_redis.delete(*keys)
    assert len(vendor.token_requests) == 1
    status = apps[0].status_document()["integrations"][integration]["oauth2_tokens"]
    assert [entry["credential"] for entry in status] == [integration]
    assert vendor.issued[0] not in str(apps[0].status_document())
