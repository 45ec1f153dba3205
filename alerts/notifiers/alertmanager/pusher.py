"""One Alertmanager's sender: the newest batch of alerts, posted as soon as it comes and retried with
backoff while that Alertmanager is down or answering 5xx.

Every evaluation hands over a complete batch (every firing and recently resolved alert), so a newer batch
replaces one that is still waiting: the queue never holds more than one batch per Alertmanager, never
sends stale ones and never grows while an Alertmanager is away. Waits after failures double from
``backoff`` (equal jitter, so never near zero) up to the evaluation interval (capped by ``max_backoff``):
a down Alertmanager gets at most one attempt per interval once the backoff is up, the same traffic as a
healthy one. Each attempt is counted: ``integration_notifications_total{notifier="alertmanager",result}``
``sent`` (a batch accepted) or ``failed`` (an attempt that failed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alerts.notifiers.base import DeliveryError
from integration_kit.tasks import stop

log = logging.getLogger(__name__)

Post = Callable[[str, Sequence[Mapping[str, Any]]], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPolicy:
    backoff: float = 1.0  # first wait after a failed post; doubles with every failure in a row
    max_backoff: float = 60.0  # cap of the wait (it is also never longer than the evaluation interval)
    batch_size: int = 256  # alerts per request, as Prometheus sends them
    max_alerts: int = 10_000  # per batch; beyond it the least severe alerts are left out (logged, counted)


@dataclass(frozen=True, slots=True)
class Batch:
    alerts: tuple[Mapping[str, Any], ...]
    interval: float  # the evaluation interval: a newer batch comes after this long


class Pusher:
    def __init__(
        self, url: str, post: Post, *, policy: PushPolicy, count: Callable[[str], None],
        on_attempt: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``count``: each attempt's result ("sent", "failed"); ``on_attempt``: after each attempt, once
        ``error`` says how it went."""
        self.url = url
        self._post = post
        self._policy = policy
        self._count = count
        self._on_attempt = on_attempt
        self._clock = clock
        self._pending: Batch | None = None
        self._sending: Batch | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # failed attempts in a row
        self.next_attempt_at = 0.0  # monotonic
        self.error: str | None = None  # the last failure, until the next success
        self.permanent_error: str | None = None  # the last failure a retry cannot fix (401, 404, 400, TLS)
        self.last_success: float | None = None  # epoch
        self.last_alerts = 0  # alerts in the last batch delivered

    def offer(self, batch: Batch) -> None:
        """Replace whatever is waiting with ``batch`` (never blocks)."""
        self._pending = batch
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"alertmanager-{self.url}")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop(task)

    @property
    def waiting(self) -> int:
        """Alerts of the newest batch not yet delivered (waiting or being posted)."""
        batch = self._pending or self._sending
        return 0 if batch is None else len(batch.alerts)

    def status(self) -> dict[str, Any]:
        return {
            "state": "failing" if self.permanent_error else ("retrying" if self.error else "ok"),
            "error": self.error,
            "failed_attempts": self.failures,
            "next_attempt_in": round(max(0.0, self.next_attempt_at - self._clock()), 3) if self.error else 0.0,
            "last_success": self.last_success,
            "alerts_sent": self.last_alerts,
            "alerts_waiting": self.waiting,
        }

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:  # a bug of ours must not stop this Alertmanager's updates for good
                log.exception("alertmanager sender for %s failed; continuing in 1s", self.url)
                await asyncio.sleep(1.0)

    async def _step(self) -> None:
        await self._wake.wait()
        wait = self.next_attempt_at - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self._wake.clear()
        batch, self._pending = self._pending, None
        if batch is None:
            return
        self._sending = batch
        try:
            size = self._policy.batch_size
            for start in range(0, len(batch.alerts), size):
                await self._post(self.url, batch.alerts[start : start + size])
        except DeliveryError as exc:
            self._failed(batch, exc)
        else:
            self._delivered(batch)
        finally:
            self._sending = None
        self._on_attempt()

    def _failed(self, batch: Batch, exc: DeliveryError) -> None:
        self._count("failed")
        self.failures += 1
        first = self.error != exc.reason
        self.error = exc.reason
        if exc.retryable:
            if self._pending is None:  # nothing newer came meanwhile: try this one again
                self._pending = batch
                self._wake.set()
            wait = self._backoff(batch.interval, exc.retry_after)
            self.permanent_error = None
        else:
            # The next evaluation's batch is the next try: a bad credential or URL gets one attempt per
            # evaluation interval, never a loop.
            wait = batch.interval
            self.permanent_error = exc.reason
        self.next_attempt_at = self._clock() + wait
        level = logging.WARNING if first or not exc.retryable else logging.DEBUG
        log.log(level, "alerts not delivered to alertmanager %s (attempt %d in a row): %s; next try in %.1fs",
                self.url, self.failures, exc.reason, wait)

    def _delivered(self, batch: Batch) -> None:
        self._count("sent")
        if self.failures:
            log.info("alertmanager %s accepts alerts again after %d failed attempt(s)", self.url, self.failures)
        self.failures = 0
        self.error = self.permanent_error = None
        self.next_attempt_at = 0.0
        self.last_success = time.time()
        self.last_alerts = len(batch.alerts)

    def _backoff(self, interval: float, retry_after: float | None) -> float:
        cap = min(self._policy.max_backoff, max(self._policy.backoff, interval))
        step = min(cap, self._policy.backoff * 2 ** (self.failures - 1))
        wait = step / 2 + random.random() * step / 2
        return min(cap, max(wait, retry_after or 0.0))
