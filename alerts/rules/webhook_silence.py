"""``webhook_silence``: an integration's webhook stream went quiet — no delivery for ``max_silence``, per
integration and optionally per event type — and, from the same data, ``webhook_duplicates``: the share of
duplicate deliveries in a window reached a threshold (a vendor retrying everything means our endpoint is
failing it). Thresholds come from the integration's ``webhooks`` section; ``enabled``, ``for``,
``keep_firing_for`` and ``severity`` from ``alerts.webhook_silence`` (for both alerts).

Silence only counts inside the active schedule: a window that opens at 09:00 after a quiet night starts
counting at 09:00, and outside the window the alert is inactive. A stream that never delivered counts from
when the monitor started watching it; a firing alert about such a stream is held, not judged, until that
count reaches ``max_silence`` again (``silence_unknown``: after a restart the silence before it is
unknown). While Redis can't be read the rule judges nothing (the state holds): stale data must not page
as silence. Input comes through ``RuleInput.facts``, written by the webhook reader
(``integration_kit.webhook_observations.to_facts``).
"""

from __future__ import annotations

from collections.abc import Iterator

from alerts.config import WebhookSilenceRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput, alert_key
from alerts.rules.text import fmt_ratio, fmt_seconds, fmt_utc
from alerts.webhook_config import ActiveSchedule, WebhookConfig
from integration_kit.webhook_observations import WebhookObservation, from_facts

DUPLICATES = "webhook_duplicates"
TYPE_TARGET = "type:"  # target of a per-event-type silence alert: "type:invoice.paid"


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    cfg = inp.config.webhooks
    rule: WebhookSilenceRule = inp.rule_config("webhook_silence")
    yield from _retired(inp, _instances(inp.integration, cfg, Severity(rule.severity)))
    obs = from_facts(inp.integration, inp.facts)
    if cfg is None or obs is None or not obs.fresh:
        return
    now = inp.now + obs.clock_offset  # in the clock the services stamped events with (Redis time)
    last = obs.snapshot.last_event_ts if obs.snapshot is not None else None
    silences: list[Condition | None] = []
    if cfg.max_silence is not None:
        silences.append(_silence(inp, rule, cfg, obs, now, None, last, cfg.max_silence))
    for event_type, type_cfg in sorted(cfg.event_types.items()):
        if type_cfg.max_silence is not None:
            seen = obs.snapshot.event_types.get(event_type) if obs.snapshot is not None else None
            silences.append(_silence(inp, rule, cfg, obs, now, event_type, seen, type_cfg.max_silence))
    yield from (c for c in silences if c is not None)
    duplicates = _duplicates(inp, rule, cfg, obs, now)
    if duplicates is not None:
        yield duplicates


def _instances(integration: str, cfg: WebhookConfig | None, severity: Severity) -> set[str]:
    """Keys of the alert instances the current config asks for."""
    if cfg is None:
        return set()
    keys = {alert_key(integration, DUPLICATES, None, severity)}
    if cfg.max_silence is not None:
        keys.add(alert_key(integration, "webhook_silence", None, severity))
    for event_type, type_cfg in cfg.event_types.items():
        if type_cfg.max_silence is not None:
            keys.add(alert_key(integration, "webhook_silence", f"{TYPE_TARGET}{event_type}", severity))
    return keys


def _retired(inp: RuleInput, wanted: set[str]) -> Iterator[Condition]:
    """Active instances the config no longer asks for (section, type or severity changed): clear them,
    or the engine would hold them forever as "not judged"."""
    for key in sorted(inp.active - wanted):
        for alert in ("webhook_silence", DUPLICATES):
            head = f"{inp.integration}/{alert}/"
            if not key.startswith(head):
                continue
            target, _, severity = key[len(head):].rpartition("/")
            if severity in set(Severity):
                yield Condition(
                    integration=inp.integration, alert=alert, severity=Severity(severity), active=False,
                    target=None if target == "-" else target,
                )


