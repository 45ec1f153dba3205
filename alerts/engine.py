"""The alert engine: a Component that evaluates every ``monitor.evaluation_interval``.

    CheckResults ─► Stats ─► rules (pure) ─► state machine (pure) ─► silences / maintenance / inhibition
                                                          ─► grouping + notification log (pure) ─► sink

State and the notification log live in ``AlertStore`` (Redis when configured), written after every
evaluation, so a restart neither repeats a message inside ``repeat_interval`` nor forgets a resolve.
The sink (the notifier dispatcher) only enqueues; a failing or slow sink never stops evaluation — the
group is simply flushed again on the next evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from alerts import api, self_health
from alerts.content import NotesReader, alert_from_condition
from alerts.grouping import GroupLog, group_key, plan
from alerts.model import Alert, AlertStatus, Notification, Severity
from alerts.rules import RULES, Condition, RuleInput
from alerts.silences import Silence, expire, from_config, silenced_by, stale
from alerts.state import AlertState, Event, forgettable, step
from alerts.stats import QuotaReading, Stats
from alerts.store import AlertStore

if TYPE_CHECKING:
    from integration_kit.results import CheckResult
    from monitor.component import Services
    from monitor.settings import Config

log = logging.getLogger(__name__)

SUBMIT_TIMEOUT = 5.0
# redis-py retries a refused connection ten times with backoff: bound each store round so a dead Redis
# slows an evaluation by at most this much (and only once per evaluation: see _persist).
STORE_TIMEOUT = 3.0
WAKE_GAP = 1.0  # minimum seconds between evaluations woken early by a newly failing check


class NotificationSink(Protocol):
    """The notifier side (alerts.notifiers.Dispatcher): enqueue only; it delivers and retries."""

    async def submit(self, notification: Notification) -> None: ...


class QuotaSource(Protocol):
    """The quota reader's view of every quota (takes precedence over header readings of the same name)."""

    def quota_snapshot(self) -> Iterable[QuotaReading]: ...


