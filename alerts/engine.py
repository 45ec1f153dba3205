"""The alert engine: a Component that evaluates every ``monitor.evaluation_interval``.

    CheckResults ─► Stats ─► rules (pure) ─► state machine (pure) ─► silences / maintenance / inhibition
                                                          ─► grouping + notification log (pure) ─► sink
                                                     └───► every firing and resolved alert ─► feed

State and the notification log live in ``AlertStore`` (Redis when configured), written after every
evaluation, so a restart neither repeats a message inside ``repeat_interval`` nor forgets a resolve.
The sink (the notifier dispatcher) only enqueues; a failing or slow sink never stops evaluation — the
group is simply flushed again on the next evaluation. The feed (Alertmanager) gets the whole current
state after every evaluation, whatever changed, as Alertmanager expects; it must not block either. The
evaluation loop is supervised (``integration_kit.supervisor``): an evaluation that raises is logged,
counted (``integration_monitor_component_errors_total{component="alerts"}``) and the loop restarted with
back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from alerts import api, self_health
from alerts.content import NotesReader, alert_from_condition
from alerts.fencing import Fences, shard_of, shard_of_group
from alerts.grouping import GroupLog, group_key, next_flush, nflog_field, plan, split_field
from alerts.handover import Handovers, OutageHandover
from alerts.health_sample import HealthSampler
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.notifiers.base import severity_rank
from alerts.outbox import Record
from alerts.routing import inhibited_by, outgoing, select
from alerts.rules import RULES, Condition, RuleInput
from alerts.silence_book import SilenceBook
from alerts.silences import Silence, silenced_by
from alerts.state import AlertState, Event, due_at, forgettable, step
from alerts.stats import QuotaReading, Stats
from alerts.store import AlertStore
from alerts.store_sync import STORE_TIMEOUT, StoreSync
from alerts.traffic_stats import TrafficStats
from alerts.voice import Ownership, Voice, integration_of
from integration_kit.supervisor import Supervisor

if TYPE_CHECKING:
    import redis.asyncio

    from alerts.inputs import AlertMetrics, ConfigView, RedisHealthView
    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT = 5.0
CLOSE_GRACE = 5.0  # seconds an evaluation under way may take to finish when the engine closes
WAKE_GAP = 1.0  # minimum seconds between evaluations woken early (a newly failing check, a deadline)
# ... and an early wake waits at least this many times the last evaluation's duration: every evaluation
# judges every check, so with many open alerts (a deadline falling due nearly every second) the early
# wakes alone kept a 10,000-check engine evaluating every 1-2 s. This keeps evaluation to at most about a
# tenth of the loop's time; a small fleet (evaluations of milliseconds) keeps the 1 s precision.
WAKE_COST_FACTOR = 10.0
DUE_MARGIN = 0.01  # seconds past a deadline the engine evaluates at (wall clock vs the loop's clock)
# An evaluation runs on the event loop that also starts the probes: it hands the loop back whenever it
# has held it this long (checked between integrations, and every few hundred alert instances), so a
# probe due meanwhile starts late by about one slice, not by the whole evaluation (~0.6 s of CPU for
# 10,000 checks; more on a busy machine, hence a time, not a count). Results arriving between slices only
# feed the statistics; the evaluation's ``now`` and the alert states are its own (one at a time).
SLICE_SECONDS = 0.005
SLICE_CHECK_EVERY = 256  # alert instances between two looks at the clock


class NotificationSink(Protocol):
    """The notifier side (alerts.delivery.Dispatcher): enqueue only; it delivers, retries and writes the
    notification log once a notifier confirmed delivery (``Record``), telling the engine (``on_finished``)."""

    def notifier_floors(self) -> Sequence[tuple[str, Severity]]: ...

    def pending(self, notifier: str, group_key: str) -> bool: ...

    async def submit_to(self, notifier: str, notification: Notification, record: Record) -> None: ...

    def on_finished(self, listener: Callable[[Record, str], None]) -> None: ...

    async def synced(self) -> bool:
        """What the notifiers keep in Redis about sent messages (Slack thread records) is written there."""
        ...


class AlertFeed(Protocol):
    """A notifier that follows alert state (alerts.notifiers.alertmanager.feed.AlertmanagerFeed): after every
    evaluation, every firing and resolved alert. Returns at once; it delivers and retries on its own."""

    def publish(self, alerts: Sequence[Alert], *, now: float, interval: float) -> None: ...


class QuotaSource(Protocol):
    """The quota reader's view of every quota (takes precedence over header readings of the same name)."""

    def quota_snapshot(self) -> Iterable[QuotaReading]: ...


