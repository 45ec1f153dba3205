"""A cancellation that gets lost must not hang a shutdown (`integration-monitor demo` ignoring SIGTERM).

On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising ``CancelledError`` when the
operation it waits for completes in the same loop iteration as the cancellation (CPython gh-86296, fixed
in 3.12). redis-py sends every command through ``wait_for`` when the client has a ``socket_timeout``
(ours all have one), so a loop that talks to Redis sometimes survives ``task.cancel()`` and runs on; a
``close()`` that cancelled it once and awaited it never returned. The demo hung like that on SIGTERM in
about one stop in fifteen under load (its crm workers wait for a Redis rate limiter before every call).

These tests hit that moment on purpose, with real Redis and redis-py: a connection class of the test's
own holds one command right after it was written (inside redis-py's ``wait_for``), and the test lets it
complete in the very loop iteration where ``close()`` cancels the task — the cancellation is lost every
time, not once in a while. ``close()`` must still return with the task finished (``integration_kit.tasks
.stop``/``stop_all`` cancel again until it has). On Python 3.12+ nothing is lost and they pass trivially.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable

import pytest
import redis.asyncio
from redis_servers import tag_of
from test_quota_service import config, counter_quota, make, sample
from test_webhook_reader import make_config, make_service
from waiting import until

from integration_kit.calls import CallOutcome
from integration_kit.recorder import TrafficRecorder
from integration_kit.tasks import stop
from monitor.demo.kit_traffic import KitTraffic
from monitor.demo.traffic import RateLimiterTraffic
from monitor.demo.vendor import SimulatedVendor, VendorBehaviour


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for keeps every cancellation since Python 3.12")
async def test_python_311_wait_for_loses_a_cancellation_and_the_task_runs_on() -> None:
    """The behaviour everything below guards against (if this fails, CPython fixed it in 3.11 too)."""
    done, rounds = asyncio.Event(), []

    async def loop() -> None:
        while True:
            await asyncio.wait_for(done.wait(), 10)  # the race under test
            rounds.append(1)
            done.clear()

    task = asyncio.create_task(loop())
    # Nothing outside says it waits: its first step is a ready callback, which the loop runs before any
    # timer (this 10 ms one included) however loaded the machine.
    await asyncio.sleep(0.01)
    done.set()  # the inner wait completes in the next iteration …
    task.cancel()  # … and the task sees this cancellation after it: 3.11's wait_for returns instead
    await until(lambda: rounds, "the round after the lost cancellation")
    assert not task.done() and rounds == [1]  # cancelled once, still running
    await stop(task)
    assert task.cancelled()


class SendGate:
    """Once armed, holds the next matching command in redis-py's ``wait_for``-wrapped send after it was
    written (``_send_packed_command`` is the coroutine redis-py runs under ``wait_for``; if redis-py renames
    it, nothing is ever held and the tests fail waiting for it)."""

    def __init__(self, match: bytes | None = None) -> None:
        self.match = match
        self.armed = False
        self.held = asyncio.Event()
        self._release = asyncio.Event()

    def arm(self) -> None:
        self.armed = True
        self.held, self._release = asyncio.Event(), asyncio.Event()

    def wants(self, command: list[bytes]) -> bool:
        return self.armed and (self.match is None or any(self.match in bytes(part) for part in command))

    async def hold(self) -> None:
        self.armed = False
        self.held.set()
        await self._release.wait()

    def release(self) -> None:
        self._release.set()


def gated_client(gate: SendGate) -> redis.asyncio.Redis:
    class GatedConnection(redis.asyncio.Connection):
        async def _send_packed_command(self, command: Iterable[bytes]) -> None:
            parts = list(command)
            await super()._send_packed_command(parts)
            if gate.wants(parts):
                await gate.hold()

    pool = redis.asyncio.ConnectionPool(
        connection_class=GatedConnection, host="127.0.0.1", port=6379, socket_timeout=5.0, socket_connect_timeout=2.0
    )
    return redis.asyncio.Redis.from_pool(pool)  # (its own pool: closed with it, connections and all)


@pytest.fixture
def tag(shared_redis: redis.asyncio.Redis, prefix: str) -> str:
    """A key prefix of the test's own on the shared Redis (``shared_redis`` deletes what carries it after)."""
    return prefix


