"""One evaluation's alert states: the rules' conditions and the known alerts in the evaluation's scope
(alerts/concerns.py), stepped through the state machine (alerts/state.py) — the events, and when each
alert moves next if nothing changes (its deadline, for the evaluation loop)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from alerts import self_health
from alerts.concerns import Concerns, Scope, in_scope
from alerts.content import alert_from_condition
from alerts.grouping import group_key
from alerts.memo import LastMade
from alerts.rules.webhook_silence import DUPLICATES
from alerts.state import AlertState, Event, due_at, step
from alerts.voice import integration_of

if TYPE_CHECKING:
    from alerts.inputs import ConfigView, IntegrationView
    from alerts.model import Alert
    from alerts.replica_voice import ReplicaVoice
    from alerts.rules import Condition
    from alerts.stats import Stats
    from alerts.store_sync import StoreSync
    from integration_kit.redact import Redactor

log = logging.getLogger(__name__)

# An evaluation runs on the event loop that also starts the probes: it hands the loop back whenever it
# has held it this long (checked between integrations, and every few hundred alert instances), so a
# probe due meanwhile starts late by about one slice, not by the whole evaluation (~0.6 s of CPU for
# 10,000 checks; more on a busy machine, hence a time, not a count). Results arriving between slices only
# feed the statistics; the evaluation's ``now`` and the alert states are its own (one at a time).
SLICE_SECONDS = 0.005
SLICE_CHECK_EVERY = 256  # alert instances between two looks at the clock


async def next_turn() -> None:
    """How an evaluation hands the loop back between slices unless told otherwise (``HandBack``): one
    turn. The daemon's also waits while a /metrics scrape is written (monitor/scrape_priority.py)."""
    await asyncio.sleep(0)


HandBack = Callable[[], Awaitable[None]]


class Stepper:
    def __init__(self, memory: StoreSync, replicas: ReplicaVoice, stats: Stats, concerns: Concerns, *,
                 redactor: Redactor, hand_back: HandBack = next_turn) -> None:
        self._hand_back = hand_back
        self._memory = memory
        self._replicas = replicas
        self._voice = replicas.voice
        self._stats = stats
        self._concerns = concerns
        self._redactor = redactor
        # Per alert key: the content its last verdict of "active" made, and what it was made of (``_content``).
        self._made: LastMade[str, Alert] = LastMade()

    async def advance(self, conditions: list[Condition], cfg: ConfigView, now: float,
                      scope: Scope | None) -> dict[str, tuple[Event, ...]]:
        """Step every alert ``conditions`` judge and every known one in ``scope`` (None: all of them)."""
        states, voice = self._memory.states, self._voice
        by_key: dict[str, Condition] = {}
        known = {integration_of(key) for key in states}  # (few: an alert is known while active or recent)
        slice_started = time.perf_counter()
        for counted, condition in enumerate(conditions, 1):
            if counted % SLICE_CHECK_EVERY == 0 and time.perf_counter() - slice_started >= SLICE_SECONDS:
                await self._hand_back()
                slice_started = time.perf_counter()
            # Never active and not now: stepping changes nothing (most of them; not even their keys are made).
            if condition.active or (condition.integration in known and condition.key in states):
                by_key[condition.key] = condition
        judged = states.keys() if scope is None else [k for k, s in states.items() if in_scope(scope, s)]
        events: dict[str, tuple[Event, ...]] = {}
        for stepped, key in enumerate(by_key.keys() | judged, 1):
            if stepped % SLICE_CHECK_EVERY == 0 and time.perf_counter() - slice_started >= SLICE_SECONDS:
                await self._hand_back()
                slice_started = time.perf_counter()
            if not voice.alert(key):
                continue  # another replica's: it evaluates and persists it
            cond = by_key.get(key)
            state = states.get(key) or AlertState(key=key)
            due = None
            if cond is not None:
                content = None
                if cond.active:
                    content = self._content(key, cond, cfg)
                    if key in voice.outage:
                        self._replicas.outage_group(group_key(content, cfg.alerting.group_by))
                else:
                    self._made.forget(key)
                new, evs = step(state, cond.active, now, for_seconds=cond.for_seconds,
                                keep_firing_for=cond.keep_firing_for, flapping=cfg.alerting.flapping, alert=content)
                due = due_at(new, cond.active, for_seconds=cond.for_seconds, keep_firing_for=cond.keep_firing_for)
            else:
                # Not judged this time: hold, unless what it is about is gone from the config.
                gone = _orphaned(state, cfg) or self._retargeted(state)
                new, evs = step(state, False if gone else None, now, for_seconds=0.0, keep_firing_for=0.0,
                                flapping=cfg.alerting.flapping)
            self._concerns.due(key, due, integration_of(key), new.alert.check if new.alert is not None else None)
            if new != state:
                self._memory.put_state(key, new)
            if evs:
                events[key] = evs
                log.info("alert %s: %s", key, ", ".join(evs))
        if len(self._made) > len(states):  # (alerts forgotten meanwhile)
            self._made.keep_only(states)
        return events

    def _content(self, key: str, cond: Condition, cfg: ConfigView) -> Alert:
        """``alert_from_condition``, or the same content again when what it reads is what it was last time:
        an alert that keeps firing gets an equal verdict pass after pass, and redacting and copying its
        texts anew was a fifth of what it cost a full pass (the same object also keeps its state's stored
        form: alerts/codec.py)."""
        stats = self._stats.check(cond.integration, cond.check) if cond.check else None
        icfg = cfg.integrations.get(cond.integration)
        runbook_url = icfg.runbook_url if icfg else None
        failed: tuple[object, ...] = ()  # what alert_from_condition reads of the statistics
        if stats is not None and stats.consecutive_failures > 0 and (failure := stats.last_failure) is not None:
            failed = (failure.request, failure.response_excerpt, stats.first_failure_at)
        inputs = (cond, failed, runbook_url, self._redactor.generation)
        made = self._made.get(key, inputs)
        if made is not None:
            return made
        return self._made.put(key, inputs, alert_from_condition(cond, stats, self._redactor, runbook_url))

    def _retargeted(self, state: AlertState) -> bool:
        """A tls_expiry alert of a check a reload pointed elsewhere (``Stats.retarget``): the certificate
        it was about is another endpoint's; until a run shows the new one it is judged by nothing."""
        alert = state.alert
        return (alert is not None and alert.alert == "tls_expiry" and alert.check is not None
                and (alert.integration, alert.check) in self._stats.tls_unknown)