class AlertEngine:
    """A Component: ``start``/``close``, ``on_result``, ``on_config``, ``status``, ``ready`` and ``routes``.

    Its dependencies are explicit and small: the daemon's config as alerting reads it (``ConfigView``),
    the metric objects it writes (``AlertMetrics``), the redactor, and the Redis client of the AlertStore
    (None: state in memory). monitor/wiring.py builds it in the daemon.
    """

    name = "alerts"

    def __init__(
        self,
        config: ConfigView,
        *,
        metrics: AlertMetrics,
        redactor: Redactor,
        redis: redis.asyncio.Redis | None = None,
        sink: NotificationSink | None = None,
        feed: AlertFeed | None = None,
        quota_source: QuotaSource | None = None,
        clock: Callable[[], float] = time.time,
        store: AlertStore | None = None,
        autorun: bool = True,
        ownership: Ownership | None = None,
        redis_health: RedisHealthView | None = None,
    ) -> None:
        """``autorun=False``: no evaluation loop; the caller runs ``evaluate()`` (tests, one-shot tools).
        ``ownership``: several replicas share the work; this engine speaks only for what it owns
        (``alerts/voice.py``). ``redis_health``: the daemon's verdict on Redis (its self-health alert
        follows it); without one, the engine's own store rounds decide."""
        self.config = config
        self.voice = Voice(ownership)
        self._gained: set[str] = set()  # integrations that became ours: reload their state before speaking
        self.metrics = metrics
        self.redactor = redactor
        self.sink = sink
        self.feed = feed
        self.quota_source = quota_source
        self._clock = clock
        self.store = store or AlertStore(redis, config.alerting.key_prefix)
        self.silence_book = SilenceBook(self.store, lambda: self.config.alerting.silences, clock)
        self._memory = StoreSync(self.store, self.silence_book, redactor=redactor)
        self._redis_health = redis_health
        self.stats = Stats(max_window=_max_window(config))
        self._facts: dict[str, dict[str, float]] = {}
        self.traffic: dict[str, TrafficStats] = {}  # real-traffic calls by integration (add_traffic)
        self._notes = NotesReader()
        self._health = HealthSampler(metrics)
        self._submit_failing: bool | None = None
        self._firing_labels: set[tuple[str, str, str]] = set()
        self._autorun = autorun
        self._supervisor = Supervisor(
            self.name, on_crash=metrics.component_errors.labels(self.name).inc,
            on_state=lambda ok: metrics.component_ok.labels(self.name).set(1 if ok else 0), redact=redactor.text,
        )
        self._wake = asyncio.Event()
        # The earliest deadline the last evaluation found (group_wait, group_interval, for, keep_firing_for):
        # the loop evaluates then rather than at the next interval, so these timings end on time.
        self.next_due: float | None = None
        self._due: list[float] = []
        # One evaluation at a time: two interleaved ones would both flush the same group.
        self._lock = asyncio.Lock()
        self._retry_at: dict[str, float] = {}  # nflog field → when a dropped notification is planned again
        # Several replicas: a fencing token per shard owned, taken before its state is (re)loaded.
        self._fences = Fences(redis, config.alerting.key_prefix) if self.voice.shared and redis is not None else None
        self._outage: OutageHandover | None = None  # the outage voice's exchange with the owners
        if self._fences is not None and redis is not None and ownership is not None:
            self._memory.fence = self._write_fence
            self._memory.ours = self._speaks_for
            self._outage = OutageHandover(Handovers(redis, config.alerting.key_prefix, ownership.me), self.voice,
                                          self._memory, self.stats, sink)
        if sink is not None:
            sink.on_finished(self._delivery_finished)

    @property
    def states(self) -> dict[str, AlertState]:
        return self._memory.states

    @property
    def groups(self) -> dict[str, GroupLog]:
        """The notification log: ``<notifier>|<group key>`` (``alerts.grouping.nflog_field``) → its log."""
        return self._memory.groups

    @property
    def silences(self) -> list[Silence]:
        """The stored silences, as of the last read (the config file's are in ``silence_book.in_force()``)."""
        return self.silence_book.stored

    # -- Component --------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._adopt_legacy_log()
        await self._memory.load()
        if self._autorun and not self._supervisor.running("alert-evaluation"):
            self._supervisor.start("alert-evaluation", self._loop)

    async def _adopt_legacy_log(self) -> None:
        if self.sink is None or not self.store.durable:
            return
        notifiers = [name for name, _ in self.sink.notifier_floors()]
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                adopted = await self.store.adopt_legacy_log(notifiers)
        except Exception as exc:
            log.warning("the previous version's notification log not adopted (%s); tried again at the next start",
                        self.redactor.text(f"{type(exc).__name__}: {exc}"))
            return
        if adopted:
            log.info("notification log: %d group(s) logged by the previous version adopted for %s", adopted,
                     ", ".join(notifiers))

    async def close(self) -> None:
        """Stop the loop (an evaluation under way may finish, for up to CLOSE_GRACE), then save the state."""
        await self._supervisor.close(grace=CLOSE_GRACE)
        async with self._lock:
            await self._memory.persist(even_if_down=True)

    def on_result(self, result: CheckResult) -> None:
        try:
            previous = self.stats.check(result.integration, result.check)
            flipped = previous is None or previous.last_result is None or previous.last_result.ok != result.ok
            self.stats.add(result)
            if flipped and not result.ok:
                self._wake.set()  # a check started failing: evaluate soon rather than at the next interval
        except Exception:  # must not raise into the scheduler
            log.exception("alert statistics: cannot record result of %s/%s", result.integration, result.check)

    def on_config(self, config: ConfigView) -> None:
        self.config = config
        self.stats.retain(_check_keys(config))
        longest, old_width = _max_window(config), self.stats.bucket_seconds
        if self.stats.resize(longest):
            log.info("alert statistics: a longer window is configured; history kept in buckets of %gs "
                     "instead of %gs", self.stats.bucket_seconds, old_width)
        for traffic in self.traffic.values():
            traffic.max_window = longest
        for gone in set(self.traffic) - set(config.integrations):
            del self.traffic[gone]

    def status(self) -> dict[str, Any]:
        now = self._clock()
        states = self._mine()
        return {
            "alerts": {
                "store": "redis" if self.store.durable else "memory",
                "firing": sorted(k for k, s in states.items() if s.status is AlertStatus.FIRING),
                "pending": sorted(k for k, s in states.items() if s.status is AlertStatus.PENDING),
                "flapping": sorted(k for k, s in states.items() if s.flapping),
                "inhibited_by": dict(sorted(inhibited_by(states).items())),  # held back: not notified
                "silences": sum(1 for s in self.silence_book.in_force() if s.active(now)),
            },
            **self._supervisor.status(),
        }

    def ready(self) -> tuple[bool, str]:
        return self._supervisor.ready()

    def routes(self) -> list[web.RouteDef]:
        """/api/silences (the app adds a component's routes to its HTTP server)."""
        return api.routes(self)

    def now(self) -> float:
        return self._clock()

    def ownership_changed(self, gained: Iterable[str], lost: Iterable[str]) -> None:
        """Integrations moved to or from this replica (the daemon calls this). What was lost is simply no
        longer spoken for (its last state is in the store for the new owner); what was gained is reloaded
        from the store before the next evaluation judges it, which comes at once.

        What this engine counted of a gained integration is stale: results went to the previous owner
        meanwhile (a replica that owned it at start, then lost it, would judge the incident by its last,
        healthy result and resolve it). It starts again from the results that come now, as a restart
        does: too few failures in a row to judge yet, so the reloaded incident is left as it is."""
        gained, lost = set(gained), set(lost)
        self.stats.forget(gained)
        for integration in gained:
            self.traffic.pop(integration, None)  # the owner's traffic reader backfills it
        self._gained.update(gained)
        if self._fences is not None:  # a shard lost, or lost and won back meanwhile: its token is stale
            self._fences.drop(shard_of(i, self.config.alerting.group_by) for i in gained | lost)
        if self._gained or lost:
            self._wake.set()

    # -- inputs from other components -----------------------------------------------------------------
    def set_fact(self, integration: str, name: str, value: float) -> None:
        """Feed a number a rule reads (e.g. the webhook reader's ``webhook_last_event`` timestamp)."""
        self._facts.setdefault(integration, {})[name] = value

    def add_traffic(self, integration: str, start: float, calls: int, errors: Mapping[str, int]) -> None:
        """Feed real-traffic calls (the traffic reader's new counts of one bucket) to the error-rate rule."""
        stats = self.traffic.get(integration)
        if stats is None:
            stats = self.traffic[integration] = TrafficStats(max_window=_max_window(self.config))
        stats.add(start, calls, errors)

    # -- silences (what /api/silences calls; the ``silence`` command goes straight to the store) --------
    async def add_silence(self, silence: Silence) -> None:
        await self.silence_book.add(silence)

    async def expire_silence(self, silence_id: str) -> Silence | None:
        return await self.silence_book.expire(silence_id)

    async def list_silences(self) -> list[Silence]:
        return await self.silence_book.reload()

    # -- the evaluation -----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            self._wake.clear()
            await self.evaluate()
            took = time.monotonic() - started
            interval = self.config.monitor.evaluation_interval
            # Every interval, or earlier when a check starts failing or a deadline falls due — but not more
            # often than WAKE_GAP (or WAKE_COST_FACTOR × the evaluation's cost), so a burst of failures
            # costs one evaluation, not one per result.
            gap = min(max(WAKE_GAP, WAKE_COST_FACTOR * took), interval)
            if not await self._supervisor.sleep(gap - (time.monotonic() - started)):
                return
            wait = interval - (time.monotonic() - started)
            if self.next_due is not None:
                wait = min(wait, self.next_due - self._clock() + DUE_MARGIN)
            if not await self._supervisor.sleep(wait, wake=self._wake):
                return

    async def evaluate(self, now: float | None = None) -> list[Notification]:
        """One evaluation. Returns the notifications handed to the sink (for tests and `status`)."""
        async with self._lock:
            now = self._clock() if now is None else now
            cfg = self.config
            await self._memory.sync(now)
            if await self._take_fences(cfg) and self._gained:
                gained, self._gained = self._gained, set()
                if not await self._memory.reload(lambda key: integration_of(key) in gained,
                                                 lambda field: self._group_in(split_field(field)[1], gained, cfg)):
                    self._gained |= gained  # Redis is down: try again next time

            await self._exchange_outage_voice(cfg)

            self._due.clear()
            conditions = await self._conditions(cfg, now)
            events = await self._advance(conditions, cfg, now)
            self._publish(cfg, now)
            handed = await self._notify(cfg, now, events)
            self._export_firing()
            self.next_due = min((t for t in self._due if t > now), default=None)
            await self._memory.persist()
            self._supervisor.report(self._memory.redis_up is not False,
                                    f"alert state not in sync with Redis: {self._memory.redis_error}")
            return handed

    async def _take_fences(self, cfg: ConfigView) -> bool:
        """Take a fencing token for every shard this replica owns and holds none for (those it gained
        among them), before their state is reloaded: whatever the previous owner logs after that is
        refused. False when Redis could not be reached (the reload waits too)."""
        if self._fences is None:
            return True
        group_by = cfg.alerting.group_by
        shards = {shard_of(i, group_by) for i in cfg.integrations if self.voice.integration(i)}
        self._fences.drop(set(self._fences.held) - shards)
        return await self._fences.acquire(shards)  # and checks those held: Redis may have come back empty

    # -- the outage voice (alerts/voice.py) ------------------------------------------------------------
    async def _exchange_outage_voice(self, cfg: ConfigView) -> None:
        if self._outage is None or self._fences is None or self._memory.redis_up is not True:
            return
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self._outage.exchange(self._fences.held, cfg.alerting.group_by)
        except Exception as exc:
            log.warning("alerts spoken for in the Redis outage not exchanged (%s); retrying",
                        self.redactor.text(f"{type(exc).__name__}: {exc}"))

    def _outage_condition(self, condition: Condition) -> bool:
        """Whether this replica judges ``condition`` (of an integration owned elsewhere) in the outage voice."""
        voice = self.voice
        if condition.key in voice.outage:
            return True
        if not condition.active or not voice.may_take_in_outage(condition.integration, condition.check):
            return False
        voice.outage.add(condition.key)
        self._memory.forget([condition.key], ())  # a copy read from the store long ago: not this incident's
        if voice.ownership is not None:
            voice.ownership.hold_results(frozenset(integration_of(k) for k in voice.outage))
        log.warning("alert %s: its owner cannot be reached (Redis unreachable); alerting for it from this replica, "
                    "which probes it", condition.key)
        return True

    def _speaks_in_outage(self, integration: str, icfg: Any) -> bool:
        voice = self.voice
        if any(integration_of(k) == integration for k in voice.outage):
            return True
        return voice.in_outage and any(voice.may_take_in_outage(integration, c.name) for c in icfg.checks)

    async def _conditions(self, cfg: ConfigView, now: float) -> list[Condition]:
        # Each integration's rules see its own active alerts and quotas: handing every integration all
        # of them made each rule's scan of them integrations × alerts (at 50,000 checks in 500
        # integrations with 1 % failing, 14 % of an evaluation in the silence rules' scans alone).
        active: dict[str, set[str]] = {}
        for key, state in self._mine().items():
            if state.active:
                active.setdefault(integration_of(key), set()).add(key)
        quotas: dict[str, dict[str, QuotaReading]] = {}
        for (integration, quota), reading in self._quota_readings(now).items():
            quotas.setdefault(integration, {})[quota] = reading
        out: list[Condition] = []
        slice_started = time.perf_counter()
        for integration, icfg in cfg.integrations.items():
            owned = self.voice.integration(integration)
            if not owned and not (self.voice.shared and self._speaks_in_outage(integration, icfg)):
                continue
            if time.perf_counter() - slice_started >= SLICE_SECONDS:
                await asyncio.sleep(0)
                slice_started = time.perf_counter()
            inp = RuleInput(
                integration=integration, config=icfg, stats=self.stats, quotas=quotas.get(integration, {}), now=now,
                active=frozenset(active.get(integration, ())), facts=self._facts.get(integration, {}),
                traffic=self.traffic.get(integration),
            )
            for name, rule in RULES.items():
                rule_cfg = getattr(icfg.alerts, name, None)
                if rule_cfg is not None and not rule_cfg.enabled:
                    continue
                try:
                    found = rule(inp)
                    out.extend(found if owned else [c for c in found if self._outage_condition(c)])
                except Exception:  # one broken rule must not silence the others
                    log.exception("alert rule %s failed for %s", name, integration)
        if self._redis_health is not None:
            redis_up, redis_error = self._redis_health.up, self._redis_health.error
        else:
            redis_up, redis_error = self._memory.redis_up, self._memory.redis_error
        sample = self._health.sample(redis_up=redis_up, redis_error=redis_error, submit_failing=self._submit_failing)
        out.extend(self_health.evaluate(sample, cfg.alerting.self_health, integration=self.voice.monitor))
        return out

    def _quota_readings(self, now: float) -> dict[tuple[str, str], QuotaReading]:
        readings: dict[tuple[str, str], QuotaReading] = {}
        if self.quota_source is not None:
            try:
                for reading in self.quota_source.quota_snapshot():
                    readings[(reading.integration, reading.quota)] = reading
            except Exception:
                log.exception("quota snapshot failed")
        return readings

    async def _advance(self, conditions: list[Condition], cfg: ConfigView,
                       now: float) -> dict[str, tuple[Event, ...]]:
        by_key: dict[str, Condition] = {}
        slice_started = time.perf_counter()
        for counted, condition in enumerate(conditions, 1):
            if counted % SLICE_CHECK_EVERY == 0 and time.perf_counter() - slice_started >= SLICE_SECONDS:
                await asyncio.sleep(0)
                slice_started = time.perf_counter()
            by_key[condition.key] = condition
        configured: set[tuple[str, str]] | None = None  # built when first needed (an alert no rule judged)
        events: dict[str, tuple[Event, ...]] = {}
        for stepped, key in enumerate(set(self.states) | set(by_key), 1):
            if stepped % SLICE_CHECK_EVERY == 0 and time.perf_counter() - slice_started >= SLICE_SECONDS:
                await asyncio.sleep(0)
                slice_started = time.perf_counter()
            if not self.voice.alert(key):
                continue  # another replica's: it evaluates and persists it
            cond = by_key.get(key)
            known = self.states.get(key)
            if known is None and cond is not None and not cond.active:
                continue  # never active and not now: stepping a fresh state changes nothing, nothing is due
            state = known or AlertState(key=key)
            if cond is not None:
                content = None
                if cond.active:
                    stats = self.stats.check(cond.integration, cond.check) if cond.check else None
                    icfg = cfg.integrations.get(cond.integration)
                    content = alert_from_condition(
                        cond, stats, self.redactor, icfg.runbook_url if icfg else None
                    )
                    if key in self.voice.outage:
                        self._outage_group(group_key(content, cfg.alerting.group_by))
                new, evs = step(state, cond.active, now, for_seconds=cond.for_seconds,
                                keep_firing_for=cond.keep_firing_for, flapping=cfg.alerting.flapping, alert=content)
                due = due_at(new, cond.active, for_seconds=cond.for_seconds, keep_firing_for=cond.keep_firing_for)
                if due is not None:
                    self._due.append(due)
            else:
                # Not judged this time: hold, unless what it is about is gone from the config.
                if configured is None:
                    configured = _check_keys(cfg)
                gone = _orphaned(state, cfg, configured)
                new, evs = step(state, False if gone else None, now, for_seconds=0.0, keep_firing_for=0.0,
                                flapping=cfg.alerting.flapping)
            if new != state:
                self._memory.put_state(key, new)
            if evs:
                events[key] = evs
                log.info("alert %s: %s", key, ", ".join(evs))
        return events

    def _muted(self, alert: Alert, cfg: ConfigView, now: float) -> str | None:
        """Why notifications of this alert are held back now (silence or maintenance), or None."""
        icfg = cfg.integrations.get(alert.integration)
        if icfg is not None and icfg.alerts.in_maintenance(now):
            return "maintenance"
        silence = silenced_by(alert, self.silence_book.in_force(), now)
        return f"silence {silence.id}" if silence is not None else None

    async def _notify(self, cfg: ConfigView, now: float, events: Mapping[str, tuple[Event, ...]]) -> list[Notification]:
        timing = cfg.alerting
        states = self._mine()
        logs = {k: g for k, g in self.groups.items() if self._group_mine(split_field(k)[1], cfg)}
        told: dict[str, set[str]] = {}  # group key → alerts some notifier delivered
        for field, entry in logs.items():
            told.setdefault(split_field(field)[1], set()).update(entry.sent)
        chosen = select(states, told, events, group_by=timing.group_by,
                        send_resolved=timing.send_resolved, muted=lambda alert: self._muted(alert, cfg, now))
        for key, why in chosen.suppressed:
            log.info("alert %s: notification suppressed (%s)", key, why)
        if chosen.suppressed:
            for notifier in self._notifier_names(cfg):
                self.metrics.notifications.labels(notifier=notifier, result="suppressed").inc(len(chosen.suppressed))

        handed: list[Notification] = []
        candidates, forget = chosen.candidates, chosen.forget
        for notifier, min_severity in self.sink.notifier_floors() if self.sink is not None else ():
            mine = {split_field(k)[1] for k in logs if split_field(k)[0] == notifier}
            for gkey in sorted(set(candidates) | mine | set(forget)):
                field = nflog_field(notifier, gkey)
                if self.sink is None or self.sink.pending(notifier, gkey) or self._retry_at.get(field, now) > now:
                    continue  # on its way (its log is written once delivered), or dropped a moment ago
                old = self.groups.get(field)
                told_here = old.sent if old is not None else {}
                # What this notifier takes, and only resolves of what it told.
                alerts = [a for a in candidates.get(gkey, ())
                          if severity_rank(a.severity) >= severity_rank(min_severity)
                          and (a.status is AlertStatus.FIRING or a.flapping or a.key in told_here)]
                new, notification = plan(old, gkey, alerts, now, timing, forget=forget.get(gkey, ()))
                if notification is None:
                    if new != old:
                        self._memory.put_group(field, new)
                    due = next_flush(new, alerts, timing)
                    if due is not None:
                        self._due.append(due)
                    continue
                notification = self._with_notes(notification, cfg)
                shard = shard_of_group(gkey, timing.group_by)
                fence = self._fences.fence(shard) if self._fences is not None and shard is not None else None
                if await self._submit(notifier, notification, Record(field, new, fence)):
                    handed.append(notification)
                    self._log_latency(notification)

        # Forget alerts with nothing left to tell or remember.
        in_logs = {k for g in self.groups.values() for k in g.sent}
        for key in [k for k, s in states.items() if forgettable(s) and k not in in_logs]:
            self._memory.drop_state(key)
        return handed

    def _outage_group(self, gkey: str) -> None:
        """A group the outage voice speaks for: this replica's copies of its logs are another's, and old."""
        if gkey not in self.voice.outage_groups:
            self.voice.outage_groups.add(gkey)
            self._memory.forget((), [f for f in self.groups if split_field(f)[1] == gkey])

    def _delivery_finished(self, record: Record, result: str) -> None:
        """The dispatcher delivered (the record is the notification log now) or gave up a notification
        (the log stays as it was: planned again after ``group_interval``, as Alertmanager retries a flush)."""
        if result == "sent":
            self._retry_at.pop(record.field, None)
            self._memory.put_group(record.field, record.log)
        elif result == "failed":
            self._retry_at[record.field] = self._clock() + self.config.alerting.group_interval

    def _shard_of_stored(self, kind: str, name: str) -> str | None:
        """The fencing shard of a stored state ("s", alert key) or log ("g", nflog field); None: this
        replica's own health, nobody else's to write."""
        group_by = self.config.alerting.group_by
        if kind == "g":
            return shard_of_group(split_field(name)[1], group_by)
        integration = integration_of(name)
        return None if self_health.is_monitor(integration) else shard_of(integration, group_by)

    def _write_fence(self, kind: str, name: str) -> tuple[str, int] | None:
        shard = self._shard_of_stored(kind, name)
        if shard is None or self._fences is None:
            return None
        return shard, self._fences.held.get(shard, 0)  # none held: refused (tokens start above 0)

    def _speaks_for(self, kind: str, name: str) -> bool:
        """Whether this replica writes a state or log: what it owns; what it spoke for in an outage is
        handed over instead (``_hand_over``)."""
        if kind == "g":
            gkey = split_field(name)[1]
            return gkey not in self.voice.outage_groups and self._group_mine(gkey, self.config)
        return name not in self.voice.outage and self.voice.alert(name)

    def _mine(self) -> dict[str, AlertState]:
        """The alert states this engine speaks for (all of them when it runs alone)."""
        if not self.voice.shared:
            return self.states
        return {k: s for k, s in self.states.items() if self.voice.alert(k)}

    def _group_mine(self, group_key: str, cfg: ConfigView) -> bool:
        return self.voice.group(group_key, cfg.alerting.group_by, next(iter(cfg.integrations), None))

    def _group_in(self, group_key: str, integrations: set[str], cfg: ConfigView) -> bool:
        """Whether a notification group belongs to one of ``integrations``."""
        group_by = cfg.alerting.group_by
        if "integration" not in group_by:
            return True  # one owner for all integrations: every group moved with them
        parts = group_key.split("|")
        index = list(group_by).index("integration")
        return index < len(parts) and parts[index] in integrations

    def _with_notes(self, notification: Notification, cfg: ConfigView) -> Notification:
        return replace(notification, alerts=tuple(self._noted(alert, cfg) for alert in notification.alerts))

    def _noted(self, alert: Alert, cfg: ConfigView) -> Alert:
        icfg = cfg.integrations.get(alert.integration)
        notes = self._notes.read(icfg.notes, cfg.alerting.notes_max_chars) if icfg else None
        return replace(alert, notes=notes) if notes else alert

    def _publish(self, cfg: ConfigView, now: float) -> None:
        """The current state to the feed: firing (flapping counts as firing) and resolved alerts, whether or
        not they are silenced here — on that route, silencing is the Alertmanager's."""
        if self.feed is None:
            return
        try:
            current = [
                self._noted(outgoing(s), cfg) for s in self._mine().values()
                if s.alert is not None and (s.status in (AlertStatus.FIRING, AlertStatus.RESOLVED) or s.flapping)
            ]
            self.feed.publish(current, now=now, interval=cfg.monitor.evaluation_interval)
        except Exception:  # the other notifiers and the state must not suffer from it
            log.exception("publishing alerts to the alert feed failed")

    async def _submit(self, notifier: str, notification: Notification, record: Record) -> bool:
        assert self.sink is not None
        try:
            async with asyncio.timeout(SUBMIT_TIMEOUT):
                await self.sink.submit_to(notifier, notification, record)
        except Exception as exc:
            self._submit_failing = True
            log.warning("notifier queue refused notification for %s: %s", notification.group_key,
                        self.redactor.text(repr(exc)))
            return False
        self._submit_failing = False
        return True

    def _log_latency(self, notification: Notification) -> None:
        handed_at = self._clock()
        for alert in notification.firing:
            if alert.first_failure_at is not None:
                log.info(
                    "alert %s handed to notifiers %.3fs after its first failing probe",
                    alert.key, handed_at - alert.first_failure_at,
                    extra={"alert_key": alert.key, "alert_latency_seconds": handed_at - alert.first_failure_at},
                )

    def _notifier_names(self, cfg: ConfigView) -> list[str]:
        names = getattr(self.sink, "notifier_names", None)
        if names:
            return list(names)
        return ["slack"] if cfg.alerting.slack is not None else ["console"]

    def _export_firing(self) -> None:
        """``integration_alert_firing`` and ``integration_alert_inhibited`` (same series): the gauges' labels
        have no target, so the inhibited one is 1 only while every firing alert under its labels is
        inhibited — then nothing under them was told."""
        firing_gauge, inhibited_gauge = self.metrics.alert_firing, self.metrics.alert_inhibited
        states = self._mine()
        inhibitions = inhibited_by(states)
        firing: set[tuple[str, str, str]] = set()
        told: set[tuple[str, str, str]] = set()
        for key, s in states.items():
            if s.status is AlertStatus.FIRING and s.alert is not None:
                labels = (s.alert.integration, s.alert.alert, str(s.alert.severity))
                firing.add(labels)
                if key not in inhibitions:
                    told.add(labels)
        for labels in firing:
            firing_gauge.labels(*labels).set(1)
            inhibited_gauge.labels(*labels).set(0 if labels in told else 1)
        for labels in self._firing_labels - firing:
            if self.voice.integration(labels[0]):
                firing_gauge.labels(*labels).set(0)
                inhibited_gauge.labels(*labels).set(0)
            else:  # moved to another replica, which exports it now
                for gauge in (firing_gauge, inhibited_gauge):
                    with contextlib.suppress(KeyError):
                        gauge.remove(*labels)
                self._firing_labels.discard(labels)
        self._firing_labels |= firing


def _orphaned(state: AlertState, cfg: ConfigView, configured: set[tuple[str, str]]) -> bool:
    alert = state.alert
    if alert is None or self_health.is_monitor(alert.integration):
        return False
    if alert.integration not in cfg.integrations:
        return True
    return alert.check is not None and (alert.integration, alert.check) not in configured


def _check_keys(cfg: ConfigView) -> set[tuple[str, str]]:
    """(integration, check) of every configured check."""
    return {(integration, check.name) for integration, icfg in cfg.integrations.items() for check in icfg.checks}


def _max_window(cfg: ConfigView) -> float:
    longest = 3600.0
    for icfg in cfg.integrations.values():
        rules = icfg.alerts
        longest = max(longest, rules.error_rate.window, rules.latency.window,
                      *(w.long for w in rules.error_rate.windows))
    return longest
