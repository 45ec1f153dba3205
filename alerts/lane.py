"""One notifier's lane: its queue of notifications, in order, and the worker that delivers them one by one.

A lane never spins: every attempt waits for the channel's pace (Slack: about one message a second), shared
with every replica posting to the same channel (``alerts/channel_pace.py``), a 429 parks the channel for
the Retry-After Slack gave (fractional values included; every replica's lane waits it out), 5xx and connection errors
back off exponentially (equal jitter), and errors a retry cannot fix (``invalid_auth``,
``channel_not_found``, ``invalid_blocks``…) drop the notification at once, logged, counted as ``failed``
and kept as the lane's ``permanent_error`` until the next success. A notification leaves the outbox only
once delivered or given up, and its notification log (``Entry.record``) is written only once the notifier
confirmed delivery (like Alertmanager's nflog); ``on_finished`` tells the engine either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alerts.channel_pace import ChannelPace
from alerts.model import Notification
from alerts.notifiers import DeliveryError, DeliveryReceipt, Notifier
from alerts.outbox import Outbox, Record, delivering_under

if TYPE_CHECKING:
    from alerts.inputs import NotificationMetrics

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
class Entry:
    notification: Notification
    raw: str  # the outbox entry, exactly as in Redis (LREM matches by value)
    record: Record | None = None  # the notification log to write once delivered (None: nothing to log)
    attempts: int = 0
    unexpected: int = 0
    first_failure: float | None = None  # monotonic


@dataclass(slots=True, kw_only=True)
class Lane:
    notifier: Notifier
    outbox: Outbox
    policy: DeliveryPolicy
    closing: asyncio.Event  # the dispatcher's supervisor's ``stopping``: set when it closes
    clock: Callable[[], float] = time.monotonic
    metrics: NotificationMetrics | None = None
    shared_pace: ChannelPace | None = None  # the channel's pace across replicas (None: this lane's own only)
    queue: deque[Entry] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    next_send_at: float = 0.0  # monotonic; pacing and 429 parking
    parked_reason: str | None = None
    retrying: str | None = None  # the last retryable error while an entry is being retried
    permanent_error: str | None = None  # the last non-retryable error, cleared by the next success
    last_receipt: DeliveryReceipt | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0, "suppressed": 0, "fenced": 0})
    groups: Counter[str] = field(default_factory=Counter)  # group key → notifications of it in the queue
    # (record, "sent" | "failed" | "fenced") once an entry with a record is delivered, given up or refused
    on_finished: Callable[[Record, str], None] | None = None
    on_attempt: Callable[[], None] | None = None  # after every delivery attempt (the dispatcher's verdict)

    def restore(self, restored: Iterable[Entry]) -> None:
        """Put what a previous process left in the outbox first in line (before the worker starts)."""
        restored = list(restored)
        self.queue.extendleft(reversed(restored))
        self.groups.update(entry.notification.group_key for entry in restored)
        self._update_idle()

    def append(self, entry: Entry) -> None:
        self.queue.append(entry)
        self.groups[entry.notification.group_key] += 1
        self.idle.clear()
        self.wake.set()

    def pending(self, group_key: str) -> bool:
        """A notification of this group is queued or being sent (its log is written when it is delivered)."""
        return self.groups[group_key] > 0

    def count(self, result: str) -> None:
        self.counts[result] += 1
        if self.metrics is not None:
            self.metrics.notifications.labels(notifier=self.notifier.name, result=result).inc()

    def status(self) -> dict[str, Any]:
        receipt = self.last_receipt
        parked = round(max(0.0, self.next_send_at - self.clock()), 3) if self.parked_reason else 0.0
        return {
            "queued": len(self.queue),
            **self.counts,
            "parked_seconds": parked,
            "parked_reason": self.parked_reason,
            "retrying": self.retrying,
            "error": self.permanent_error,
            "last": None if receipt is None else {"action": receipt.action, "channel": receipt.channel},
        }

    # ---- the worker -------------------------------------------------------------------------------

    async def work(self) -> None:
        """The worker: delivers until the dispatcher closes. Run supervised (a crash of ours is logged,
        counted and the worker restarted; the queue is kept)."""
        while not self.closing.is_set():
            await self._work_once()

    async def _work_once(self) -> None:
        """One step: wait for work or pace, then one delivery attempt of the head of the queue."""
        if not self.queue:
            self._update_idle()
            self.wake.clear()
            await self.wake.wait()
            return
        if not await self._sleep(self.next_send_at - self.clock()):
            return
        entry = self.queue[0]
        notifier = self.notifier
        pace = notifier.min_interval if self.policy.pace is None else self.policy.pace
        if not await self.outbox.may_send(entry.record):
            log.warning("notification for %s via %s refused: another replica owns its integration now (fencing "
                        "token %s superseded)", entry.notification.group_key, notifier.name,
                        entry.record.fence if entry.record is not None else None)
            await self._finish(entry, "fenced")
            return
        if self.shared_pace is not None:  # claimed last: a refused notification takes no one's turn
            wait = await self.shared_pace.claim(notifier.channel_key, pace)
            if wait > 0:  # another replica posted to this channel (or was told to wait) since
                self.next_send_at = max(self.next_send_at, self.clock() + wait)
                self.parked_reason = self.parked_reason or "the channel's pace, shared with the other replicas"
                return
        under = delivering_under.set(entry.record.fence if entry.record is not None else None)
        try:
            receipt = await notifier.send(entry.notification)
        except DeliveryError as exc:
            self.next_send_at = self.clock() + pace
            await self._failed_attempt(entry, exc)
        except Exception as exc:  # a bug in a notifier: a few tries, then drop, never spin
            self.next_send_at = self.clock() + pace
            log.exception("notifier %s raised unexpectedly", notifier.name)
            entry.unexpected += 1
            reason = f"unexpected {type(exc).__name__} (see log)"
            if entry.unexpected >= UNEXPECTED_ERROR_ATTEMPTS:
                await self._finish(entry, "failed")
                self.permanent_error = reason
            else:
                await self._failed_attempt(entry, DeliveryError(reason, retryable=True))
        else:
            self.next_send_at = self.clock() + pace
            self.last_receipt = receipt
            self.permanent_error = self.retrying = self.parked_reason = None
            await self._finish(entry, "sent")
            _log_delivered(notifier.name, entry.notification, receipt)
        finally:
            delivering_under.reset(under)
            if self.on_attempt is not None:
                self.on_attempt()

    async def _failed_attempt(self, entry: Entry, exc: DeliveryError) -> None:
        name, group = self.notifier.name, entry.notification.group_key
        now = self.clock()
        entry.attempts += 1
        if not exc.retryable:
            log.error("notification for %s via %s failed, not retried: %s", group, name, exc.reason)
            self.permanent_error = exc.reason
            self.retrying = None
            await self._finish(entry, "failed")
            return
        if entry.first_failure is None:
            entry.first_failure = now
        if now - entry.first_failure >= self.policy.give_up_after:
            log.error(
                "notification for %s via %s dropped after %d attempts over %.0fs: %s",
                group, name, entry.attempts, now - entry.first_failure, exc.reason,
            )
            await self._finish(entry, "failed")
            self.retrying = exc.reason
            return
        if exc.retry_after is not None:
            # Slack asked: park the whole channel (not only this message) until it said.
            wait = min(max(exc.retry_after, 0.0), self.policy.max_retry_after)
            self.parked_reason = exc.reason
            if self.shared_pace is not None:  # …and every other replica's lane posting to the channel
                await self.shared_pace.park(self.notifier.channel_key, wait)
        else:
            cap = min(self.policy.max_backoff, self.policy.backoff * 2 ** (entry.attempts - 1))
            wait = cap / 2 + random.random() * cap / 2  # "equal jitter": never near zero
            self.parked_reason = None
        self.retrying = exc.reason
        self.next_send_at = max(self.next_send_at, now + wait)
        log.warning(
            "notification for %s via %s not delivered (attempt %d): %s; next try in %.2fs",
            group, name, entry.attempts, exc.reason, self.next_send_at - now,
        )

    async def _finish(self, entry: Entry, result: str) -> None:
        if result == "sent":
            await self.outbox.delivered(self.notifier.name, entry.raw, entry.record)
        else:
            await self.outbox.remove(self.notifier.name, entry.raw)
        if self.queue and self.queue[0] is entry:
            self.queue.popleft()
            key = entry.notification.group_key
            self.groups[key] -= 1
            if self.groups[key] <= 0:
                del self.groups[key]
        self.count(result)
        self._update_idle()
        if entry.record is not None and self.on_finished is not None:
            try:
                self.on_finished(entry.record, result)
            except Exception:  # the engine's bookkeeping must not stop the lane
                log.exception("notification log update for %s failed", entry.notification.group_key)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless closing; False when the dispatcher is closing."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.closing.wait()
        return not self.closing.is_set()

    def _update_idle(self) -> None:
        if self.queue:
            self.idle.clear()
        else:
            self.idle.set()


def _log_delivered(name: str, notification: Notification, receipt: DeliveryReceipt) -> None:
    firsts = [a.first_failure_at for a in notification.alerts if a.first_failure_at is not None]
    latency = f"; {time.time() - min(firsts):.3f}s after the first failing probe" if firsts else ""
    log.info(
        "notification for %s delivered via %s (%s, %d firing, %d resolved)%s",
        notification.group_key, name, receipt.action, len(notification.firing), len(notification.resolved), latency,
    )
