"""The Dispatcher: the one place that queues, paces, retries and records notifications.

The engine calls ``await dispatcher.submit(notification)``, which only enqueues (it never waits for
Slack), so a slow or broken notifier cannot hold up evaluation. Each notifier has its own lane: a FIFO
and one worker task, so messages reach each channel in the order they were submitted.

A lane never spins: every attempt waits for the channel's pace (Slack: about one message a second),
a 429 parks the lane for the Retry-After Slack gave (fractional values included), 5xx and connection
errors back off exponentially, and errors a retry cannot fix (``invalid_auth``, ``channel_not_found``,
``invalid_blocks``…) are dropped at once, logged, counted as ``failed`` and reported by ``ready()``.

The outbox is a Redis list per notifier (``im:outbox:<notifier>``) when Redis is configured: an entry
is pushed before it is queued and removed after it was delivered, so a restart resumes where the last
process stopped (it may re-send the one message in flight at the crash; duplicates beat loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.notifiers import (
    PLUGINS,
    DeliveryError,
    DeliveryReceipt,
    Notifier,
    NotifierContext,
    build_notifiers,
    for_severity,
)

if TYPE_CHECKING:
    import redis.asyncio

    from alerts.config import AlertingConfig
    from integration_kit.redact import Redactor
    from monitor.component import Services
    from monitor.metrics import Metrics
    from monitor.settings import Config

log = logging.getLogger(__name__)

DEFAULT_OUTBOX_PREFIX = "im:outbox:"
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


# ---- outbox encoding ------------------------------------------------------------------------------

_ALERT_FIELDS = {f.name for f in dataclasses.fields(Alert)}


def encode_notification(notification: Notification) -> dict[str, Any]:
    return {
        "group_key": notification.group_key,
        "created_at": notification.created_at,
        "is_test": notification.is_test,
        "alerts": [
            {**dataclasses.asdict(a), "details": dict(a.details), "error_classes": dict(a.error_classes)}
            for a in notification.alerts
        ],
    }


def decode_notification(data: dict[str, Any]) -> Notification:
    alerts = []
    for raw in data["alerts"]:
        # Fields unknown to this version (an outbox written by a newer one) are dropped, not fatal.
        kwargs = {k: v for k, v in raw.items() if k in _ALERT_FIELDS}
        kwargs["severity"] = Severity(kwargs["severity"])
        kwargs["status"] = AlertStatus(kwargs["status"])
        alerts.append(Alert(**kwargs))
    return Notification(
        group_key=data["group_key"],
        alerts=tuple(alerts),
        created_at=float(data["created_at"]),
        is_test=bool(data.get("is_test", False)),
    )


@dataclass(slots=True)
class _Entry:
    notification: Notification
    raw: str  # exactly what is in the Redis list (LREM matches by value)
    attempts: int = 0
    unexpected: int = 0
    first_failure: float | None = None  # monotonic


def _new_entry(notification: Notification) -> _Entry:
    raw = json.dumps({"v": 1, "id": uuid.uuid4().hex, "n": encode_notification(notification)}, ensure_ascii=False)
    return _Entry(notification, raw)


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
        metrics: Metrics | None = None,
        redis: redis.asyncio.Redis | None = None,
        key_prefix: str = DEFAULT_OUTBOX_PREFIX,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._redis = redis
        self._prefix = key_prefix
        self._policy = policy or DeliveryPolicy()
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
    def from_services(cls, services: Services, *, policy: DeliveryPolicy | None = None) -> Dispatcher:
        """The daemon's dispatcher: notifiers of ``services.config.alerting``, outbox in ``services.redis``."""
        alerting = services.config.alerting
        # One root for every Redis key of alerting (state, outbox, Slack threads): alerting.key_prefix.
        context = NotifierContext(redactor=services.redactor, redis=services.redis, key_prefix=alerting.key_prefix)
        dispatcher = cls(
            build_notifiers(alerting, context), metrics=services.metrics, redis=services.redis, policy=policy,
            key_prefix=f"{alerting.key_prefix}outbox:",
        )
        dispatcher._context, dispatcher._alerting = context, alerting
        return dispatcher

    async def apply_config(self, alerting: AlertingConfig) -> None:
        """Config reload: rebuild the notifiers only if their config changed (queues are kept by name)."""
        if self._context is None:
            raise RuntimeError("apply_config needs a Dispatcher made by from_services")
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

    def on_config(self, config: Config) -> None:
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
        restored = [e for e in await self._load(lane.notifier.name) if e.raw not in present]
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
            await _close_quietly(lane.notifier)

    async def reconfigure(self, notifiers: Sequence[Notifier]) -> None:
        """Config reload: lanes of notifiers kept by name keep their queue; removed ones stop."""
        new = {n.name: n for n in notifiers}
        for name in list(self._lanes):
            if name not in new:
                gone = self._lanes.pop(name)
                if gone.task is not None:
                    gone.task.cancel()
                    await asyncio.gather(gone.task, return_exceptions=True)
                await _close_quietly(gone.notifier)
        for name, notifier in new.items():
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _Lane(notifier)
                if self._started:
                    await self._start_lane(lane)
            elif lane.notifier is not notifier:
                old, lane.notifier = lane.notifier, notifier
                lane.permanent_error = None  # the fix may have been this config change
                await _close_quietly(old)

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
            entry = _new_entry(filtered)
            await self._persist(name, entry)  # before queueing: the worker's removal must find it
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
        return {"outbox": "redis" if self._redis is not None else "memory", "notifiers": lanes}

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
        await self._unpersist(lane.notifier.name, entry.raw)
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

    # ---- outbox persistence -----------------------------------------------------------------------

    def _key(self, notifier: str) -> str:
        return f"{self._prefix}{notifier}"

    async def _persist(self, notifier: str, entry: _Entry) -> None:
        if self._redis is None:
            return
        try:
            await asyncio.wait_for(self._redis.rpush(self._key(notifier), entry.raw), self._policy.persist_timeout)
        except Exception as exc:
            log.warning("outbox: Redis write failed (%s); notification kept in memory only", type(exc).__name__)

    async def _unpersist(self, notifier: str, raw: str) -> None:
        if self._redis is None:
            return
        try:
            await asyncio.wait_for(self._redis.lrem(self._key(notifier), 1, raw), self._policy.persist_timeout)
        except Exception as exc:
            log.warning("outbox: Redis remove failed (%s); it may be re-sent after a restart", type(exc).__name__)

    async def _load(self, notifier: str) -> list[_Entry]:
        if self._redis is None:
            return []
        try:
            raws = await asyncio.wait_for(self._redis.lrange(self._key(notifier), 0, -1), self._policy.persist_timeout)
        except Exception as exc:
            log.warning("outbox: Redis read failed (%s); starting with an empty queue", type(exc).__name__)
            return []
        entries = []
        for raw in raws:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                entries.append(_Entry(decode_notification(json.loads(text)["n"]), text))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("outbox: dropping an unreadable entry for %s (%s)", notifier, type(exc).__name__)
                await self._unpersist(notifier, text)
        return entries


