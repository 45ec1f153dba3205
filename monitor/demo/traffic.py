"""The integrations' side of the demo, played only when the demo has a Redis: the counters their rate
limiters keep, exactly as those limiters write them (README, "Rate-limit quotas"), and the webhooks the
vendor delivers to their receivers — so the monitor's quota and webhook readers have something real to read.

- payments: rate-limit-redis style per-merchant counters ``<prefix>:rl:payments:<merchant>`` — the
  limiter's Lua: INCR(BY), then PEXPIRE when the key has no TTL yet. Limit and window come from config.
- crm: the sync worker's flask-limiter fixed window ``LIMITS:LIMITER/<prefix>/crm/sync/1000/1/minute`` —
  the ``limits`` package's Lua: INCRBY, then EXPIRE when the counter was just created.

Rates are seeded, so every run climbs the same way: the busiest merchant goes past its limit shortly
before its window resets, the sync worker reaches 84% of its own.

Webhooks: payments gets an event every 2 s, every 4th delivered twice; shipping gets bursts of tracking
updates with long quiet spells between them (longer than its ``max_silence``). Each goes to the receiver
of monitor/demo/webhooks.py, which records it with the webhook ledger under ``<prefix>:wh:``.

Every key the demo writes lives under ``<prefix>``; ``cleanup`` deletes them.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from integration_kit.supervisor import Supervisor

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

# rate-limit-redis (express-rate-limit's Redis store), its increment script; batched here: one INCRBY n
# stands for n of the script's INCRs (a second's worth of calls).
_RL_INCREMENT = """
local totalHits = redis.call("INCRBY", KEYS[1], ARGV[2])
local timeToExpire = redis.call("PTTL", KEYS[1])
if timeToExpire <= 0 then
  redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[1]))
  timeToExpire = tonumber(ARGV[1])
end
return { totalHits, timeToExpire }
"""

# limits (flask-limiter / slowapi) fixed window, its incr script.
_LIMITS_INCR = """
local current = redis.call('incrby', KEYS[1], ARGV[2])
if tonumber(current) == tonumber(ARGV[2]) then
  redis.call('expire', KEYS[1], ARGV[1])
end
return current
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limiter:
    """One simulated limiter: the key it writes, how (script + TTL argument), and the calls per second it
    sees."""

    key: str
    rate: float  # calls per second
    script: str
    expiry: int  # the script's TTL argument, in the unit the library uses (ms or s)


def demo_limiters(prefix: str, *, seed: int = 0, merchants: int = 8) -> list[Limiter]:
    """The limiters of the demo config (payments: 600/min per merchant; crm sync: 1000/min)."""
    rng = random.Random(f"{seed}:merchants")
    out = [
        # The busiest merchant runs at 11/s: over its 600 a minute after ~55 s (the limiter keeps counting),
        # so the exhaustion projection shows; the others stay well below.
        Limiter(
            key=f"{prefix}:rl:payments:acct_{i:04d}",
            rate=11.0 if i == 0 else round(rng.uniform(0.5, 5.0), 2),
            script=_RL_INCREMENT,
            expiry=60_000,
        )
        for i in range(merchants)
    ]
    # The sync worker: 14/s of 1000 a minute, 84% at the end of each window (a warning, not critical).
    out.append(
        Limiter(key=f"LIMITS:LIMITER/{prefix}/crm/sync/1000/1/minute", rate=14.0, script=_LIMITS_INCR, expiry=60)
    )
    return out


RATE_LIMITER_LOOP = "demo-rate-limiter-traffic"