def running(name_prefix: str) -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(name_prefix) and not t.done()]


async def close_while_a_command_completes(gate: SendGate, close: Callable[[], Awaitable[None]]) -> None:
    """Wait for a held command, then let it complete and ``close()`` in the same loop iteration."""
    gate.arm()
    async with asyncio.timeout(10):
        await gate.held.wait()
    gate.release()  # the held send finishes in the next iteration …
    async with asyncio.timeout(20) as guard:
        await close()  # … and close() cancels its task now, before that: redis-py's wait_for loses it
    # (A close() that awaits the task under contextlib.suppress(CancelledError) swallows the guard's
    # cancellation too, which reaches the task and stops it: hence this check, not just a TimeoutError.)
    assert not guard.expired(), "close() hung: its task lost the cancellation and ran on"


async def test_the_demo_traffic_stops_when_its_redis_calls_lose_the_cancellation(tag: str) -> None:
    """What hung `integration-monitor demo` on SIGTERM: the integrations' calls through the kit (their
    shared rate limiter asks Redis before every crm call) and the rate-limit counters it writes."""
    vendor = SimulatedVendor(VendorBehaviour(seed=1))
    await vendor.start("127.0.0.1", 0)
    gate = SendGate(match=b"EVALSHA")  # the kit's rate limiter, in the crm sync job's workers
    client = gated_client(gate)
    kit = KitTraffic(client, vendor.url or "", tag, seed=1)
    counters_gate = SendGate(match=b"EVAL")
    counters_client = gated_client(counters_gate)
    counters = RateLimiterTraffic(counters_client, tag, tick=0.005)
    try:
        await kit.start()
        await close_while_a_command_completes(gate, kit.close)
        assert running("demo-kit-") == []
        counters.start()
        await close_while_a_command_completes(counters_gate, counters.close)
        assert running("demo-rate-limiter-traffic") == []
    finally:
        await kit.close()
        await counters.close()
        await client.aclose()
        await counters_client.aclose()
        await vendor.close()


async def test_the_kit_traffic_recorder_stops_when_a_flush_loses_the_cancellation(tag: str) -> None:
    gate = SendGate(match=b"HINCRBY")
    client = gated_client(gate)
    recorder = TrafficRecorder(client, "payments", prefix=tag, interval=0.01)
    recorder.start()
    recorder.record(CallOutcome(integration="payments", method="GET", error_class=None, status=200, attempts=1,
                                duration=0.01))
    try:
        await close_while_a_command_completes(gate, recorder.close)
        assert running("traffic-recorder-") == []
    finally:
        await client.aclose()


async def test_quota_pollers_stop_on_reload_and_on_close_when_a_read_loses_the_cancellation(tag: str) -> None:
    gate = SendGate()
    client = gated_client(gate)
    service, metrics = make(config(counter_quota(tag_of(tag))), client)
    await service.start()

    async def remove_the_quota() -> None:
        service.on_config(config())

    try:
        # A reload removes the quota while its poller reads: the poller must not run on, nor bring back
        # the series of a quota that no longer exists.
        await close_while_a_command_completes(gate, remove_the_quota)
        # A window for a poller that ran on: 6 of its 50 ms intervals, each a read of the local Redis. (Too
        # short on a loaded machine, it would let a poller that ran on pass, never fail a sound one.)
        await asyncio.sleep(0.3)
        assert running("quota:") == []
        assert sample(metrics, "integration_quota_used", "api", "redis") is None
        service.on_config(config(counter_quota(tag_of(tag))))
        await close_while_a_command_completes(gate, service.close)
        assert running("quota:") == []
    finally:
        await service.close()
        await client.aclose()


async def test_the_webhook_reader_stops_when_a_read_loses_the_cancellation(tag: str) -> None:
    """test_webhook_reader's outage test once hung until pytest's 300 s timeout in its final close(): the
    reader reads every 100 ms, so a close() that cancelled it once met a read in flight now and then."""
    gate = SendGate()
    client = gated_client(gate)
    service, _ = make_service(client, make_config(tag))
    await service.start()
    try:
        await close_while_a_command_completes(gate, service.close)
        assert running("webhook-reader") == []
    finally:
        await service.close()
        await client.aclose()
