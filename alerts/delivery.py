"""The Dispatcher: the one place that queues, paces, retries and records notifications.

The engine calls ``await dispatcher.submit(notification)``, which only enqueues (it never waits for
Slack), so a slow or broken notifier cannot hold up evaluation. Each notifier has its own lane: a FIFO
and one worker task, so messages reach each channel in the order they were submitted.

A lane never spins: every attempt waits for the channel's pace (Slack: about one message a second),
a 429 parks the lane for the Retry-After Slack gave (fractional values included), 5xx and connection
errors back off exponentially, and errors a retry cannot fix (``invalid_auth``, ``channel_not_found``,
``invalid_blocks``…) are dropped at once, logged, counted as ``failed`` and reported by ``ready()``.

Each queue is mirrored in the outbox (``alerts/outbox.py``, a Redis list per notifier) when Redis is
configured, so a restart resumes where the last process stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alerts.model import Notification
from alerts.notifiers import (
    PLUGINS,
    DeliveryError,
    DeliveryReceipt,
    Notifier,
    NotifierContext,
    build_notifiers,
    close_quietly,
    for_severity,
)
from alerts.outbox import DEFAULT_OUTBOX_PREFIX, Outbox, new_entry

if TYPE_CHECKING:
    import redis.asyncio

    from alerts.config import AlertingConfig
    from alerts.inputs import ConfigView, NotificationMetrics
    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

UNEXPECTED_ERROR_ATTEMPTS = 3  # a bug in a notifier is not fixed by retrying for an hour


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryPolicy:
    pace: float | None = None  # seconds between messages per channel; None: the notifier's own (Slack 1 s)
    backoff: float = 1.0  # first wait after a 5xx or connection error; doubles per attempt
    max_backoff: float = 300.0
    give_up_after: float = 3600.0  # a notification failing (retryably) this long is dropped as failed
    max_retry_after: float = 3600.0  # cap on the Retry-After we honour
    persist_timeout: float = 2.0  # a Redis write slower than this is given up (entry kept in memory)
    max_queue: int = 10_000  # per notifier; beyond it new notifications are dropped (failed) and logged


@dataclass(slots=True)
class _Entry:
    notification: Notification
    raw: str  # the outbox entry, exactly as in Redis (LREM matches by value)
    attempts: int = 0
    unexpected: int = 0
    first_failure: float | None = None  # monotonic


@dataclass(slots=True)
class _Lane:
    notifier: Notifier
    queue: deque[_Entry] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    next_send_at: float = 0.0  # monotonic; pacing and 429 parking
    parked_reason: str | None = None
    retrying: str | None = None  # the last retryable error while an entry is being retried
    permanent_error: str | None = None  # the last non-retryable error, cleared by the next success
    last_receipt: DeliveryReceipt | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0, "suppressed": 0})


class Dispatcher:
    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        metrics: NotificationMetrics | None = None,
        redis: redis.asyncio.Redis | None = None,
        key_prefix: str = DEFAULT_OUTBOX_PREFIX,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._policy = policy or DeliveryPolicy()
        self._outbox = Outbox(redis, key_prefix, timeout=self._policy.persist_timeout)
        self._clock = clock
        self._closing = asyncio.Event()
        self._started = False
        self._lanes: dict[str, _Lane] = {}
        self._context: NotifierContext | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._alerting: AlertingConfig | None = None
        for notifier in notifiers:
            if notifier.name in self._lanes:
                raise ValueError(f"two notifiers named {notifier.name!r}")
            self._lanes[notifier.name] = _Lane(notifier)

    @classmethod
    def for_alerting(
        cls,
        alerting: AlertingConfig,
        *,
        redactor: Redactor,
        redis: redis.asyncio.Redis | None,
        metrics: NotificationMetrics | None = None,
        policy: DeliveryPolicy | None = None,
    ) -> Dispatcher:
        """The notifiers of the ``alerting`` config section, outbox in ``redis``; reloadable (apply_config)."""
        # One root for every Redis key of alerting (state, outbox, Slack threads): alerting.key_prefix.
        context = NotifierContext(redactor=redactor, redis=redis, key_prefix=alerting.key_prefix)
        dispatcher = cls(
            build_notifiers(alerting, context), metrics=metrics, redis=redis, policy=policy,
            key_prefix=f"{alerting.key_prefix}outbox:",
        )
        dispatcher._context, dispatcher._alerting = context, alerting
        return dispatcher

    async def apply_config(self, alerting: AlertingConfig) -> None:
        """Config reload: rebuild the notifiers only if their config changed (queues are kept by name)."""
        if self._context is None:
            raise RuntimeError("apply_config needs a Dispatcher made by for_alerting")
        if self._alerting is not None and _notifier_part(self._alerting) == _notifier_part(alerting):
            return
        self._alerting = alerting
        await self.reconfigure(build_notifiers(alerting, self._context))

    @property
    def notifier_names(self) -> list[str]:
        return list(self._lanes)

    # ---- Component protocol (monitor/component.py): the app can run the dispatcher as a component ----

    name = "notifiers"

    def on_result(self, result: object) -> None:
        return None

    def on_config(self, config: ConfigView) -> None:
        """Reload hook (synchronous by contract): the rebuild runs as a task, one at a time, in order."""
        previous = self._reload_task

        async def reload() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await self.apply_config(config.alerting)
            except Exception:
                log.exception("applying the new notifier config failed; the previous notifiers keep running")

        self._reload_task = asyncio.get_running_loop().create_task(reload(), name="notifiers-reload")

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load undelivered notifications of a previous process, then start one worker per notifier."""
        self._started = True
        for lane in self._lanes.values():
            await self._start_lane(lane)

    async def _start_lane(self, lane: _Lane) -> None:
        present = {entry.raw for entry in lane.queue}  # submitted before start(): already queued
        stored = await self._outbox.load(lane.notifier.name)
        restored = [_Entry(notification, raw) for raw, notification in stored if raw not in present]
        if restored:
            log.info("outbox: %d undelivered notification(s) for %s resumed", len(restored), lane.notifier.name)
        lane.queue.extendleft(reversed(restored))
        self._update_idle(lane)
        lane.task = asyncio.create_task(self._work(lane), name=f"notifier-{lane.notifier.name}")

    async def close(self, grace: float = 5.0) -> None:
        """Stop the workers (a send in flight gets ``grace`` seconds) and close the notifiers.

        Undelivered notifications stay in the Redis outbox for the next process.
        """
        if self._reload_task is not None:
            await asyncio.gather(self._reload_task, return_exceptions=True)
        self._closing.set()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for lane in self._lanes.values():
            lane.wake.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes.values():
            lane.task = None
            await close_quietly(lane.notifier)

    async def reconfigure(self, notifiers: Sequence[Notifier]) -> None:
        """Config reload: lanes of notifiers kept by name keep their queue; removed ones stop."""
        new = {n.name: n for n in notifiers}
        for name in list(self._lanes):
            if name not in new:
                gone = self._lanes.pop(name)
                if gone.task is not None:
                    gone.task.cancel()
                    await asyncio.gather(gone.task, return_exceptions=True)
                await close_quietly(gone.notifier)
        for name, notifier in new.items():
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _Lane(notifier)
                if self._started:
                    await self._start_lane(lane)
            elif lane.notifier is not notifier:
                old, lane.notifier = lane.notifier, notifier
                lane.permanent_error = None  # the fix may have been this config change
                await close_quietly(old)

    # ---- the engine's side ------------------------------------------------------------------------

    async def submit(self, notification: Notification) -> None:
        """Queue for every notifier (filtered by its min_severity). Returns without waiting for delivery."""
        for lane in list(self._lanes.values()):
            name = lane.notifier.name
            filtered = for_severity(notification, lane.notifier.min_severity)
            if filtered is None:
                self._count(lane, "suppressed")
                continue
            if len(lane.queue) >= self._policy.max_queue:
                log.error(
                    "outbox for %s is full (%d); dropping notification %s", name, len(lane.queue), filtered.group_key
                )
                self._count(lane, "failed")
                continue
            entry = _Entry(filtered, new_entry(filtered))
            await self._outbox.push(name, entry.raw)  # before queueing: the worker's removal must find it
            lane.queue.append(entry)
            lane.idle.clear()
            lane.wake.set()

    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (a result, not an error)
        """Wait until every queue is empty (delivered or given up). True if it emptied in time."""
        waits = [lane.idle.wait() for lane in self._lanes.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            return False
        return True

    def ready(self) -> tuple[bool, str]:
        broken = [f"{name}: {lane.permanent_error}" for name, lane in self._lanes.items() if lane.permanent_error]
        if broken:
            return False, "notifier failing, not retried (fix the config): " + "; ".join(broken)
        return True, "notifiers ok"

    def failing(self) -> dict[str, str]:
        """Notifiers currently failing (for the self-health alert), with the reason."""
        out = {}
        for name, lane in self._lanes.items():
            reason = lane.permanent_error or lane.retrying
            if reason:
                out[name] = reason
        return out

    def status(self) -> dict[str, Any]:
        now = self._clock()
        lanes = {}
        for name, lane in self._lanes.items():
            receipt = lane.last_receipt
            lanes[name] = {
                "queued": len(lane.queue),
                **lane.counts,
                "parked_seconds": round(max(0.0, lane.next_send_at - now), 3) if lane.parked_reason else 0.0,
                "parked_reason": lane.parked_reason,
                "retrying": lane.retrying,
                "error": lane.permanent_error,
                "last": None if receipt is None else {"action": receipt.action, "channel": receipt.channel},
            }
        return {"outbox": "redis" if self._outbox.durable else "memory", "notifiers": lanes}

    # ---- the worker -------------------------------------------------------------------------------

    async def _work(self, lane: _Lane) -> None:
        while not self._closing.is_set():
            try:
                await self._work_once(lane)
            except Exception:  # a bug of ours must not silently stop this lane for good
                log.exception("notifier worker %s failed; continuing in 1s", lane.notifier.name)
                await self._sleep(1.0)

    async def _work_once(self, lane: _Lane) -> None:
        """One step: wait for work or pace, then one delivery attempt of the head of the queue."""
        if not lane.queue:
            self._update_idle(lane)
            lane.wake.clear()
            await lane.wake.wait()
            return
        if not await self._sleep(lane.next_send_at - self._clock()):
            return
        entry = lane.queue[0]
        pace = lane.notifier.min_interval if self._policy.pace is None else self._policy.pace
        try:
            receipt = await lane.notifier.send(entry.notification)
        except DeliveryError as exc:
            lane.next_send_at = self._clock() + pace
            await self._failed_attempt(lane, entry, exc)
        except Exception as exc:  # a bug in a notifier: a few tries, then drop, never spin
            lane.next_send_at = self._clock() + pace
            log.exception("notifier %s raised unexpectedly", lane.notifier.name)
            entry.unexpected += 1
            reason = f"unexpected {type(exc).__name__} (see log)"
            if entry.unexpected >= UNEXPECTED_ERROR_ATTEMPTS:
                await self._finish(lane, entry, "failed")
                lane.permanent_error = reason
            else:
                await self._failed_attempt(lane, entry, DeliveryError(reason, retryable=True))
        else:
            lane.next_send_at = self._clock() + pace
            lane.last_receipt = receipt
            lane.permanent_error = lane.retrying = lane.parked_reason = None
            await self._finish(lane, entry, "sent")
            _log_delivered(lane.notifier.name, entry.notification, receipt)

    async def _failed_attempt(self, lane: _Lane, entry: _Entry, exc: DeliveryError) -> None:
        name, group = lane.notifier.name, entry.notification.group_key
        now = self._clock()
        entry.attempts += 1
        if not exc.retryable:
            log.error("notification for %s via %s failed, not retried: %s", group, name, exc.reason)
            lane.permanent_error = exc.reason
            lane.retrying = None
            await self._finish(lane, entry, "failed")
            return
        if entry.first_failure is None:
            entry.first_failure = now
        if now - entry.first_failure >= self._policy.give_up_after:
            log.error(
                "notification for %s via %s dropped after %d attempts over %.0fs: %s",
                group,
                name,
                entry.attempts,
                now - entry.first_failure,
                exc.reason,
            )
            await self._finish(lane, entry, "failed")
            lane.retrying = exc.reason
            return
        if exc.retry_after is not None:
            # Slack asked: park the whole channel (not only this message) until it said.
            wait = min(max(exc.retry_after, 0.0), self._policy.max_retry_after)
            lane.parked_reason = exc.reason
        else:
            cap = min(self._policy.max_backoff, self._policy.backoff * 2 ** (entry.attempts - 1))
            wait = cap / 2 + random.random() * cap / 2  # "equal jitter": never near zero
            lane.parked_reason = None
        lane.retrying = exc.reason
        lane.next_send_at = max(lane.next_send_at, now + wait)
        log.warning(
            "notification for %s via %s not delivered (attempt %d): %s; next try in %.2fs",
            group,
            name,
            entry.attempts,
            exc.reason,
            lane.next_send_at - now,
        )

    async def _finish(self, lane: _Lane, entry: _Entry, result: str) -> None:
        if lane.queue and lane.queue[0] is entry:
            lane.queue.popleft()
        await self._outbox.remove(lane.notifier.name, entry.raw)
        self._count(lane, result)
        self._update_idle(lane)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless closing; False when the dispatcher is closing."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)
        return not self._closing.is_set()

    def _count(self, lane: _Lane, result: str) -> None:
        lane.counts[result] += 1
        if self._metrics is not None:
            self._metrics.notifications.labels(notifier=lane.notifier.name, result=result).inc()

    @staticmethod
    def _update_idle(lane: _Lane) -> None:
        if lane.queue:
            lane.idle.clear()
        else:
            lane.idle.set()


def _notifier_part(alerting: AlertingConfig) -> tuple[Any, ...]:
    return tuple(getattr(alerting, key, None) for key in PLUGINS)


def _log_delivered(name: str, notification: Notification, receipt: DeliveryReceipt) -> None:
    firsts = [a.first_failure_at for a in notification.alerts if a.first_failure_at is not None]
    latency = f"; {time.time() - min(firsts):.3f}s after the first failing probe" if firsts else ""
    log.info(
        "notification for %s delivered via %s (%s, %d firing, %d resolved)%s",
        notification.group_key,
        name,
        receipt.action,
        len(notification.firing),
        len(notification.resolved),
        latency,
    )
