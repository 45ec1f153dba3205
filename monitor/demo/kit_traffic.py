"""The integrations' own calls in the demo, made through the integration kit (``integration_kit.client``)
exactly as a real service makes them, so the monitor's real-traffic panels, the quota of the kit's rate
limiter and the error-rate alert on real calls have something real to show. Played only with a Redis.

- payments: the web app's calls, about ``rate`` a second, to ``GET /payments/v1/charges/{id}``, expecting
  a non-null ``billing_details.email`` (1 in 8 customers has none: ``null_field``); during the vendor's
  periodic outage half the calls answer 502 (retried once): the real-traffic error-rate alert fires,
  then resolves.
- crm: a sync job reading contacts as fast as its shared rate limiter lets it (``RateLimit`` of
  ``sync_rate`` a second, 4 workers): throttled, and its limiter's quota gauge sits near 100 %.

Keys: the counters under ``<prefix>:traffic:``, the limiter at ``<prefix>:rate:crm`` (the bundled config
reads both); ``monitor.demo.traffic.cleanup`` deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING

import aiohttp

from integration_kit.calls import CallError
from integration_kit.client import Integration
from integration_kit.limiter import RateLimit
from integration_kit.retry import RetryPolicy
from integration_kit.tasks import stop_all

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

DEMO_SECRET = "sk_test_demo_0000000000000000"  # the bundled config's payments key: redacted in errors


class KitTraffic:
    def __init__(
        self, redis: redis.asyncio.Redis, vendor_url: str, prefix: str, *, seed: int = 0, rate: float = 6.0,
        sync_rate: int = 8,
    ) -> None:
        self.vendor_url = vendor_url
        self._rng = random.Random(f"{seed}:kit-traffic")
        self._rate = rate
        retry = RetryPolicy(attempts=2, backoff=0.05, max_backoff=0.5)
        self.payments = Integration("payments", redis=redis, key_prefix=f"{prefix}:traffic:", retry=retry,
                                    timeout=5.0, secrets=[DEMO_SECRET])
        self.crm = Integration("crm", redis=redis, key_prefix=f"{prefix}:traffic:", retry=retry, timeout=10.0,
                               rate_limit=RateLimit(rate=sync_rate, per=1.0, key=f"{prefix}:rate:crm"))
        self.failures = 0  # CallErrors the demo's services got (each logged once by the kit)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()  # the web app's calls: they overlap
        self._stopping = False

    async def start(self) -> None:
        self.payments.start()
        self.crm.start()
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {DEMO_SECRET}"})
        self._tasks = [asyncio.create_task(self._web_app(), name="demo-kit-payments")]
        self._tasks += [asyncio.create_task(self._sync_job(n), name=f"demo-kit-crm-{n}") for n in range(4)]

    async def _call(self, url: str, middlewares: tuple[aiohttp.ClientMiddlewareType, ...]) -> None:
        assert self._session is not None
        try:
            async with self._session.get(url, middlewares=middlewares) as resp:
                await resp.read()
        except CallError:
            self.failures += 1  # the kit logged it (redacted) and counted it for the monitor

    async def _web_app(self) -> None:
        expect = self.payments.expect(required=("id",), not_null=("billing_details.email",))
        while not self._stopping:
            charge = f"ch_{self._rng.getrandbits(32):08x}"
            call = asyncio.create_task(self._call(f"{self.vendor_url}/payments/v1/charges/{charge}", expect))
            self._in_flight.add(call)
            call.add_done_callback(self._in_flight.discard)
            await asyncio.sleep(self._rng.expovariate(self._rate))

    async def _sync_job(self, worker: int) -> None:
        expect = (self.crm.middleware,)
        contact = worker
        while not self._stopping:
            await self._call(f"{self.vendor_url}/crm/v3/objects/contacts/{contact}", expect)
            contact += 4

    async def close(self) -> None:
        # The loops also check this flag: a loop whose cancellation got lost (on Python 3.11, see
        # integration_kit.tasks) ends at its next turn; stop_all cancels again until they all have.
        self._stopping = True
        await stop_all([*self._tasks, *self._in_flight])
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        for integration in (self.payments, self.crm):
            with contextlib.suppress(Exception):
                await integration.close()