class AlertEngine:
    name = "alerts"

    def __init__(
        self,
        services: Services,
        sink: NotificationSink | None = None,
        *,
        quota_source: QuotaSource | None = None,
        clock: Callable[[], float] = time.time,
        store: AlertStore | None = None,
        autorun: bool = True,
    ) -> None:
        """``autorun=False``: no evaluation loop; the caller runs ``evaluate()`` (tests, one-shot tools)."""
        self.services = services
        self.sink = sink
        self.quota_source = quota_source
        self._clock = clock
        cfg = services.config
        self.store = store or AlertStore(services.redis, cfg.alerting.key_prefix)
        self.stats = Stats(max_window=_max_window(cfg))
        self.states: dict[str, AlertState] = {}
        self.groups: dict[str, GroupLog] = {}
        self.silences: list[Silence] = []
        self._facts: dict[str, dict[str, float]] = {}
        self._notes = NotesReader()
        self._dirty_states: set[str] = set()
        self._dirty_groups: set[str] = set()
        self._loaded = False
        self._redis_error = ""
        self._redis_up: bool | None = None
        self._submit_failing: bool | None = None
        self._firing_labels: set[tuple[str, str, str]] = set()
        self._metric_marks: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._autorun = autorun
        self._wake = asyncio.Event()
        # One evaluation at a time: two interleaved ones would both flush the same group.
        self._lock = asyncio.Lock()

    # -- Component --------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._load()
        if self._autorun and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="alert-evaluation")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            await self._persist(even_if_down=True)

    def on_result(self, result: CheckResult) -> None:
        try:
            previous = self.stats.check(result.integration, result.check)
            flipped = previous is None or previous.last_result is None or previous.last_result.ok != result.ok
            self.stats.add(result)
            if flipped and not result.ok:
                self._wake.set()  # a check started failing: evaluate soon rather than at the next interval
        except Exception:  # must not raise into the scheduler
            log.exception("alert statistics: cannot record result of %s/%s", result.integration, result.check)

    def on_config(self, config: Config) -> None:
        self.services.config = config
        self.stats.retain({(i, c.name) for i, c in config.iter_checks()})

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "alerts": {
                "store": "redis" if self.store.durable else "memory",
                "firing": sorted(k for k, s in self.states.items() if s.status is AlertStatus.FIRING),
                "pending": sorted(k for k, s in self.states.items() if s.status is AlertStatus.PENDING),
                "flapping": sorted(k for k, s in self.states.items() if s.flapping),
                "silences": sum(1 for s in self._all_silences() if s.active(now)),
            }
        }

    def ready(self) -> tuple[bool, str]:
        if self._task is not None and self._task.done():
            return False, "alert evaluation loop stopped"
        return True, ""

    def routes(self) -> list[web.RouteDef]:
        """/api/silences (the app adds a component's routes to its HTTP server)."""
        return api.routes(self)

    def now(self) -> float:
        return self._clock()

    # -- inputs from other components -----------------------------------------------------------------
    def set_fact(self, integration: str, name: str, value: float) -> None:
        """Feed a number a rule reads (e.g. the webhook reader's ``webhook_last_event`` timestamp)."""
        self._facts.setdefault(integration, {})[name] = value

    # -- silences (CLI and HTTP go through these or straight to the store) ------------------------------
    async def add_silence(self, silence: Silence) -> None:
        await self.store.put_silence(silence)
        self.silences = [s for s in self.silences if s.id != silence.id] + [silence]

    async def expire_silence(self, silence_id: str) -> Silence | None:
        now = self._clock()
        for silence in await self.store.load_silences():
            if silence.id == silence_id:
                expired = expire(silence, now)
                await self.store.put_silence(expired)
                self.silences = [s for s in self.silences if s.id != silence_id] + [expired]
                return expired
        return None

    async def list_silences(self) -> list[Silence]:
        self.silences = await self.store.load_silences()
        return [*from_config(self.services.config.alerting.silences), *self.silences]

    def _all_silences(self) -> list[Silence]:
        return [*from_config(self.services.config.alerting.silences), *self.silences]

    # -- the evaluation -----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            self._wake.clear()
            try:
                await self.evaluate()
            except Exception:
                log.exception("alert evaluation failed; trying again next interval")
            interval = self.services.config.monitor.evaluation_interval
            # Every interval, or earlier when a check starts failing — but not more often than WAKE_GAP,
            # so a burst of failures costs one evaluation, not one per result.
            gap = min(WAKE_GAP, interval)
            await asyncio.sleep(max(0.0, gap - (time.monotonic() - started)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, interval - (time.monotonic() - started)))

    async def evaluate(self, now: float | None = None) -> list[Notification]:
        """One evaluation. Returns the notifications handed to the sink (for tests and `status`)."""
        async with self._lock:
            now = self._clock() if now is None else now
            cfg = self.services.config
            await self._sync_store(now)

            conditions = self._conditions(cfg, now)
            events = self._advance(conditions, cfg, now)
            handed = await self._notify(cfg, now, events)
            self._export_firing()
            await self._persist()
            return handed

    def _conditions(self, cfg: Config, now: float) -> list[Condition]:
        active = frozenset(k for k, s in self.states.items() if s.active)
        snapshot = self._quota_readings(now)
        out: list[Condition] = []
        for integration, icfg in cfg.integrations.items():
            inp = RuleInput(
                integration=integration, config=icfg, stats=self.stats,
                quotas={q: r for (i, q), r in snapshot.items() if i == integration}, now=now, active=active,
                facts=self._facts.get(integration, {}),
            )
            for name, rule in RULES.items():
                rule_cfg = getattr(icfg.alerts, name, None)
                if rule_cfg is not None and not rule_cfg.enabled:
                    continue
                try:
                    out.extend(rule(inp))
                except Exception:  # one broken rule must not silence the others
                    log.exception("alert rule %s failed for %s", name, integration)
        out.extend(self_health.evaluate(self._health_sample(), cfg.alerting.self_health))
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

    def _advance(self, conditions: list[Condition], cfg: Config, now: float) -> dict[str, tuple[Event, ...]]:
        by_key = {c.key: c for c in conditions}
        configured = {(i, c.name) for i, c in cfg.iter_checks()}
        events: dict[str, tuple[Event, ...]] = {}
        for key in set(self.states) | set(by_key):
            cond = by_key.get(key)
            state = self.states.get(key) or AlertState(key=key)
            if cond is not None:
                content = None
                if cond.active:
                    stats = self.stats.check(cond.integration, cond.check) if cond.check else None
                    icfg = cfg.integrations.get(cond.integration)
                    content = alert_from_condition(
                        cond, stats, self.services.redactor, icfg.runbook_url if icfg else None
                    )
                new, evs = step(state, cond.active, now, for_seconds=cond.for_seconds,
                                keep_firing_for=cond.keep_firing_for, flapping=cfg.alerting.flapping, alert=content)
            else:
                # Not judged this time: hold, unless what it is about is gone from the config.
                gone = _orphaned(state, cfg, configured)
                new, evs = step(state, False if gone else None, now, for_seconds=0.0, keep_firing_for=0.0,
                                flapping=cfg.alerting.flapping)
            if new != state:
                self.states[key] = new
                self._dirty_states.add(key)
            if evs:
                events[key] = evs
                log.info("alert %s: %s", key, ", ".join(evs))
        return events

    def _muted(self, alert: Alert, cfg: Config, now: float) -> str | None:
        """Why notifications of this alert are held back now (silence or maintenance), or None."""
        icfg = cfg.integrations.get(alert.integration)
        if icfg is not None and icfg.alerts.in_maintenance(now):
            return "maintenance"
        silence = silenced_by(alert, self._all_silences(), now)
        return f"silence {silence.id}" if silence is not None else None

    async def _notify(self, cfg: Config, now: float, events: Mapping[str, tuple[Event, ...]]) -> list[Notification]:
        timing = cfg.alerting
        critical_firing = {
            k.rsplit("/", 1)[0] for k, s in self.states.items()
            if s.status is AlertStatus.FIRING and s.alert is not None and s.alert.severity is Severity.CRITICAL
        }
        candidates: dict[str, list[Alert]] = {}
        forget: dict[str, set[str]] = {}
        suppressed = 0
        for key, state in self.states.items():
            if state.alert is None:
                continue
            alert = self._outgoing(state, cfg)
            gkey = group_key(alert, timing.group_by)
            log_entry = self.groups.get(gkey)
            was_sent = log_entry is not None and key in log_entry.sent
            muted = self._muted(alert, cfg, now)
            inhibited = (
                state.status is AlertStatus.FIRING and alert.severity is not Severity.CRITICAL
                and key.rsplit("/", 1)[0] in critical_firing
            )
            if muted is not None or inhibited:
                if any(e in (Event.FIRED, Event.RESOLVED, Event.FLAPPING) for e in events.get(key, ())):
                    suppressed += 1
                    log.info("alert %s: notification suppressed (%s)", key, muted or "inhibited by critical")
                if muted is not None and was_sent and not state.active:
                    forget.setdefault(gkey, set()).add(key)
                continue
            if state.flapping or state.status is AlertStatus.FIRING:
                candidates.setdefault(gkey, []).append(alert)
            elif was_sent:
                if timing.send_resolved:
                    candidates.setdefault(gkey, []).append(alert)
                else:
                    forget.setdefault(gkey, set()).add(key)
        if suppressed:
            for notifier in self._notifier_names(cfg):
                self.services.metrics.notifications.labels(notifier=notifier, result="suppressed").inc(suppressed)

        handed: list[Notification] = []
        for gkey in sorted(set(candidates) | set(self.groups) | set(forget)):
            old = self.groups.get(gkey)
            new, notification = plan(old, gkey, candidates.get(gkey, ()), now, timing, forget=forget.get(gkey, ()))
            if notification is not None:
                notification = self._with_notes(notification, cfg)
                if not await self._submit(notification):
                    continue  # log unchanged: flushed again on the next evaluation
                handed.append(notification)
                self._log_latency(notification)
            if new != old:
                if new is None:
                    self.groups.pop(gkey, None)
                else:
                    self.groups[gkey] = new
                self._dirty_groups.add(gkey)

        # Forget alerts with nothing left to tell or remember.
        in_logs = {k for g in self.groups.values() for k in g.sent}
        for key in [k for k, s in self.states.items() if forgettable(s) and k not in in_logs]:
            del self.states[key]
            self._dirty_states.add(key)
        return handed

    def _outgoing(self, state: AlertState, cfg: Config) -> Alert:
        assert state.alert is not None
        firing = state.status is AlertStatus.FIRING or state.flapping
        return replace(
            state.alert,
            status=AlertStatus.FIRING if firing else AlertStatus.RESOLVED,
            started_at=state.firing_since or state.alert.started_at,
            resolved_at=None if firing else state.resolved_at,
            flapping=state.flapping,
        )

    def _with_notes(self, notification: Notification, cfg: Config) -> Notification:
        alerts = []
        for alert in notification.alerts:
            icfg = cfg.integrations.get(alert.integration)
            notes = self._notes.read(icfg.notes, cfg.alerting.notes_max_chars) if icfg else None
            alerts.append(replace(alert, notes=notes) if notes else alert)
        return replace(notification, alerts=tuple(alerts))

    async def _submit(self, notification: Notification) -> bool:
        if self.sink is None:
            log.warning("no notifier configured; dropping notification for %s", notification.group_key)
            return True
        try:
            await asyncio.wait_for(self.sink.submit(notification), SUBMIT_TIMEOUT)
        except Exception as exc:
            self._submit_failing = True
            log.warning("notifier queue refused notification for %s: %s", notification.group_key,
                        self.services.redactor.text(repr(exc)))
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

    def _notifier_names(self, cfg: Config) -> list[str]:
        names = getattr(self.sink, "notifier_names", None)
        if names:
            return list(names)
        return ["slack"] if cfg.alerting.slack is not None else ["console"]

    def _export_firing(self) -> None:
        gauge = self.services.metrics.alert_firing
        firing = {
            (s.alert.integration, s.alert.alert, str(s.alert.severity))
            for s in self.states.values() if s.status is AlertStatus.FIRING and s.alert is not None
        }
        for labels in firing:
            gauge.labels(*labels).set(1)
        for labels in self._firing_labels - firing:
            gauge.labels(*labels).set(0)
        self._firing_labels |= firing

    # -- self-health ----------------------------------------------------------------------------------
    def _health_sample(self) -> self_health.HealthSample:
        notifiers: dict[str, bool | None] = {}
        sent: dict[str, float] = {}
        failed: dict[str, float] = {}
        for metric in self.services.metrics.notifications.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                name, result = sample.labels.get("notifier", ""), sample.labels.get("result", "")
                if result == "sent":
                    sent[name] = sample.value
                elif result == "failed":
                    failed[name] = sample.value
        for name in set(sent) | set(failed):
            sent_delta = self._delta(f"sent|{name}", sent.get(name, 0.0))
            failed_delta = self._delta(f"failed|{name}", failed.get(name, 0.0))
            notifiers[name] = False if sent_delta > 0 else (True if failed_delta > 0 else None)
        if self._submit_failing is not None:
            notifiers["queue"] = self._submit_failing
        lag = None
        for metric in self.services.metrics.scheduler_lag.collect():
            total = count = 0.0
            for sample in metric.samples:
                if sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
            runs = self._delta("lag_count", count)
            lag_sum = self._delta("lag_sum", total)
            lag = lag_sum / runs if runs > 0 else None
        return self_health.HealthSample(
            redis_up=self._redis_up, notifiers=notifiers, scheduler_lag=lag, redis_error=self._redis_error
        )

    def _delta(self, mark: str, value: float) -> float:
        previous = self._metric_marks.get(mark)
        self._metric_marks[mark] = value
        return 0.0 if previous is None else value - previous

    # -- persistence ----------------------------------------------------------------------------------
    def _redis_result(self, error: BaseException | None) -> None:
        if not self.store.durable:
            return
        self._redis_up = error is None
        detail = "" if error is None else f"{type(error).__name__}: {error}"
        self._redis_error = self.services.redactor.text(detail)
        self.services.metrics.redis_up.set(1 if error is None else 0)

    async def _load(self) -> None:
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                states = await self.store.load_states()
                groups = await self.store.load_groups()
                silences = await self.store.load_silences()
        except Exception as exc:
            self._redis_result(exc)
            log.warning("alert state not loaded (%s); retrying on the next evaluation", self._redis_error or exc)
            return
        self._redis_result(None)
        # What this process learnt before the load succeeded wins over what was stored.
        self.states = {**states, **self.states}
        self.groups = {**groups, **self.groups}
        self.silences = silences
        self._loaded = True
        log.info("alert state loaded: %d alerts, %d groups, %d silences (%s)", len(states), len(groups),
                 len(silences), "redis" if self.store.durable else "memory")

    async def _sync_store(self, now: float) -> None:
        if not self._loaded:
            await self._load()
            if not self._loaded:
                return
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self.store.ping()
                silences = await self.store.load_silences()
        except Exception as exc:
            self._redis_result(exc)
            return
        self._redis_result(None)
        old = [s.id for s in silences if stale(s, now)]
        self.silences = [s for s in silences if s.id not in old]
        if old:
            try:
                async with asyncio.timeout(STORE_TIMEOUT):
                    await self.store.delete_silences(old)
            except Exception as exc:
                self._redis_result(exc)

    async def _persist(self, *, even_if_down: bool = False) -> None:
        if not self._dirty_states and not self._dirty_groups:
            return
        if self._redis_up is False and not even_if_down:
            return  # Redis failed this evaluation already; the changes stay dirty for the next one
        states = {k: self.states[k] for k in self._dirty_states if k in self.states}
        groups = {k: self.groups[k] for k in self._dirty_groups if k in self.groups}
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self.store.save_states(states, [k for k in self._dirty_states if k not in self.states])
                await self.store.save_groups(groups, [k for k in self._dirty_groups if k not in self.groups])
        except Exception as exc:
            self._redis_result(exc)
            log.warning("alert state not saved (%s); retrying on the next evaluation", self._redis_error)
            return
        self._dirty_states.clear()
        self._dirty_groups.clear()


def _orphaned(state: AlertState, cfg: Config, configured: set[tuple[str, str]]) -> bool:
    alert = state.alert
    if alert is None or alert.integration == self_health.MONITOR:
        return False
    if alert.integration not in cfg.integrations:
        return True
    return alert.check is not None and (alert.integration, alert.check) not in configured


def _max_window(cfg: Config) -> float:
    longest = 3600.0
    for icfg in cfg.integrations.values():
        rules = icfg.alerts
        longest = max(longest, rules.error_rate.window, rules.latency.window,
                      *(w.long for w in rules.error_rate.windows))
    return longest
