"""``traffic_silence``: an integration's services stopped writing their real-traffic counters — no call
recorded by the integration kit for ``max_silence`` (the integration's ``traffic`` section; off unless
set). A service that is down, stuck, no longer calling its vendor or cut off from Redis is a silent
outage: probes stay green and the traffic error rate has nothing to judge. ``enabled``, ``for``,
``keep_firing_for`` and ``severity`` come from ``alerts.traffic_silence``.

Silence counts from the writers' latest flush (the ``last`` key, their clock), or from when the monitor
started reading the integration if no write was ever seen (or it expired), and only inside
``schedule`` when one is set — as for webhooks. While the traffic reader cannot read Redis the rule
judges nothing (the state holds). Input comes through ``RuleInput.facts``, written by the traffic reader
with ``to_facts`` below — the one encoding of those facts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from alerts.config import TrafficSilenceRule
from alerts.model import Severity
from alerts.rules.base import Condition, RuleInput, alert_key
from alerts.rules.text import fmt_seconds, fmt_utc
from alerts.rules.webhook_silence import silence_unknown, silent_for

ALERT = "traffic_silence"
_FACT = "traffic."


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficWrites:
    """What the traffic reader knows of an integration's writers (monitor clock, epoch seconds)."""

    watching_since: float  # first successful read of this integration
    last_write: float | None  # the writers' latest flush; None: none seen
    fresh: bool  # False while Redis cannot be read


def to_facts(writes: TrafficWrites | None) -> dict[str, float]:
    """Facts of one integration (None: not read, or no longer read, by this replica: judge nothing)."""
    if writes is None:
        return {f"{_FACT}watching_since": math.nan, f"{_FACT}last_write": math.nan, f"{_FACT}fresh": 0.0}
    return {
        f"{_FACT}watching_since": writes.watching_since,
        f"{_FACT}last_write": math.nan if writes.last_write is None else writes.last_write,
        f"{_FACT}fresh": 1.0 if writes.fresh else 0.0,
    }


def from_facts(facts: Mapping[str, float]) -> TrafficWrites | None:
    since = facts.get(f"{_FACT}watching_since")
    if since is None or math.isnan(since):
        return None
    last = facts.get(f"{_FACT}last_write")
    return TrafficWrites(watching_since=since, last_write=None if last is None or math.isnan(last) else last,
                         fresh=facts.get(f"{_FACT}fresh") == 1.0)


def evaluate(inp: RuleInput) -> Iterator[Condition]:
    rule: TrafficSilenceRule = inp.rule_config(ALERT)
    severity = Severity(rule.severity)
    cfg = inp.config.traffic
    max_silence = cfg.max_silence if cfg is not None else None
    wanted = alert_key(inp.integration, ALERT, None, severity) if max_silence is not None else None
    yield from _retired(inp, wanted)
    writes = from_facts(inp.facts)
    if cfg is None or max_silence is None or writes is None or not writes.fresh:
        return
    quiet = silent_for(inp.now, writes.last_write, writes.watching_since, cfg.schedule)
    if silence_unknown(writes.last_write, quiet, max_silence, wanted in inp.active):
        return  # never written since this monitor started reading: a firing alert holds (a restart)
    active = quiet is not None and quiet >= max_silence
    summary, details = "", {}
    if active and quiet is not None:
        if writes.last_write is not None:
            since = f"last write {fmt_utc(writes.last_write)}"
        else:
            since = f"none since the monitor started reading them ({fmt_utc(writes.watching_since)})"
        summary = (f"{inp.integration} real traffic: no calls recorded for {fmt_seconds(quiet)} "
                   f"(max {fmt_seconds(max_silence)}), {since}")
        details = {
            "last write": fmt_utc(writes.last_write) if writes.last_write is not None else "never seen",
            "max silence": fmt_seconds(max_silence),
            "possible causes": "the service is down or stuck, stopped calling the vendor, or cannot reach Redis",
        }
    yield Condition(
        integration=inp.integration, alert=ALERT, severity=severity, active=active, summary=summary,
        details=details, for_seconds=rule.for_, keep_firing_for=rule.keep_firing_for,
    )


def _retired(inp: RuleInput, wanted: str | None) -> Iterator[Condition]:
    """Active instances the config no longer asks for (max_silence removed, severity changed): clear
    them, or the engine would hold them forever as "not judged"."""
    head = f"{inp.integration}/{ALERT}/-/"
    for key in sorted(k for k in inp.active if k.startswith(head) and k != wanted):
        severity = key[len(head):]
        if severity in set(Severity):
            yield Condition(integration=inp.integration, alert=ALERT, severity=Severity(severity), active=False)
