"""The processed-event-ID helper against a real Redis: atomic across processes, release only of one's own
claim, counters and key names as documented."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp.test_utils import TestServer
from needs import free_port
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_servers import SHARED_REDIS

from alerts.webhook_config import WebhookConfig
from integration_kit.webhooks import WebhookLedger, event_key, stats_key, types_key
from monitor.demo.webhooks import make_receiver_app

ROOT = Path(__file__).resolve().parents[1]

# One delivery process: connects, says "ready", waits for "go" on stdin, then fires N concurrent
# deliveries of one event through mark_processed and N of another through claim(), and prints how many
# of each were told "first".
_DELIVERER = """
import asyncio, sys
import redis.asyncio
from alerts.webhook_config import WebhookConfig
from integration_kit.webhooks import WebhookLedger

async def main(url, prefix, n):
    client = redis.asyncio.Redis.from_url(url)
    ledger = WebhookLedger(client, integration="acme", prefix=prefix)
    await client.ping()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def via_claim():
        async with ledger.claim("evt_claim", event_type="invoice.paid") as first:
            await asyncio.sleep(0.01)
            return first

    marks = [ledger.mark_processed("evt_mark", event_type="invoice.paid") for _ in range(n)]
    claims = [via_claim() for _ in range(n)]
    results = await asyncio.gather(*marks, *claims)
    print(sum(results[:n]), sum(results[n:]), flush=True)
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_fifty_concurrent_deliveries_from_five_processes_get_exactly_one_first(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _DELIVERER, SHARED_REDIS, prefix, "10",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )
        for _ in range(5)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"ready"
        for proc in procs:  # all connected and waiting: release them together
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = [await proc.communicate() for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0] * 5
    per_process = [tuple(int(n) for n in out.split()) for out, _ in outputs]
    assert sum(marks for marks, _ in per_process) == 1, per_process
    assert sum(claims for _, claims in per_process) == 1, per_process
    stats = await shared_redis.hgetall(stats_key("acme", prefix))
    assert int(stats[b"received"]) == 100
    assert int(stats[b"duplicates"]) == 98
    assert await shared_redis.get(event_key("acme", "evt_claim", prefix)) == b"done"


