"""The webhook alert rules (pure) with a fake clock: silence after max_silence, only inside the active
schedule, per event type, duplicate ratio; and the schedule and duplicate-window arithmetic under them."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from alerts.config import FlappingConfig
from alerts.model import AlertStatus
from alerts.rules import RULES, Condition, RuleInput
from alerts.rules.webhook_silence import DUPLICATES, evaluate
from alerts.state import AlertState, Event, step
from alerts.stats import Stats
from alerts.webhook_config import ActiveSchedule
from integration_kit.webhook_observations import WebhookObservation, WebhookSnapshot, from_facts, to_facts
from monitor.settings import parse_config
from monitor.webhooks.duplicate_window import DuplicateWindow

BERLIN = ZoneInfo("Europe/Berlin")
BUSINESS_HOURS = {"timezone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"],
                  "start": "09:00", "end": "18:00"}


def berlin(*args: int) -> float:
    return dt.datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def rule_input(webhooks: dict[str, Any] | None, obs: WebhookObservation, now: float,
               alerts: dict[str, Any] | None = None, active: frozenset[str] = frozenset()) -> RuleInput:
    acme: dict[str, Any] = {"alerts": alerts or {}}
    if webhooks is not None:
        acme["webhooks"] = webhooks
    config = parse_config(yaml.safe_dump({"integrations": {"acme": acme}}))
    integration = config.integrations["acme"]
    types = tuple(integration.webhooks.event_types) if integration.webhooks else ()
    return RuleInput(
        integration="acme", config=integration, stats=Stats(), quotas={}, now=now, active=active,
        facts=to_facts(obs, types),
    )


def observe(last: float | None, *, watching_since: float = 0.0, fresh: bool = True, offset: float = 0.0,
            types: dict[str, float] | None = None, ratio: float | None = None, events: int = 0) -> WebhookObservation:
    snapshot = WebhookSnapshot(integration="acme", received=10, duplicates=1, last_event_ts=last,
                               event_types=types or {}, read_at=0.0)
    return WebhookObservation(integration="acme", snapshot=snapshot, watching_since=watching_since, fresh=fresh,
                              clock_offset=offset, duplicate_ratio=ratio, window_events=events)


def conditions(
    webhooks: dict[str, Any], obs: WebhookObservation, now: float
) -> dict[tuple[str, str | None], Condition]:
    return {(c.alert, c.target): c for c in evaluate(rule_input(webhooks, obs, now))}


def silence(webhooks: dict[str, Any], obs: WebhookObservation, now: float) -> bool | None:
    found = conditions(webhooks, obs, now).get(("webhook_silence", None))
    return None if found is None else found.active


def test_the_rule_is_registered() -> None:
    assert RULES["webhook_silence"] is evaluate


def test_silence_fires_after_max_silence_on_a_fake_clock() -> None:
    last = berlin(2026, 11, 24, 10, 0)  # a Tuesday
    webhooks = {"max_silence": "30m"}
    state, fired_at = AlertState(key="acme/webhook_silence/-/warning"), None
    for minute in range(0, 61):
        now = last + minute * 60
        (cond,) = [c for c in evaluate(rule_input(webhooks, observe(last), now)) if c.alert == "webhook_silence"]
        state, events = step(state, cond.active, now, for_seconds=cond.for_seconds,
                             keep_firing_for=cond.keep_firing_for, flapping=FlappingConfig())
        if Event.FIRED in events:
            fired_at = now
            assert "no delivery for 30m (max 30m)" in cond.summary
    assert fired_at == last + 30 * 60
    assert state.status is AlertStatus.FIRING
    # A delivery ends the silence.
    state, events = step(state, silence(webhooks, observe(last + 3600), last + 3601), last + 3601,
                         for_seconds=0, keep_firing_for=0, flapping=FlappingConfig())
    assert events == (Event.RESOLVED,)


def test_alerts_for_and_severity_settings_apply() -> None:
    obs = observe(berlin(2026, 11, 24, 10, 0))
    inp = rule_input({"max_silence": "30m"}, obs, berlin(2026, 11, 24, 11, 0),
                     alerts={"webhook_silence": {"for": "5m", "keep_firing_for": "10m", "severity": "critical"}})
    (cond,) = [c for c in evaluate(inp) if c.alert == "webhook_silence"]
    assert (cond.active, cond.for_seconds, cond.keep_firing_for, str(cond.severity)) == (True, 300, 600, "critical")


def test_quiet_outside_business_hours_and_counting_starts_when_the_window_opens() -> None:
    webhooks = {"max_silence": "30m", "schedule": BUSINESS_HOURS}
    last = berlin(2026, 11, 27, 17, 50)  # Friday, ten minutes before closing
    assert silence(webhooks, observe(last), berlin(2026, 11, 27, 17, 59)) is False
    assert silence(webhooks, observe(last), berlin(2026, 11, 27, 18, 30)) is False  # after hours
    assert silence(webhooks, observe(last), berlin(2026, 11, 28, 12, 0)) is False  # Saturday
    assert silence(webhooks, observe(last), berlin(2026, 11, 30, 8, 59)) is False  # Monday, before opening
    assert silence(webhooks, observe(last), berlin(2026, 11, 30, 9, 29)) is False  # counting since 09:00
    assert silence(webhooks, observe(last), berlin(2026, 11, 30, 9, 30)) is True
    # Without the schedule the same weekend silence fires.
    assert silence({"max_silence": "30m"}, observe(last), berlin(2026, 11, 28, 12, 0)) is True


def test_a_firing_silence_resolves_when_the_window_closes() -> None:
    webhooks = {"max_silence": "30m", "schedule": BUSINESS_HOURS}
    last = berlin(2026, 11, 24, 16, 0)
    assert silence(webhooks, observe(last), berlin(2026, 11, 24, 17, 59)) is True
    assert silence(webhooks, observe(last), berlin(2026, 11, 24, 18, 0)) is False


def test_a_stream_that_never_delivered_counts_from_when_watching_started() -> None:
    start = berlin(2026, 11, 24, 10, 0)
    never = WebhookObservation(integration="acme", snapshot=None, watching_since=start, fresh=True)
    assert silence({"max_silence": "30m"}, never, start + 29 * 60) is False
    assert silence({"max_silence": "30m"}, never, start + 30 * 60) is True
    cond = conditions({"max_silence": "30m"}, never, start + 31 * 60)[("webhook_silence", None)]
    assert "none since the monitor started watching" in cond.summary
    assert cond.details["last delivery"] == "never seen"


def test_stale_data_judges_nothing() -> None:
    last = berlin(2026, 11, 24, 10, 0)
    assert conditions({"max_silence": "30m"}, observe(last, fresh=False), last + 86400) == {}


def test_without_max_silence_there_is_no_silence_alert() -> None:
    last = berlin(2026, 11, 24, 10, 0)
    assert ("webhook_silence", None) not in conditions({}, observe(last), last + 86400)


def test_redis_clock_offset_is_applied() -> None:
    last = berlin(2026, 11, 24, 10, 0)
    # Redis (the services' clock) runs 2 minutes ahead of the monitor.
    assert silence({"max_silence": "30m"}, observe(last, offset=120), last + 28 * 60) is True
    assert silence({"max_silence": "30m"}, observe(last, offset=-120), last + 31 * 60) is False


def test_per_event_type_silence() -> None:
    now = berlin(2026, 11, 24, 12, 0)
    webhooks = {"max_silence": "30m", "event_types": {"invoice.paid": {"max_silence": "2h"}, "charge.refunded": None}}
    obs = observe(now - 60, types={"invoice.paid": now - 3 * 3600, "charge.refunded": now - 86400})
    found = conditions(webhooks, obs, now)
    assert found[("webhook_silence", None)].active is False  # other events keep arriving
    typed = found[("webhook_silence", "type:invoice.paid")]
    assert typed.active is True
    assert "of type invoice.paid" in typed.summary
    assert ("webhook_silence", "type:charge.refunded") not in found  # tracked only, no max_silence
    recent = observe(now - 60, types={"invoice.paid": now - 3600})
    assert conditions(webhooks, recent, now)[("webhook_silence", "type:invoice.paid")].active is False


@pytest.mark.parametrize(
    ("ratio", "events", "watched", "expected"),
    [
        (0.6, 40, 3600, True),
        (0.5, 40, 3600, True),
        (0.2, 40, 3600, False),
        (None, 3, 3600, False),  # too few deliveries in a full window: no storm
        (None, 3, 60, None),  # window not filled since (re)start: can't judge
    ],
)
def test_duplicate_ratio(ratio: float | None, events: int, watched: float, expected: bool | None) -> None:
    now = berlin(2026, 11, 24, 12, 0)
    webhooks = {"duplicate_ratio": {"threshold": 0.5, "window": "15m", "min_events": 20}}
    obs = observe(now, watching_since=now - watched, ratio=ratio, events=events)
    found = conditions(webhooks, obs, now).get((DUPLICATES, None))
    assert (None if found is None else found.active) is expected
    if expected:
        assert found is not None and f"of the last {events} deliveries were duplicates" in found.summary


def test_instances_the_config_no_longer_asks_for_are_cleared() -> None:
    now = berlin(2026, 11, 24, 12, 0)
    active = frozenset({
        "acme/webhook_silence/type:invoice.paid/warning",  # type dropped from config
        "acme/webhook_silence/-/critical",  # severity changed back to warning
        "acme/webhook_duplicates/-/warning",  # still configured: judged (or held) as usual
        "acme/error_rate/balance/critical",  # another rule's: not ours to touch
    })
    # (just started watching: the duplicates window is not filled, so that one is held, not judged)
    found = list(evaluate(rule_input({"max_silence": "30m"}, observe(now, watching_since=now), now, active=active)))
    retired = {c.key for c in found if not c.active and c.key in active}
    assert retired == {"acme/webhook_silence/type:invoice.paid/warning", "acme/webhook_silence/-/critical"}
    # The webhooks section removed: every active webhook alert of the integration clears, even while
    # the reader has nothing fresh to say.
    gone = list(evaluate(rule_input(None, observe(now, fresh=False), now, active=active)))
    assert {c.key for c in gone} == {
        "acme/webhook_silence/type:invoice.paid/warning", "acme/webhook_silence/-/critical",
        "acme/webhook_duplicates/-/warning",
    }
    assert not any(c.active for c in gone)


def test_facts_overwritten_one_by_one_forget_values_that_went_away() -> None:
    facts = to_facts(observe(100.0, ratio=0.8, events=30, types={"a": 50.0}), ("a",))
    facts.update(to_facts(WebhookObservation(integration="acme", snapshot=None, watching_since=7.0, fresh=False),
                          ("a",)))
    obs = from_facts("acme", facts)
    assert obs == WebhookObservation(integration="acme", snapshot=None, watching_since=7.0, fresh=False)
    assert from_facts("acme", {}) is None


# The arithmetic underneath -----------------------------------------------------------------------


def test_schedule_active_since_across_days_and_dst() -> None:
    hours = ActiveSchedule(**BUSINESS_HOURS)
    assert hours.active_since(berlin(2026, 11, 24, 12, 0)) == berlin(2026, 11, 24, 9, 0)
    assert hours.active_since(berlin(2026, 11, 24, 18, 0)) is None  # end is exclusive
    assert hours.active_since(berlin(2026, 11, 29, 12, 0)) is None  # Sunday
    # Monday after the spring DST switch: 09:00 CEST is 07:00 UTC.
    opened = hours.active_since(berlin(2026, 3, 30, 9, 15))
    assert opened == dt.datetime(2026, 3, 30, 7, 0, tzinfo=dt.UTC).timestamp()


def test_overnight_and_all_day_schedules() -> None:
    night = ActiveSchedule(timezone="Europe/Berlin", days=("fri",), start="22:00", end="06:00")
    assert night.active_since(berlin(2026, 11, 27, 23, 0)) == berlin(2026, 11, 27, 22, 0)
    assert night.active_since(berlin(2026, 11, 28, 5, 59)) == berlin(2026, 11, 27, 22, 0)  # Saturday morning
    assert night.active_since(berlin(2026, 11, 28, 6, 0)) is None
    assert night.active_since(berlin(2026, 11, 27, 5, 0)) is None  # Friday morning belongs to Thursday
    all_day = ActiveSchedule(timezone="UTC", days=("sat", "sun"))
    saturday = dt.datetime(2026, 11, 28, 15, 0, tzinfo=dt.UTC).timestamp()
    assert all_day.active_since(saturday) == dt.datetime(2026, 11, 28, tzinfo=dt.UTC).timestamp()
    assert all_day.active_since(saturday + 86400 * 2) is None  # Monday


def test_duplicate_window_slides_and_survives_resets() -> None:
    window = DuplicateWindow(600)
    window.add(0, 100, 10)
    assert window.ratio(1) == (None, 0)
    window.add(300, 150, 20)
    assert window.ratio(1) == (10 / 50, 50)
    window.add(700, 200, 60)  # window starts at 100: the sample at 0 is still the baseline
    assert window.ratio(1) == (50 / 100, 100)
    window.add(1000, 200, 60)  # window starts at 400: the sample at 300 is the baseline now
    assert window.ratio(1) == (40 / 50, 50)
    assert window.ratio(51) == (None, 50)
    window.add(1100, 5, 1)  # totals went down: Redis lost the keys; start afresh
    assert window.ratio(1) == (None, 0)
    window.add(1200, 15, 6)
    assert window.ratio(1) == (0.5, 10)


def test_a_firing_silence_of_a_stream_never_seen_holds_after_a_restart() -> None:
    """A stream that never delivered is counted from when this monitor started watching it: after a restart,
    its silence before is unknown. Judged "not silent" then, the incident was resolved at every restart (a
    resolve posted while the stream was still silent) and posted again as a new one max_silence later."""
    restarted = berlin(2026, 11, 24, 10, 0)
    webhooks = {"max_silence": "30m", "event_types": {"invoice.paid": {"max_silence": "2h"}}}
    never = WebhookObservation(integration="acme", snapshot=None, watching_since=restarted, fresh=True)
    firing = frozenset({"acme/webhook_silence/-/warning", "acme/webhook_silence/type:invoice.paid/warning"})
    for minutes, held in ((1, {None, "type:invoice.paid"}), (30, {"type:invoice.paid"}), (120, set())):
        found = {c.target: c.active for c in evaluate(rule_input(webhooks, never, restarted + minutes * 60,
                                                                  active=firing)) if c.alert == "webhook_silence"}
        assert set(found) == {None, "type:invoice.paid"} - held, minutes
        assert all(found.values()), found  # judged again once the watch alone is max_silence long: still silent
    # Not firing: the watch so far says "not silent yet", as before.
    assert silence(webhooks, never, restarted + 60) is False
    # Once a delivery was seen, its time decides (kept in Redis, it survives the restart): recovered.
    delivered = observe(restarted + 30, watching_since=restarted, types={"invoice.paid": restarted + 30})
    found = {c.target: c.active for c in evaluate(rule_input(webhooks, delivered, restarted + 60, active=firing))
             if c.alert == "webhook_silence"}
    assert found == {None: False, "type:invoice.paid": False}
