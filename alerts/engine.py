"""The alert engine: a Component that evaluates every ``monitor.evaluation_interval``.

    CheckResults ─► Stats ─► rules (pure) ─► state machine (pure) ─► silences / maintenance / inhibition
                                                          ─► grouping + notification log (pure) ─► sink
                                                     └───► every firing and resolved alert ─► feed

State and the notification log live in ``AlertStore`` (Redis when configured), written after every
evaluation, so a restart neither repeats a message inside ``repeat_interval`` nor forgets a resolve.
What goes out (notifications to the sink, the state to the feed) is ``alerts/flush.py``'s; what several
replicas sharing the work change, ``alerts/replica_voice.py``'s. The evaluation loop is supervised
(``integration_kit.supervisor``): an evaluation that raises is logged, counted
(``integration_monitor_component_errors_total{component="alerts"}``) and the loop restarted with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from alerts import api, self_health
from alerts.concerns import Concerns, Scope
from alerts.fencing import Fences
from alerts.firing_gauges import FiringGauges
from alerts.flush import AlertFeed, Flusher, NotificationSink
from alerts.grouping import GroupLog, split_field
from alerts.handover import Handovers, OutageHandover
from alerts.health_sample import HealthSampler
from alerts.inputs import retargeted
from alerts.memo import LastMade
from alerts.model import AlertStatus, Notification, Severity
from alerts.replica_voice import ReplicaVoice, group_in
from alerts.routing import inhibited_by
from alerts.rules import RULES, Condition, RuleInput
from alerts.rules.base import judged_with_stats, known_targets
from alerts.silence_book import SilenceBook
from alerts.silences import Silence
from alerts.state import AlertState, judged_until
from alerts.stats import EXACT_BELOW_BUCKETS, QuotaReading, Stats
from alerts.stepping import SLICE_SECONDS, HandBack, Stepper, next_turn
from alerts.store import AlertStore
from alerts.store_sync import STORE_TIMEOUT, StoreSync
from alerts.traffic_stats import TrafficStats
from alerts.voice import Ownership, Voice, integration_of
from integration_kit.supervisor import Supervisor

__all__ = ["AlertEngine", "AlertFeed", "NotificationSink", "QuotaSource"]

if TYPE_CHECKING:
    import redis.asyncio

    from alerts.inputs import AlertMetrics, ConfigView, RedisHealthView
    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult

log = logging.getLogger(__name__)

CLOSE_GRACE = 5.0  # seconds an evaluation under way may take to finish when the engine closes
WAKE_GAP = 1.0  # minimum seconds between evaluations woken early (a newly failing check, a deadline)
# ... and at least this many times the last early evaluation's duration. An early evaluation judges only
# what changed (alerts/concerns.py), but with many checks failing at once that can be most of them; this
# keeps early evaluations to at most about a tenth of the loop's time.
WAKE_COST_FACTOR = 10.0
DUE_MARGIN = 0.01  # seconds past a deadline the engine evaluates at (wall clock vs the loop's clock)


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
        hand_back: HandBack = next_turn,
    ) -> None:
        """``autorun=False``: no evaluation loop; the caller runs ``evaluate()`` (tests, one-shot tools).
        ``ownership``: several replicas share the work; this engine speaks only for what it owns
        (``alerts/voice.py``). ``redis_health``: the daemon's verdict on Redis (its self-health alert
        follows it); without one, the engine's own store rounds decide. ``hand_back``: how an evaluation
        hands the event loop back between its slices (the daemon's waits while /metrics is written)."""
        self._hand_back = hand_back
        self.config = config
        self.voice = Voice(ownership)
        self._gained: set[str] = set()  # integrations that became ours: reload their state before speaking
        # Others' integrations whose runs were recorded here while Redis was unreachable: _forget_strays
        self._strays: set[str] = set()
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
        self.stats.keep_exact(_exact_window(config, self.stats.bucket_seconds))
        self._facts: dict[str, dict[str, float]] = {}
        self.traffic: dict[str, TrafficStats] = {}  # real-traffic calls by integration (add_traffic)
        self._health = HealthSampler(metrics)
        self._autorun = autorun
        self._supervisor = Supervisor(
            self.name, on_crash=metrics.component_errors.labels(self.name).inc,
            on_state=lambda ok: metrics.component_ok.labels(self.name).set(1 if ok else 0), redact=redactor.text,
        )
        self._wake = asyncio.Event()
        # The earliest deadline the last evaluation found (group_wait, group_interval, for, keep_firing_for):
        # the loop evaluates then rather than at the next interval, so these timings end on time.
        self.next_due: float | None = None
        self._flush_due: list[float] = []  # when groups flush (the alerts' own deadlines are in _concerns)
        self._concerns = Concerns()  # what an early evaluation judges
        self._full_next = True  # the next evaluation of the loop is a full pass (a new config came)
        # Full passes the loop completed: /api/status shows it, so whoever reads it (an operator, a test of
        # several processes) can tell that the engine judged what happened, rather than guess a time.
        self.evaluations = 0
        # One evaluation at a time: two interleaved ones would both flush the same group.
        self._lock = asyncio.Lock()
        # Several replicas: a fencing token per shard owned, taken before its state is (re)loaded, and the
        # outage voice's exchange with the owners.
        fences, outage = None, None
        if self.voice.shared and redis is not None and ownership is not None:
            fences = Fences(redis, config.alerting.key_prefix)
            outage = OutageHandover(Handovers(redis, config.alerting.key_prefix, ownership.me), self.voice,
                                    self._memory, self.stats, sink)
        self.replicas = ReplicaVoice(self.voice, self._memory, config=lambda: self.config, redactor=redactor,
                                     fences=fences, outage=outage)
        self._flusher = Flusher(self._memory, self.replicas, self.silence_book, metrics=metrics, redactor=redactor,
                                sink=sink, feed=feed, clock=clock, config=lambda: self.config)
        self._gauges = FiringGauges(metrics, self.voice)
        self._stepper = Stepper(self._memory, self.replicas, self.stats, self._concerns, redactor=redactor,
                                hand_back=hand_back)
        # The error-rate rule's firing conditions (``RuleInput.fired``): one key per check and severity at
        # most, so bounded by the config (a check removed leaves its entry until the memo's limit empties it).
        self._fired: LastMade[tuple[str, str, Severity], Condition] = LastMade()

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
            voice = self.voice
            if voice.ownership is not None and voice.in_outage and not voice.integration(result.integration):
                self._strays.add(result.integration)  # another's check, recorded here while Redis is unreachable
            self._concerns.result(result.integration, result.check)
            if flipped and not result.ok:
                self._wake.set()  # a check started failing: evaluate soon rather than at the next interval
        except Exception:  # must not raise into the scheduler
            log.exception("alert statistics: cannot record result of %s/%s", result.integration, result.check)

    def on_streak_continued(self, integration: str, check: str, count: int) -> None:
        """A check of an integration taken over has failed ``count`` runs in a row, counting the previous
        owner's (the daemon calls this; ``Stats.continue_streak``): judged again soon, as a new result is."""
        try:
            self.stats.continue_streak(integration, check, count)
            self._concerns.result(integration, check)
            self._wake.set()
        except Exception:  # must not raise into the cluster's streak task
            log.exception("alert statistics: cannot continue the streak of %s/%s", integration, check)

    def on_config(self, config: ConfigView) -> None:
        before, self.config = self.config, config
        self._full_next = True
        self.stats.retain(_check_keys(config))
        self.stats.retarget(retargeted(before, config))
        longest, old_width = _max_window(config), self.stats.bucket_seconds
        if self.stats.resize(longest):
            log.info("alert statistics: a longer window is configured; history kept in buckets of %gs "
                     "instead of %gs", self.stats.bucket_seconds, old_width)
        self.stats.keep_exact(_exact_window(config, self.stats.bucket_seconds))
        for traffic in self.traffic.values():
            traffic.max_window = longest
        for gone in [i for i in self.traffic if i not in config.integrations or (
                config.integrations[i].traffic is None and i in before.integrations
                and before.integrations[i].traffic is not None)]:
            del self.traffic[gone]  # gone, or its traffic section is: nothing to judge (a firing alert resolves)

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
                "evaluations": self.evaluations,
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
        does: too few failures in a row to judge yet, so the reloaded incident is left as it is. A run
        older than the previous owner's verdict that still arrives is no news (``_judged_before``)."""
        gained, lost = set(gained), set(lost)
        # What was lost goes too: its runs go to the new owner from now on, and what is left here would be
        # the start of a streak the outage voice continues one day (``_forget_strays``).
        self.stats.forget(gained | lost)
        for integration in gained:
            self.traffic.pop(integration, None)  # the owner's traffic reader backfills it
        self._gained.update(gained)
        for integration in gained:
            self._concerns.integration(integration)
        self.replicas.moved(gained | lost)
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
        last_full = -float("inf")
        wake_cost = 0.0  # how long the last early evaluation took
        while True:
            started = time.monotonic()
            self._wake.clear()
            interval = self.config.monitor.evaluation_interval
            full = self._full_next or started - last_full >= interval - DUE_MARGIN
            self._full_next = False
            await self.evaluate(full=full)
            if full:
                last_full = started
                self.evaluations += 1
            else:
                wake_cost = time.monotonic() - started
            # A full pass every interval; in between, early when a check starts failing or a deadline falls
            # due — but not more often than WAKE_GAP (or WAKE_COST_FACTOR × an early evaluation's cost), so a
            # burst of failures costs one evaluation, not one per result.
            gap = min(max(WAKE_GAP, WAKE_COST_FACTOR * wake_cost), interval)
            if not await self._supervisor.sleep(gap - (time.monotonic() - started)):
                return
            wait = last_full + interval - time.monotonic()
            if self.next_due is not None:
                wait = min(wait, self.next_due - self._clock() + DUE_MARGIN)
            if not await self._supervisor.sleep(wait, wake=self._wake):
                return

    async def evaluate(self, now: float | None = None, *, full: bool = True) -> list[Notification]:
        """One evaluation: of every check (``full``), or of what changed since it was last judged
        (``alerts/concerns.py``). Returns the notifications handed to the sink (for tests and `status`)."""
        async with self._lock:
            now = self._clock() if now is None else now
            cfg = self.config
            await self._memory.sync(now)
            if await self.replicas.take_fences(cfg) and self._gained:
                gained, self._gained = self._gained, set()
                if await self._memory.reload(lambda key: integration_of(key) in gained,
                                             lambda field: group_in(split_field(field)[1], gained, cfg)):
                    self._judged_before(gained)
                else:
                    self._gained |= gained  # Redis is down: try again next time

            await self.replicas.exchange_outage_voice(cfg)
            self._forget_strays()

            scope = self._concerns.take(now, full=full)
            if scope is not None:
                scope[self.voice.monitor] = None  # the monitor's own health: judged every time
            self._flush_due.clear()
            conditions = await self._conditions(cfg, now, scope)
            events = await self._stepper.advance(conditions, cfg, now, scope)
            self._flusher.publish(cfg, now)
            handed = await self._flusher.notify(cfg, now, events, self._flush_due)
            self._gauges.export(self._mine(), cfg.integrations)
            self.next_due = min((t for t in (*self._flush_due, self._concerns.next_due(now)) if t is not None
                                 and t > now), default=None)
            await self._memory.persist()
            self._supervisor.report(self._memory.redis_up is not False,
                                    f"alert state not in sync with Redis: {self._memory.redis_error}")
            return handed

    def _forget_strays(self) -> None:
        """Once an outage is over (and what its voice said handed over), the runs recorded here of checks
        owned elsewhere are dropped: from now on their runs go to the owner, and these would be the first
        of the next outage's windows and streaks, with the healthy runs in between missing (one failure in
        each outage read as two in a row: a page for a check that had failed once)."""
        voice = self.voice
        if self._strays and not voice.in_outage and not voice.outage_integrations:
            strays, self._strays = self._strays, set()
            self.stats.forget(i for i in strays if not voice.integration(i))

    def _judged_before(self, gained: set[str]) -> None:
        """The alerts of integrations taken over were just reloaded: a run older than the previous owner's
        last verdict on its check is no news (a prober's flush to it that seemed to fail, sent again to
        this replica once that owner left the view). Taken as the first run of the check here, a success
        from before the incident resolved it while the check still failed, and the next failures posted it
        again as a new incident."""
        until: dict[tuple[str, str], float] = {}
        for state in self.states.values():
            alert = state.alert
            if alert is None or alert.check is None or alert.integration not in gained:
                continue
            judged = judged_until(state)
            if judged is not None:
                key = (alert.integration, alert.check)
                until[key] = max(judged, until.get(key, judged))
        for (integration, check), at in until.items():
            self.stats.judged_elsewhere(integration, check, at)

    async def _conditions(self, cfg: ConfigView, now: float, scope: Scope | None) -> list[Condition]:
        # Each integration's rules see its own active alerts and quotas: handing every integration all
        # of them made each rule's scan of them integrations × alerts (at 50,000 checks in 500
        # integrations with 1 % failing, 14 % of an evaluation in the silence rules' scans alone).
        active: dict[str, set[str]] = {}
        for key, state in self._mine().items():
            if state.active:
                active.setdefault(integration_of(key), set()).add(key)
        # The targets of the alerts known: only their verdicts of "not active" are stepped (the stepper's own
        # test, by key; no state is added between here and there), so only they are asked for.
        known = known_targets(self._memory.states)
        quotas: dict[str, dict[str, QuotaReading]] = {}
        for (integration, quota), reading in self._quota_readings(now).items():
            quotas.setdefault(integration, {})[quota] = reading
        out: list[Condition] = []
        slice_started = time.perf_counter()
        integrations = cfg.integrations.items() if scope is None else (
            (i, cfg.integrations[i]) for i in scope if i in cfg.integrations)
        for integration, icfg in integrations:
            owned = self.voice.integration(integration)
            if not owned and not (self.voice.shared and self.replicas.speaks_in_outage(integration, icfg)):
                continue
            if time.perf_counter() - slice_started >= SLICE_SECONDS:
                await self._hand_back()
                slice_started = time.perf_counter()
            checks = None if scope is None else scope[integration]
            judged = None if checks is None else [c for c in icfg.checks if c.name in checks]
            inp = RuleInput(
                integration=integration, config=icfg, stats=self.stats, quotas=quotas.get(integration, {}), now=now,
                active=frozenset(active.get(integration, ())), facts=self._facts.get(integration, {}),
                traffic=self.traffic.get(integration),
                judged=judged,
                checked=judged_with_stats(self.stats, integration, icfg.checks if judged is None else judged),
                # (the outage voice's filter reads every verdict of another's integration)
                known_targets=known.get(integration, frozenset()) if owned else None,
                fired=self._fired,
            )
            for name, rule in RULES.items():
                rule_cfg = getattr(icfg.alerts, name, None)
                if rule_cfg is not None and not rule_cfg.enabled:
                    continue
                try:
                    found = rule(inp)
                    out.extend(found if owned else [c for c in found if self.replicas.judges_in_outage(c)])
                except Exception:  # one broken rule must not silence the others
                    log.exception("alert rule %s failed for %s", name, integration)
        if self._redis_health is not None:
            redis_up, redis_error = self._redis_health.up, self._redis_health.error
        else:
            redis_up, redis_error = self._memory.redis_up, self._memory.redis_error
        sample = self._health.sample(redis_up=redis_up, redis_error=redis_error,
                                     submit_failing=self._flusher.submit_failing)
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

    def _mine(self) -> dict[str, AlertState]:
        """The alert states this engine speaks for (all of them when it runs alone)."""
        return self.replicas.mine(self.states)


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


def _exact_window(cfg: ConfigView, bucket_seconds: float) -> float:
    """How far back runs are kept one by one: as far as the windows that must be exact reach — a latency
    window (its quantile needs every run), and the error-rate windows shorter than ``EXACT_BELOW_BUCKETS``
    buckets (one bucket more would be a large part of them). Longer ones are counted from buckets."""
    counted_from = EXACT_BELOW_BUCKETS * bucket_seconds
    longest = 0.0
    for icfg in cfg.integrations.values():
        rule = icfg.alerts.error_rate
        windows = (rule.window, *(w.long for w in rule.windows), *(w.short for w in rule.windows))
        longest = max(longest, icfg.alerts.latency.window, *(w for w in windows if w < counted_from))
    return longest