async def test_crash_inside_claim_releases_and_the_redelivery_is_processed(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    handled: list[str] = []

    async def handle(event_id: str, fail: bool) -> None:
        async with ledger.claim(event_id) as first:
            if not first:
                return
            if fail:
                raise RuntimeError("handler crashed")
            handled.append(event_id)

    with pytest.raises(RuntimeError, match="handler crashed"):
        await handle("evt_1", fail=True)
    assert await shared_redis.exists(event_key("acme", "evt_1", prefix)) == 0
    await handle("evt_1", fail=False)  # the vendor's retry
    await handle("evt_1", fail=False)  # and a duplicate of it
    assert handled == ["evt_1"]
    stats = await shared_redis.hgetall(stats_key("acme", prefix))
    assert (int(stats[b"received"]), int(stats[b"duplicates"]), int(stats[b"released"])) == (3, 1, 1)


async def test_cancelled_handler_releases_its_claim(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    entered = asyncio.Event()

    async def slow_handler() -> None:
        async with ledger.claim("evt_1") as first:
            assert first
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(slow_handler())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ledger.mark_processed("evt_1") is True


async def test_mark_processed_then_release_lets_the_retry_through(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    assert await ledger.mark_processed("evt_1") is True
    assert await ledger.mark_processed("evt_1") is False
    assert await ledger.release("evt_1") is True
    assert await ledger.release("evt_1") is False  # nothing of ours left to release
    assert await ledger.mark_processed("evt_1") is True


async def test_release_never_removes_a_completed_event(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    async with ledger.claim("evt_1") as first:
        assert first
    assert await ledger.release("evt_1") is False
    assert await ledger.mark_processed("evt_2") is True
    assert await ledger.mark_done("evt_2") is True
    assert await ledger.release("evt_2") is False
    assert await ledger.mark_processed("evt_1") is False
    assert await ledger.mark_processed("evt_2") is False
    assert await shared_redis.get(event_key("acme", "evt_2", prefix)) == b"done"


async def test_a_release_from_another_process_does_not_remove_our_claim(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    ours = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    theirs = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    assert await ours.mark_processed("evt_1") is True
    assert await theirs.mark_processed("evt_1") is False
    assert await theirs.release("evt_1") is False  # a duplicate owns nothing
    assert await theirs.mark_processed("evt_1") is False
    assert await ours.release("evt_1") is True


async def test_retention_and_lease_set_the_expiry(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix, retention=3600, lease=60)
    await ledger.mark_processed("evt_1")
    assert 3590 <= await shared_redis.ttl(event_key("acme", "evt_1", prefix)) <= 3600
    async with ledger.claim("evt_2"):
        assert 50 <= await shared_redis.ttl(event_key("acme", "evt_2", prefix)) <= 60
    assert 3590 <= await shared_redis.ttl(event_key("acme", "evt_2", prefix)) <= 3600
    # The stats are not ledger entries: they never expire.
    assert await shared_redis.ttl(stats_key("acme", prefix)) == -1


async def test_ledger_from_config_uses_its_retention_and_prefix(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    config = WebhookConfig(retention=120, key_prefix=prefix)
    ledger = WebhookLedger.from_config(shared_redis, integration="acme", config=config)
    await ledger.mark_processed("evt_1")
    assert 110 <= await shared_redis.ttl(event_key("acme", "evt_1", prefix)) <= 120


async def test_ledger_from_any_settings_object(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    # A service needs no config model of ours: anything with retention and key_prefix will do.
    @dataclass(frozen=True)
    class Settings:
        retention: float
        key_prefix: str

    ledger = WebhookLedger.from_config(shared_redis, integration="acme", config=Settings(60.0, prefix))
    await ledger.mark_processed("evt_1")
    assert 50 <= await shared_redis.ttl(event_key("acme", "evt_1", prefix)) <= 60


async def test_a_handler_that_died_holding_a_claim_frees_the_event_after_the_lease(
    shared_redis: redis.asyncio.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    dying = WebhookLedger(shared_redis, integration="acme", prefix=prefix, lease=1.0)
    other = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    stuck = dying.claim("evt_1")
    assert await stuck.__aenter__() is True  # the process "dies" here: no exit, no release
    assert await other.mark_processed("evt_1") is False
    # Wait what Redis says is left of the lease, not a guess of seconds (a 0.2 s lease and a 0.3 s sleep: on a
    # loaded machine the lease could run out before the check above).
    left_ms = await shared_redis.pttl(event_key("acme", "evt_1", prefix))
    await asyncio.sleep((left_ms + 1) / 1000)
    assert await other.mark_processed("evt_1") is True
    with caplog.at_level(logging.WARNING, logger="integration_kit.webhooks"):
        await stuck.__aexit__(None, None, None)  # it finishes late: the other claim stays
    assert "lease" in caplog.text
    assert await other.release("evt_1") is True


async def test_counters_times_and_types_are_written_where_documented(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    assert event_key("acme", "evt_1", prefix) == f"{prefix}{{acme}}:event:evt_1"
    assert stats_key("acme", prefix) == f"{prefix}{{acme}}:stats"
    assert types_key("acme", prefix) == f"{prefix}{{acme}}:types"
    await ledger.mark_processed("evt_1", event_type="invoice.paid", received_at=1_700_000_100.25)
    await ledger.mark_processed("evt_2", event_type="invoice.paid", received_at=1_700_000_050.0)  # late
    await ledger.mark_processed("evt_2", event_type="charge.refunded", received_at=1_700_000_200.0)
    stats = await shared_redis.hgetall(stats_key("acme", prefix))
    assert float(stats[b"last_event_ts"]) == 1_700_000_200.0
    assert (int(stats[b"received"]), int(stats[b"duplicates"])) == (3, 1)
    types = await shared_redis.hgetall(types_key("acme", prefix))
    assert {k: float(v) for k, v in types.items()} == {
        b"invoice.paid": 1_700_000_100.25, b"charge.refunded": 1_700_000_200.0,
    }
    assert await shared_redis.exists(event_key("acme", "evt_1", prefix)) == 1


async def test_default_time_is_the_redis_server_clock(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    before, _ = await shared_redis.time()
    await ledger.mark_processed("evt_1")
    after, _ = await shared_redis.time()
    stamped = float(await shared_redis.hget(stats_key("acme", prefix), "last_event_ts") or 0)
    assert before <= stamped <= after + 1


async def test_bad_names_are_refused(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    with pytest.raises(ValueError, match="integration"):
        WebhookLedger(shared_redis, integration="a}b", prefix=prefix)
    ledger = WebhookLedger(shared_redis, integration="acme", prefix=prefix)
    with pytest.raises(ValueError, match="event_id"):
        await ledger.mark_processed("")
    with pytest.raises(ValueError, match="event_type"):
        await ledger.mark_processed("evt_1", event_type="x" * 500)
    assert await shared_redis.exists(stats_key("acme", prefix)) == 0


async def test_demo_receiver_dedupes_and_lets_a_failed_delivery_be_retried(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    attempts: dict[str, int] = {}

    async def flaky(event_id: str, event: Mapping[str, Any]) -> None:
        attempts[event_id] = attempts.get(event_id, 0) + 1
        if event.get("type") == "invoice.failing" and attempts[event_id] == 1:
            raise RuntimeError("downstream timeout")

    app = make_receiver_app(shared_redis, "acme", prefix=prefix, handler=flaky)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        url = str(server.make_url("/webhook"))

        async def post(body: Any, **headers: str) -> tuple[int, dict[str, Any]]:
            async with http.post(url, data=json.dumps(body), headers=headers) as resp:
                return resp.status, await resp.json()

        assert await post({"id": "evt_1", "type": "invoice.paid"}) == (200, {"status": "processed", "id": "evt_1"})
        assert await post({"id": "evt_1", "type": "invoice.paid"}) == (200, {"status": "duplicate", "id": "evt_1"})
        assert (await post({"id": "evt_2", "type": "invoice.failing"}))[0] == 500
        assert await post({"id": "evt_2", "type": "invoice.failing"}) == (200, {"status": "processed", "id": "evt_2"})
        assert await post({"type": "no.id"}, **{"Webhook-Id": "msg_3"}) == (200, {"status": "processed", "id": "msg_3"})
        assert (await post(["not", "an", "object"]))[0] == 400
        assert (await post({"type": "no id at all"}))[0] == 400
        async with http.get(url) as resp:
            assert (await resp.json())["processed"] == ["evt_1", "evt_2", "msg_3"]
    assert attempts == {"evt_1": 1, "evt_2": 2, "msg_3": 1}
    stats = await shared_redis.hgetall(stats_key("acme", prefix))
    assert {k.decode(): int(v) for k, v in stats.items() if k != b"last_event_ts"} == {
        "received": 5, "duplicates": 1, "released": 1,
    }


async def test_demo_receiver_answers_503_when_redis_is_down() -> None:
    dead = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    app = make_receiver_app(dead, "acme")
    async with (
        TestServer(app, host="127.0.0.1") as server,
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/webhook"), json={"id": "evt_1"}) as resp,
    ):
        assert resp.status == 503
    await dead.aclose()
