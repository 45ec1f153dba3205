"""Results travel to the owner of their integration: one Redis stream per replica.

    <prefix>results:<replica id>   stream   entries {r: result JSON, h: hops}

A result of a check this replica probes goes to ``record`` here when this replica owns the integration,
and otherwise into the owner's stream: results are buffered for a few milliseconds and written in one
pipelined round trip (``XADD … MAXLEN ~``, so a stream whose reader is gone stays bounded; it also
expires a while after its last write). Each replica reads its own stream (``XREAD BLOCK``) and records
what arrives; a result whose integration moved on meanwhile is passed on once more.

Fail open: when Redis cannot take a batch (or the view is frozen because Redis is unreachable), the
results are recorded here instead — the series and alerts of those checks then come from this replica
until Redis answers again, which is better than losing them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from integration_kit.tasks import stop_all
from monitor.cluster.result_codec import decode, encode

if TYPE_CHECKING:
    import redis.asyncio

    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.cluster.replica import Cluster
    from monitor.metrics import Metrics

log = logging.getLogger(__name__)

BATCH_DELAY = 0.02  # seconds a result may wait for others to share its round trip
MAX_BATCH = 500
STREAM_MAXLEN = 10_000  # entries kept per stream (approximate trim): a minute of 10,000 checks at 60 s
READ_BLOCK_MS = 1000
READ_COUNT = 1000
MAX_HOPS = 1  # a result is passed on at most once after it arrived at a replica that no longer owns it
FAILURE_BACKOFF_MAX = 5.0


class ResultStreams:
    def __init__(
        self,
        redis: redis.asyncio.Redis,
        cluster: Cluster,
        *,
        record: Callable[[CheckResult], None],
        redactor: Redactor,
        metrics: Metrics,
    ) -> None:
        self.redis = redis
        self.cluster = cluster
        self.record = record
        self.redactor = redactor
        self._sent = metrics.cluster_results.labels(path="sent")
        self._received = metrics.cluster_results.labels(path="received")
        self._kept = metrics.cluster_results.labels(path="kept")
        self._prefix = f"{cluster.cfg.key_prefix}results:"
        self._pending: list[tuple[str, CheckResult, int]] = []  # (owner, result, hops)
        self._wake = asyncio.Event()
        self._expired_at: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._read_failures = 0
        self._closing = False

    def stream(self, member: str) -> str:
        return self._prefix + member

    # ---- sending ------------------------------------------------------------------------------------

    def route(self, result: CheckResult, hops: int = 0) -> None:
        """Where a result goes: recorded here, or sent to its integration's owner. Never raises."""
        cluster = self.cluster
        owner = cluster.owner_of(result.integration)
        if owner is None or owner == cluster.me or cluster.degraded or not self._tasks:
            if owner is not None and owner != cluster.me:
                self._kept.inc()
            self._record(result)
            return
        self._pending.append((owner, result, hops))
        self._wake.set()

    def _record(self, result: CheckResult) -> None:
        try:
            self.record(result)
        except Exception:
            log.exception("recording the result of %s/%s failed", result.integration, result.check)

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_DELAY)
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._send(batch)

    async def _send(self, batch: list[tuple[str, CheckResult, int]]) -> None:
        now = time.monotonic()
        ttl = self.cluster.cfg.ttl
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for owner, result, hops in batch:
                    fields: dict[Any, Any] = {"r": encode(result, self.redactor), "h": hops}
                    pipe.xadd(self.stream(owner), fields, maxlen=STREAM_MAXLEN, approximate=True)
                for owner in {owner for owner, _, _ in batch}:
                    if now - self._expired_at.get(owner, float("-inf")) > ttl:
                        # A stream nobody reads any more (its replica is gone) disappears on its own.
                        pipe.expire(self.stream(owner), max(60, round(ttl * 10)))
                        self._expired_at[owner] = now
                async with asyncio.timeout(max(2.0, self.cluster.cfg.heartbeat)):
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cluster: %d result(s) could not be sent to their owners (%s); recorded here instead",
                        len(batch), type(exc).__name__)
            self._kept.inc(len(batch))
            for _, result, _ in batch:
                self._record(result)
            return
        self._sent.inc(len(batch))

    # ---- receiving ----------------------------------------------------------------------------------

    async def _receiver(self) -> None:
        key = self.stream(self.cluster.me)
        last = await self._start_id(key)
        while True:
            try:
                reply: Any = await self.redis.xread({key: last}, count=READ_COUNT, block=READ_BLOCK_MS)
            except (RedisError, OSError) as exc:
                if self._closing:
                    return  # redis-py may turn the cancellation of a blocking read into a connection error
                self._read_failures += 1
                if self._read_failures == 1:
                    log.warning("cluster: cannot read results sent to this replica (%s); retrying",
                                type(exc).__name__)
                await asyncio.sleep(min(FAILURE_BACKOFF_MAX, 0.1 * 2 ** min(self._read_failures, 10)))
                continue
            self._read_failures = 0
            entries: list[tuple[Any, dict[Any, Any]]] = [e for _stream, batch in reply or () for e in batch]
            for entry_id, fields in entries:
                last = entry_id
                self._receive(fields)

    async def _start_id(self, key: str) -> Any:
        """Read only what arrives from now on: older entries were for an earlier run of this replica."""
        while True:
            try:
                newest = await self.redis.xrevrange(key, count=1)
                return newest[0][0] if newest else "0-0"
            except (RedisError, OSError) as exc:
                self._read_failures += 1
                if self._read_failures == 1:
                    log.warning("cluster: cannot read this replica's result stream (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(FAILURE_BACKOFF_MAX, 0.1 * 2 ** min(self._read_failures, 10)))

    def _receive(self, fields: dict[Any, Any]) -> None:
        raw, hops = fields.get(b"r", fields.get("r")), fields.get(b"h", fields.get("h", 0))
        try:
            if raw is None:
                raise ValueError("no result")
            result = decode(raw)
            hops = int(hops)
        except (ValueError, KeyError, TypeError):
            log.warning("cluster: ignoring an unreadable entry in this replica's result stream")
            return
        self._received.inc()
        if self.cluster.owns(result.integration) or hops >= MAX_HOPS:
            self._record(result)
        else:
            self.route(result, hops + 1)  # its integration moved on while it travelled

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._receiver(), name="cluster-results-in"),
                       loop.create_task(self._sender(), name="cluster-results-out")]

    async def close(self) -> None:
        """Send what is still buffered (bounded), then stop reading."""
        tasks, self._tasks = self._tasks, []
        self._closing = True
        if self._pending:
            batch, self._pending = self._pending, []
            await self._send(batch)
        await stop_all(tasks)