def _orphaned(state: AlertState, cfg: ConfigView) -> bool:
    """What the alert is about is gone from the config: its integration, check or quota, or its rule was
    turned off (``enabled: false``). No rule will judge it again: held, it would fire for ever."""
    alert = state.alert
    if alert is None or self_health.is_monitor(alert.integration):
        return False
    icfg = cfg.integrations.get(alert.integration)
    if icfg is None:
        return True
    rule = getattr(icfg.alerts, "webhook_silence" if alert.alert == DUPLICATES else alert.alert, None)
    if rule is not None and not rule.enabled:
        return True
    if alert.quota is not None:  # "name", or "name/policy" for an API announcing several policies
        name = alert.quota.split("/", 1)[0]
        return all(quota.name != name for quota in icfg.quotas)
    if alert.alert == "error_rate" and alert.check is None:  # the real-traffic instance
        return icfg.traffic is None or not icfg.alerts.error_rate.traffic.enabled or not _severity_asked(alert, icfg)
    check = next((c for c in icfg.checks if c.name == alert.check), None) if alert.check is not None else None
    if alert.check is not None and check is None:
        return True
    if alert.alert == "latency" and check is not None:
        rule_threshold = icfg.alerts.latency.threshold
        if rule_threshold is None and getattr(getattr(check, "expect", None), "max_latency", None) is None:
            return True  # no threshold left: the rule judges this check no more
    return not _severity_asked(alert, icfg)


def _severity_asked(alert: Alert, icfg: IntegrationView) -> bool:
    """Whether the rule still gives this alert's severity (it is part of the key: a reload that changes the
    severity starts another alert, and the old one is never judged again)."""
    if alert.alert == "latency":
        return alert.severity == icfg.alerts.latency.severity
    if alert.alert == "error_rate":
        rule = icfg.alerts.error_rate
        if rule.mode == "threshold":
            return alert.severity == rule.severity
        return any(alert.severity == window.severity for window in rule.windows)
    return True
