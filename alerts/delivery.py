"""The Dispatcher: the one place that queues, paces, retries and records notifications.

The engine plans per notifier (``notifier_floors``) and calls ``await dispatcher.submit_to(notifier, notification,
record)``, which only enqueues (it never waits for Slack), so a slow or broken notifier cannot hold up
evaluation. Each notifier has its own lane (``alerts/lane.py``): a FIFO and one worker task, so messages
reach each channel in the order they were submitted, paced, retried and parked per channel. Each queue is
mirrored in the outbox (``alerts/outbox.py``, a Redis list per notifier) when Redis is configured, so a
restart resumes where the last process stopped. The record (the notification log the engine planned) is
written once that notifier confirmed delivery, and the engine hears of every outcome (``on_finished``);
while a group has a notification in a lane (``pending``) the engine plans nothing more for that lane and
group, so a submit cut short, or a retry, never queues the same news twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from alerts.channel_pace import ChannelPace
from alerts.config import DEFAULT_KEY_PREFIX
from alerts.lane import DeliveryPolicy, Entry, Lane
from alerts.model import Notification, Severity
from alerts.notifiers import PLUGINS, Notifier, NotifierContext, build_notifiers, close_quietly, for_severity
from alerts.outbox import DEFAULT_OUTBOX_PREFIX, Outbox, Record, new_entry
from alerts.reloads import OrderedReloads
from integration_kit.supervisor import Supervisor

if TYPE_CHECKING:
    import redis.asyncio

    from alerts.config import AlertingConfig
    from alerts.inputs import ConfigView, NotificationMetrics
    from integration_kit.redact import Redactor

__all__ = ["DeliveryPolicy", "Dispatcher"]

log = logging.getLogger(__name__)

class Dispatcher:
    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        metrics: NotificationMetrics | None = None,
        redis: redis.asyncio.Redis | None = None,
        key_prefix: str = DEFAULT_OUTBOX_PREFIX,
        log_prefix: str = DEFAULT_KEY_PREFIX,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``key_prefix``: the outbox lists'; ``log_prefix``: alerting's (the notification log)."""
        self._metrics = metrics
        self._policy = policy or DeliveryPolicy()
        self._outbox = Outbox(redis, key_prefix, log_prefix=log_prefix, timeout=self._policy.persist_timeout)
        self._pace = ChannelPace(redis, log_prefix, timeout=self._policy.persist_timeout)
        self._finished_listeners: list[Callable[[Record, str], None]] = []
        self._clock = clock
        self._supervisor = Supervisor(
            self.name,
            on_crash=metrics.component_errors.labels(self.name).inc if metrics is not None else None,
            on_state=(lambda ok: metrics.component_ok.labels(self.name).set(1 if ok else 0)) if metrics else None,
        )
        self._closing = self._supervisor.stopping
        self._started = False
        self._lanes: dict[str, Lane] = {}
        self._context: NotifierContext | None = None
        self._reloads = OrderedReloads("notifiers")
        self._alerting: AlertingConfig | None = None
        self._checks: set[asyncio.Task[None]] = set()  # notifiers asked whether their setup works (_verify)
        for notifier in notifiers:
            if notifier.name in self._lanes:
                raise ValueError(f"two notifiers named {notifier.name!r}")
            self._lanes[notifier.name] = self._new_lane(notifier)

    def _new_lane(self, notifier: Notifier) -> Lane:
        return Lane(notifier=notifier, outbox=self._outbox, policy=self._policy, closing=self._closing,
                    clock=self._clock, metrics=self._metrics, shared_pace=self._pace, on_finished=self._finished,
                    on_attempt=self._report)

    def _finished(self, record: Record, result: str) -> None:
        for listener in self._finished_listeners:
            listener(record, result)

    def on_finished(self, listener: Callable[[Record, str], None]) -> None:
        """``listener(record, result)`` when a notification with a record was delivered ("sent") or given up
        ("failed"); the engine keeps its copy of the notification log with it."""
        self._finished_listeners.append(listener)

    @classmethod
    def for_alerting(
        cls,
        alerting: AlertingConfig,
        *,
        redactor: Redactor,
        redis: redis.asyncio.Redis | None,
        metrics: NotificationMetrics | None = None,
        policy: DeliveryPolicy | None = None,
        replica: str | None = None,
    ) -> Dispatcher:
        """The notifiers of the ``alerting`` config section, outbox in ``redis``; reloadable (apply_config).
        ``replica``: this replica's id when several share the Redis: its outbox is its own (a restarted
        replica resumes what it queued, never what another one, alive, is sending)."""
        # One root for every Redis key of alerting (state, outbox, Slack threads): alerting.key_prefix.
        context = NotifierContext(redactor=redactor, redis=redis, key_prefix=alerting.key_prefix)
        outbox = f"{alerting.key_prefix}outbox:" + (f"{replica}:" if replica else "")
        dispatcher = cls(
            build_notifiers(alerting, context), metrics=metrics, redis=redis, policy=policy,
            key_prefix=outbox, log_prefix=alerting.key_prefix,
        )
        dispatcher._context, dispatcher._alerting = context, alerting
        return dispatcher

    async def apply_config(self, alerting: AlertingConfig) -> None:
        """Config reload: rebuild the notifiers only if their config changed (queues are kept by name)."""
        notifiers = self._rebuilt(alerting)
        if notifiers is not None:
            await self.reconfigure(notifiers)

    def _rebuilt(self, alerting: AlertingConfig) -> list[Notifier] | None:
        """The notifiers of ``alerting`` if their config changed, None if it did not; raises if they
        cannot be built (and then nothing changed)."""
        if self._context is None:
            raise RuntimeError("apply_config needs a Dispatcher made by for_alerting")
        if self._alerting is not None and _notifier_part(self._alerting) == _notifier_part(alerting):
            return None
        notifiers = build_notifiers(alerting, self._context)
        self._alerting = alerting
        return notifiers

    @property
    def notifier_names(self) -> list[str]:
        return list(self._lanes)

    def notifier_floors(self) -> list[tuple[str, Severity]]:
        """Every notifier with the least severity it takes (the engine plans for each)."""
        return [(name, lane.notifier.min_severity) for name, lane in self._lanes.items()]

    def pending(self, notifier: str, group_key: str) -> bool:
        """Whether a notification of the group is still on its way through this notifier."""
        lane = self._lanes.get(notifier)
        return lane is not None and lane.pending(group_key)

    async def synced(self) -> bool:
        """Whether every notifier has written to Redis what it keeps there about messages it sent (the
        Slack thread records) — those it could not write while Redis was unreachable included."""
        done = True
        for lane in list(self._lanes.values()):
            sync = getattr(lane.notifier, "synced", None)
            if sync is not None and not await sync():
                done = False
        return done

    # ---- Component protocol (monitor/component.py): the app can run the dispatcher as a component ----

    name = "notifiers"

    def on_result(self, result: object) -> None:
        return None

    def on_config(self, config: ConfigView) -> None:
        """Reload hook (synchronous by contract). The new notifiers are built here, so a config they cannot
        be built from fails the reload, which then puts the old config back everywhere; swapping them in
        (queues kept by name) runs as a task, one at a time, in order."""
        notifiers = self._rebuilt(config.alerting)
        if notifiers is not None:
            self._reloads.submit(lambda: self.reconfigure(notifiers))

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load undelivered notifications of a previous process, then start one worker per notifier."""
        self._started = True
        self._report()
        for lane in self._lanes.values():
            await self._start_lane(lane)

    async def _start_lane(self, lane: Lane) -> None:
        present = {entry.raw for entry in lane.queue}  # submitted before start(): already queued
        stored = await self._outbox.load(lane.notifier.name)
        restored = [Entry(notification, raw, record) for raw, notification, record in stored if raw not in present]
        if restored:
            log.info("outbox: %d undelivered notification(s) for %s resumed", len(restored), lane.notifier.name)
        lane.restore(restored)
        self._supervisor.start(_worker(lane.notifier.name), lane.work)
        self._verify(lane)

    def _verify(self, lane: Lane) -> None:
        """The daemon's notifiers (built from the config) are asked once whether their setup works (those
        that can tell: Slack's bot token): what a retry cannot fix shows in /readyz at once."""
        notifier = lane.notifier
        verify = getattr(notifier, "verify", None)
        if self._alerting is None or verify is None:
            return

        async def check() -> None:
            problem = await verify()
            if problem is not None and lane.notifier is notifier and lane.permanent_error is None:
                log.error("notifier %s will fail until its config is fixed: %s", notifier.name, problem)
                lane.permanent_error = problem
                self._report()

        task = asyncio.get_running_loop().create_task(check(), name=f"verify-{notifier.name}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def close(self, grace: float = 5.0) -> None:
        """Stop the workers (a send in flight gets ``grace`` seconds) and close the notifiers.

        Undelivered notifications stay in the Redis outbox for the next process.
        """
        await self._reloads.wait()
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        self._closing.set()
        for lane in self._lanes.values():
            lane.wake.set()
        await self._supervisor.close(grace)
        for lane in self._lanes.values():
            await close_quietly(lane.notifier)

    async def reconfigure(self, notifiers: Sequence[Notifier]) -> None:
        """Config reload: lanes of notifiers kept by name keep their queue; removed ones stop."""
        new = {n.name: n for n in notifiers}
        for name in list(self._lanes):
            if name not in new:
                gone = self._lanes.pop(name)
                self._supervisor.cancel(_worker(name))
                await close_quietly(gone.notifier)
        for name, notifier in new.items():
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = self._new_lane(notifier)
                if self._started:
                    await self._start_lane(lane)
            elif lane.notifier is not notifier:
                old, lane.notifier = lane.notifier, notifier
                lane.permanent_error = None  # the fix may have been this config change
                await close_quietly(old)
                if self._started:
                    self._verify(lane)
        self._report()

    # ---- the engine's side ------------------------------------------------------------------------

    async def submit(self, notification: Notification) -> None:
        """Queue for every notifier (filtered by its min_severity), logging nothing once delivered: for
        one-off notifications (tests, benches). Returns without waiting for delivery."""
        for lane in list(self._lanes.values()):
            filtered = for_severity(notification, lane.notifier.min_severity)
            if filtered is None:
                lane.count("suppressed")
                continue
            await self._queue(lane, filtered, None)

    async def submit_to(self, notifier: str, notification: Notification, record: Record) -> None:
        """Queue for one notifier; ``record`` is written once it delivered. Returns without waiting."""
        lane = self._lanes.get(notifier)
        if lane is None:
            raise KeyError(f"no notifier {notifier!r}")
        await self._queue(lane, notification, record)

    async def _queue(self, lane: Lane, notification: Notification, record: Record | None) -> None:
        if len(lane.queue) >= self._policy.max_queue:
            log.error("outbox for %s is full (%d); dropping notification %s", lane.notifier.name, len(lane.queue),
                      notification.group_key)
            lane.count("failed")
            if record is not None:
                self._finished(record, "failed")
            return
        entry = Entry(notification, new_entry(notification, record), record)
        await self._outbox.push(lane.notifier.name, entry.raw)  # before queueing: the worker's removal must find it
        lane.append(entry)

    async def drain(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (a result, not an error)
        """Wait until every queue is empty (delivered or given up). True if it emptied in time."""
        waits = [lane.idle.wait() for lane in self._lanes.values()]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)
        except TimeoutError:
            return False
        return True

    def verifying(self) -> bool:
        """Some notifier's setup is being checked (its answer not read yet)."""
        return bool(self._checks)

    def ready(self) -> tuple[bool, str]:
        broken = [f"{name}: {lane.permanent_error}" for name, lane in self._lanes.items() if lane.permanent_error]
        if broken:
            return False, "notifier failing, not retried (fix the config): " + "; ".join(broken)
        ok, reason = self._supervisor.ready()
        return ok, reason or "notifiers ok"

    def failing(self) -> dict[str, str]:
        """Notifiers currently failing (for the self-health alert), with the reason."""
        out = {}
        for name, lane in self._lanes.items():
            reason = lane.permanent_error or lane.retrying
            if reason:
                out[name] = reason
        return out

    def _report(self) -> None:
        """The component's verdict (``integration_monitor_component_ok{component="notifiers"}``, the status'
        ``ok``/``problem``), after every delivery attempt: a scrape sees a notifier fail without anyone
        reading /api/status."""
        failing = self.failing()
        self._supervisor.report(not failing, "; ".join(f"{n}: {r}" for n, r in sorted(failing.items())))

    def status(self) -> dict[str, Any]:
        lanes = {name: lane.status() for name, lane in self._lanes.items()}
        self._report()
        return {"outbox": "redis" if self._outbox.durable else "memory", "notifiers": lanes,
                **self._supervisor.status()}


def _worker(notifier: str) -> str:
    return f"notifier-{notifier}"


def _notifier_part(alerting: AlertingConfig) -> tuple[Any, ...]:
    """What the dispatcher's notifiers are built from: the grouped notifiers' config, and whether a state
    follower (Alertmanager) is on, which decides whether the console stands in."""
    part = []
    for key, plugin in PLUGINS.items():
        config = getattr(alerting, key, None)
        part.append(config is not None and plugin.enabled(config) if plugin.follows_state else config)
    return tuple(part)