def _notifier_part(alerting: AlertingConfig) -> tuple[Any, ...]:
    return tuple(getattr(alerting, key, None) for key in PLUGINS)


async def _close_quietly(notifier: Notifier) -> None:
    try:
        await notifier.close()
    except Exception:
        log.exception("closing notifier %s failed", notifier.name)


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


# ---- send-test-alert ------------------------------------------------------------------------------

TEST_ATTEMPTS = 3
TEST_MAX_WAIT = 10.0


def make_test_notification(now: float | None = None) -> Notification:
    now = time.time() if now is None else now
    alert = Alert(
        key="integration-monitor/test",
        integration="integration-monitor",
        alert="test",
        severity=Severity.INFO,
        status=AlertStatus.FIRING,
        summary="Test alert: notifications from integration-monitor reach this channel",
        started_at=now,
        details={"Sent by": "integration-monitor send-test-alert"},
    )
    return Notification(group_key=f"test:{uuid.uuid4().hex[:8]}", alerts=(alert,), created_at=now, is_test=True)


async def send_test_alert(
    config: Config,
    *,
    redactor: Redactor | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Send one test message through every configured notifier; print one result line each.

    Returns the exit code: 0 when every notifier delivered, 1 otherwise. A 429 or 5xx is retried a few
    times (Retry-After honoured up to 10 s); a configuration error is reported at once.
    """
    from integration_kit.redact import Redactor

    redactor = redactor or Redactor(config.secret_values())
    notifiers = build_notifiers(config.alerting, NotifierContext(redactor=redactor))
    notification = make_test_notification()
    failures = 0
    for notifier in notifiers:
        try:
            receipt = await _send_with_retries(notifier, notification)
        except DeliveryError as exc:
            failures += 1
            hint = "" if exc.retryable else " (not retried: check token, channel and scopes)"
            out(f"{notifier.name}: FAILED — {redactor.text(exc.reason)}{hint}")
        else:
            where = f" to channel {receipt.channel}" if receipt.channel else ""
            ts = f" (ts {receipt.ts})" if receipt.ts else ""
            out(f"{notifier.name}: ok — {receipt.action}{where}{ts}")
        finally:
            await _close_quietly(notifier)
    return 1 if failures else 0


async def _send_with_retries(notifier: Notifier, notification: Notification) -> DeliveryReceipt:
    for attempt in range(1, TEST_ATTEMPTS + 1):
        try:
            return await notifier.send(notification)
        except DeliveryError as exc:
            if not exc.retryable or attempt == TEST_ATTEMPTS:
                raise
            wait = exc.retry_after if exc.retry_after is not None else float(attempt)
            await asyncio.sleep(min(wait, TEST_MAX_WAIT))
    raise AssertionError("unreachable")
