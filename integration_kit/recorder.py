"""Recording real traffic: every finished call adds to counters in memory; a flusher writes them to
Redis once a ``interval`` (1 s) in one MULTI/EXEC pipeline of HINCRBYs (key format in
``integration_kit.traffic``). A call never waits for Redis and never fails because of it.

Redis down: the counts stay in memory and are written with the next flush that works (HINCRBY adds, so
nothing is counted twice by merging). Counts older than ``keep`` seconds are dropped instead — the
monitor no longer reads buckets that old — and the calls they held are counted as lost: in
``stats.lost`` at once, and in the bucket field ``lost`` once Redis answers again, so the monitor shows
``integration_traffic_lost_total``. (If a reply is lost after Redis applied a flush, the retry counts
that second twice: at-least-once, the rare side to err on.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from integration_kit.tasks import stop
from integration_kit.traffic import (
    BUCKET_SECONDS,
    CALL_FIELDS,
    DEFAULT_PREFIX,
    DEFAULT_TTL,
    STATUS_FIELDS,
    bucket_key,
    bucket_of,
    last_key,
    latency_field,
)

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from integration_kit.calls import CallOutcome
    from integration_kit.errors import ErrorClass

log = logging.getLogger(__name__)

FLUSH_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderStats:
    """What the recorder did since it started (for the service's own metrics or logs)."""

    recorded: int  # calls counted
    flushes: int  # successful writes
    failed_flushes: int
    lost: int  # calls dropped because Redis could not be written for ``keep`` seconds, or at close
    pending_buckets: int  # buckets waiting for the next flush


class TrafficBuffer:
    """The counts not yet written, per bucket. Thread-safe; ``add`` is the hot path (a few dict
    increments under an uncontended lock)."""

    def __init__(self, *, keep: float, clock: Callable[[], float] = time.time) -> None:
        self._pending: dict[int, dict[str, int]] = {}
        self._start = math.inf  # the bucket calls are being added to now: its start and its counts
        self._bucket: dict[str, int] = {}
        self._lost_unwritten = 0  # lost calls not yet written to Redis
        self._lock = threading.Lock()
        self.keep = keep
        self._clock = clock
        self.recorded = 0
        self.lost = 0

    def add(
        self, error_class: ErrorClass | None, status: int | None, duration: float, attempts: int = 1,
        throttle_wait: float = 0.0, bypassed: bool = False,
    ) -> None:
        """Count one finished call (``CallOutcome``'s fields: the kit passes them without making one)."""
        at = self._clock()
        with self._lock:
            if not self._start <= at < self._start + BUCKET_SECONDS:  # a new bucket (or a clock set back)
                self._start = bucket_of(at)
                self._bucket = self._pending.setdefault(self._start, {})
            bucket = self._bucket
            # Spelled out, not a loop over a dict of fields: this runs on every call of the service.
            name = CALL_FIELDS.get(error_class) or f"c:{error_class}"
            bucket[name] = bucket.get(name, 0) + 1
            name = latency_field(duration)
            bucket[name] = bucket.get(name, 0) + 1
            bucket["lsum"] = bucket.get("lsum", 0) + int(duration * 1e6)
            if status is not None:
                name = STATUS_FIELDS.get(status) or f"s:{status}"
                bucket[name] = bucket.get(name, 0) + 1
            if attempts > 1:
                bucket["r"] = bucket.get("r", 0) + attempts - 1
            if throttle_wait > 0:
                bucket["t"] = bucket.get("t", 0) + 1
                bucket["tw"] = bucket.get("tw", 0) + int(throttle_wait * 1e6)
            if bypassed:
                bucket["b"] = bucket.get("b", 0) + 1
            self.recorded += 1

    def take(self) -> tuple[dict[int, dict[str, int]], int]:
        """Everything pending (and the lost count to write), emptied; ``give_back`` if the write fails."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._start = math.inf  # the current bucket went with them
            lost, self._lost_unwritten = self._lost_unwritten, 0
        if lost:
            pending.setdefault(bucket_of(self._clock()), {})["lost"] = lost
        return pending, lost

    def give_back(self, pending: dict[int, dict[str, int]], lost: int) -> None:
        """Merge counts a failed write took back in; drop (and count as lost) the ones past ``keep``."""
        oldest = bucket_of(self._clock() - self.keep)
        with self._lock:
            self._lost_unwritten += lost
            for bucket, fields in pending.items():
                fields.pop("lost", None)
                if bucket < oldest:
                    dropped = sum(n for name, n in fields.items() if name.startswith("c:"))
                    self.lost += dropped
                    self._lost_unwritten += dropped
                    continue
                into = self._pending.setdefault(bucket, {})
                for name, n in fields.items():
                    into[name] = into.get(name, 0) + n

    def drop_all(self) -> int:
        """Empty it, counting every call still in it as lost: the last flush, at close, failed."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._start = math.inf
            self._lost_unwritten = 0
            dropped = sum(n for fields in pending.values() for name, n in fields.items() if name.startswith("c:"))
            self.lost += dropped
        return dropped

    def pending_buckets(self) -> int:
        return len(self._pending)


class Recorder:
    """What both recorders share: the buffer, the write of one flush, its bookkeeping."""

    def __init__(self, integration: str, *, prefix: str, ttl: int, interval: float, keep: float,
                 clock: Callable[[], float]) -> None:
        if ttl < 2 * BUCKET_SECONDS or interval <= 0 or keep < interval:
            raise ValueError("ttl must be at least 20 s, interval above 0 and keep at least interval")
        self.integration = integration
        self.prefix = prefix
        self.ttl = ttl
        self.interval = interval
        self._clock = clock
        self.buffer = TrafficBuffer(keep=keep, clock=clock)
        # count(error_class, status, duration, attempts, throttle_wait, bypassed): ``record`` without a
        # CallOutcome to make (the kit's middleware; a bound method, no frame of its own).
        self.count = self.buffer.add
        self._flushes = 0
        self._failed = 0
        self._failing = False

    def record(self, outcome: CallOutcome) -> None:
        """Count one finished call (never raises, never waits)."""
        self.buffer.add(outcome.error_class, outcome.status, outcome.duration, outcome.attempts, outcome.throttle_wait,
                        outcome.limiter_bypassed)

    @property
    def stats(self) -> RecorderStats:
        b = self.buffer
        return RecorderStats(recorded=b.recorded, flushes=self._flushes, failed_flushes=self._failed, lost=b.lost,
                             pending_buckets=b.pending_buckets())

    def _write(self, pipe: Any, pending: dict[int, dict[str, int]]) -> None:
        """Queue one flush's commands on a MULTI/EXEC pipeline."""
        for bucket, fields in pending.items():
            key = bucket_key(self.integration, bucket, self.prefix)
            for name, n in fields.items():
                pipe.hincrby(key, name, n)
            pipe.expire(key, self.ttl)
        pipe.set(last_key(self.integration, self.prefix), f"{self._clock():.3f}", ex=self.ttl)

    def _closed(self, flushed: bool) -> None:
        """After the last flush: what it could not write is lost, and says so (``stats.lost``, a log)."""
        if not flushed and (dropped := self.buffer.drop_all()):
            log.warning("traffic recorder %s: closed while Redis could not be written; %d calls not recorded",
                        self.integration, dropped)

    def _done(self, ok: bool, exc: BaseException | None = None) -> bool:
        if ok:
            self._flushes += 1
            if self._failing:
                log.info("traffic recorder %s: writing to Redis again", self.integration)
            self._failing = False
            return True
        self._failed += 1
        if not self._failing:
            log.warning("traffic recorder %s: cannot write to Redis (%s); keeping counts for up to %gs",
                        self.integration, type(exc).__name__, self.buffer.keep)
        self._failing = True
        return False


class TrafficRecorder(Recorder):
    """The recorder for asyncio services: ``start()`` runs the flush task, ``close()`` flushes a last time."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        integration: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        interval: float = 1.0,
        keep: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(integration, prefix=prefix, ttl=ttl, interval=interval, keep=keep, clock=clock)
        self._redis = redis
        self._task: asyncio.Task[None] | None = None

    async def flush(self) -> bool:
        pending, lost = self.buffer.take()
        if not pending:
            return True
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT):
                pipe = self._redis.pipeline(transaction=True)
                self._write(pipe, pending)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.buffer.give_back(pending, lost)
            return self._done(False, exc)
        return self._done(True)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"traffic-recorder-{self.integration}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop(task)
        self._closed(await self.flush())


class SyncTrafficRecorder(Recorder):
    """The recorder for blocking code: a daemon thread flushes; ``close()`` stops it and flushes."""

    def __init__(
        self,
        redis: redis.Redis,
        integration: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        interval: float = 1.0,
        keep: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(integration, prefix=prefix, ttl=ttl, interval=interval, keep=keep, clock=clock)
        self._redis = redis
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> bool:
        pending, lost = self.buffer.take()
        if not pending:
            return True
        try:
            pipe = self._redis.pipeline(transaction=True)
            self._write(pipe, pending)
            pipe.execute()
        except (RedisError, OSError) as exc:
            self.buffer.give_back(pending, lost)
            return self._done(False, exc)
        return self._done(True)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"traffic-recorder-{self.integration}",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        self._closed(self.flush())