def silent_for(
    now: float, last_event: float | None, watching_since: float, schedule: ActiveSchedule | None
) -> float | None:
    """Seconds of *active* time without a delivery; None outside the schedule (silence is expected)."""
    counting_from = last_event if last_event is not None else watching_since
    if schedule is not None:
        opened = schedule.active_since(now)
        if opened is None:
            return None
        counting_from = max(counting_from, opened)
    return max(0.0, now - counting_from)


def silence_unknown(last: float | None, quiet: float | None, max_silence: float, firing: bool) -> bool:
    """Whether a firing silence alert cannot be judged: nothing was ever seen, so the silence is counted
    from when this monitor started watching, and that is shorter than ``max_silence`` — after a restart,
    the stream's silence before it is unknown. Judged "not silent", the incident resolved at every restart
    and fired again as a new one ``max_silence`` later."""
    return firing and last is None and quiet is not None and quiet < max_silence


def _silence(
    inp: RuleInput, rule: WebhookSilenceRule, cfg: WebhookConfig, obs: WebhookObservation, now: float,
    event_type: str | None, last: float | None, max_silence: float,
) -> Condition | None:
    quiet = silent_for(now, last, obs.watching_since, cfg.schedule)
    target = f"{TYPE_TARGET}{event_type}" if event_type else None
    if silence_unknown(last, quiet, max_silence,
                       alert_key(inp.integration, "webhook_silence", target, Severity(rule.severity)) in inp.active):
        return None
    active = quiet is not None and quiet >= max_silence
    what = f"{inp.integration} webhooks" + (f" of type {event_type}" if event_type else "")
    summary, details = "", {}
    if active and quiet is not None:
        if last is not None:
            since = f"last one {fmt_utc(last)}"
        else:
            since = f"none since the monitor started watching ({fmt_utc(obs.watching_since)})"
        summary = f"{what}: no delivery for {fmt_seconds(quiet)} (max {fmt_seconds(max_silence)}), {since}"
        details = {
            "last delivery": fmt_utc(last) if last is not None else "never seen",
            "max silence": fmt_seconds(max_silence),
        }
        if cfg.schedule is not None:
            details["counted during"] = _schedule_text(cfg.schedule)
        if obs.snapshot is not None:
            details["deliveries (all time)"] = f"{obs.snapshot.received} ({obs.snapshot.duplicates} duplicates)"
        details["possible causes"] = "endpoint disabled by the vendor after failures, expired secret or URL"
    return Condition(
        integration=inp.integration, alert="webhook_silence", severity=Severity(rule.severity), active=active,
        target=target,
        summary=summary, details=details, for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
    )


def _duplicates(
    inp: RuleInput, rule: WebhookSilenceRule, cfg: WebhookConfig, obs: WebhookObservation, now: float
) -> Condition | None:
    limits = cfg.duplicate_ratio
    ratio = obs.duplicate_ratio
    if ratio is None and now - obs.watching_since < limits.window:
        return None  # the window is not filled yet (e.g. just restarted): can't judge
    active = ratio is not None and ratio >= limits.threshold
    summary, details = "", {}
    if active and ratio is not None:
        summary = (
            f"{inp.integration} webhooks: {fmt_ratio(ratio)} of the last {obs.window_events} deliveries were "
            f"duplicates (≥ {fmt_ratio(limits.threshold)} in {fmt_seconds(limits.window)}): the vendor is "
            f"retrying, our endpoint may be failing or slow to answer"
        )
        details = {
            "duplicate ratio": f"{fmt_ratio(ratio)} of {obs.window_events} in {fmt_seconds(limits.window)}",
        }
    return Condition(
        integration=inp.integration, alert=DUPLICATES, severity=Severity(rule.severity), active=active,
        summary=summary, details=details, for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
    )


def _schedule_text(schedule: ActiveSchedule) -> str:
    return f"{','.join(schedule.days)} {schedule.start}–{schedule.end} {schedule.timezone}"