class RateLimiterTraffic:
    """Writes the limiters' counters once per ``tick`` seconds until closed."""

    def __init__(self, redis: redis.asyncio.Redis, prefix: str, *, seed: int = 0, tick: float = 1.0) -> None:
        self._redis = redis
        self.prefix = prefix
        self.limiters = demo_limiters(prefix, seed=seed)
        self._tick = tick
        self._carry = [0.0] * len(self.limiters)  # fractional calls not written yet
        self._supervisor = Supervisor("demo")

    async def step(self, seconds: float) -> None:
        """Write ``seconds`` worth of traffic (one pipelined round trip)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for i, limiter in enumerate(self.limiters):
                self._carry[i] += limiter.rate * seconds
                calls = int(self._carry[i])
                if calls:
                    self._carry[i] -= calls
                    # The libraries run their scripts by EVALSHA; EVAL keeps this to one round trip.
                    pipe.eval(limiter.script, 1, limiter.key, limiter.expiry, calls)
            await pipe.execute()

    @property
    def running(self) -> bool:
        return self._supervisor.running(RATE_LIMITER_LOOP)

    def start(self) -> None:
        self._supervisor.start(RATE_LIMITER_LOOP, self._run)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.step(self._tick)
            except Exception as exc:  # Redis down: the demo goes on, the quota reader shows it
                # Once per outage, not once per tick.
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "demo: could not write rate-limit counters to Redis: %s",
                    exc,
                )
                failing = True
            else:
                if failing:
                    log.info("demo: writing rate-limit counters to Redis again")
                failing = False
            if not await self._supervisor.sleep(self._tick):
                return

    async def close(self) -> None:
        await self._supervisor.close(grace=0.0)


async def cleanup(redis: redis.asyncio.Redis, prefix: str) -> int:
    """Delete every key the demo wrote under ``prefix`` (SCAN, never KEYS); returns how many."""
    deleted = 0
    for pattern in (f"{prefix}:*", f"LIMITS:*LIMITER/{prefix}/*"):
        batch: list[bytes | str] = []
        async for key in redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await redis.delete(*batch)
                batch = []
        if batch:
            deleted += await redis.delete(*batch)
    return deleted


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookStream:
    """One integration's webhook deliveries: an event every ``every`` seconds while active, every
    ``duplicate_every``-th one delivered a second time (vendors deliver at least once), active for the
    first ``active`` seconds of every ``period`` (None: always — a stream that goes quiet in between
    shows the silence alert)."""

    integration: str
    event_types: tuple[str, ...]
    every: float
    duplicate_every: int
    period: float | None = None
    active: float = 0.0


DEMO_STREAMS = (
    WebhookStream(
        integration="payments",
        event_types=("charge.succeeded", "invoice.paid", "payment_intent.payment_failed"),
        every=2.0,
        duplicate_every=4,
    ),
    # The carrier's batch jobs: a burst of tracking updates, then quiet for longer than max_silence.
    WebhookStream(
        integration="shipping",
        event_types=("tracker.updated", "shipment.delivered"),
        every=2.0,
        duplicate_every=3,
        period=150.0,
        active=20.0,
    ),
)


class WebhookTraffic:
    """Serves each stream's receiver (monitor.demo.webhooks: what the integration's own service runs) and
    delivers the simulated vendor's events to it, duplicates included."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        prefix: str,
        *,
        streams: tuple[WebhookStream, ...] = DEMO_STREAMS,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self.ledger_prefix = f"{prefix}:wh:"  # the bundled config's webhooks.key_prefix
        self.streams = streams
        self._seed = seed
        self._clock = clock
        self.results: Counter[tuple[str, str]] = Counter()  # (integration, receiver's status) → deliveries
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._supervisor = Supervisor("demo")

    async def start(self, host: str = "127.0.0.1") -> None:
        from monitor.demo.webhooks import make_receiver_app

        root = web.Application()
        for stream in self.streams:
            root.add_subapp(
                f"/{stream.integration}", make_receiver_app(self._redis, stream.integration, prefix=self.ledger_prefix)
            )
        self._runner = web.AppRunner(root, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        started = self._clock()
        for stream in self.streams:
            self._supervisor.start(f"demo-webhooks-{stream.integration}",
                                   functools.partial(self._deliver_forever, stream, started))

    def events(self, stream: WebhookStream) -> Iterator[tuple[dict[str, Any], int]]:
        """The stream's events in order, each with how many times it is delivered (seeded)."""
        rng = random.Random(f"{self._seed}:webhooks:{stream.integration}")
        for n in itertools.count():
            event = {
                "id": f"evt_{rng.getrandbits(64):016x}",
                "type": rng.choice(stream.event_types),
                "object": "event",
                "data": {"sequence": n},
            }
            yield event, 2 if n % stream.duplicate_every == stream.duplicate_every - 1 else 1

    async def deliver(self, stream: WebhookStream, event: dict[str, Any]) -> str:
        """POST one delivery; returns the receiver's status (processed/duplicate) or the HTTP error."""
        if self._session is None or self.url is None:
            raise RuntimeError("WebhookTraffic is not started")
        async with self._session.post(f"{self.url}/{stream.integration}/webhook", json=event) as response:
            body = await response.json(content_type=None) if response.status == 200 else {}
            outcome = str(body.get("status", f"http_{response.status}"))
        self.results[(stream.integration, outcome)] += 1
        return outcome

    async def _deliver_forever(self, stream: WebhookStream, started: float) -> None:
        for event, copies in self.events(stream):
            if stream.period is not None:
                into = (self._clock() - started) % stream.period
                if into >= stream.active and not await self._supervisor.sleep(stream.period - into):
                    return  # (quiet until the next burst)
            for _ in range(copies):
                try:
                    await self.deliver(stream, event)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("demo: webhook delivery to the %s receiver failed: %s", stream.integration, exc)
            if not await self._supervisor.sleep(stream.every):
                return

    async def close(self) -> None:
        await self._supervisor.close(grace=0.0)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
