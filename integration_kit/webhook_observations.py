"""What is known about an integration's webhook stream: the totals of its ledger keys
(``integration_kit.webhooks``) as read at one moment, and the observation the webhook alert rules
evaluate, with its one encoding as alert-engine facts. Shared by the monitor's webhook reader (which
writes the facts) and the ``webhook_silence`` rule (which reads them). No I/O here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSnapshot:
    """Totals of one integration as the services wrote them, read at ``read_at`` (Redis time)."""

    integration: str
    received: int = 0
    duplicates: int = 0
    released: int = 0
    last_event_ts: float | None = None
    event_types: Mapping[str, float] = field(default_factory=dict)  # type → last delivery (epoch)
    read_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookObservation:
    """Input of the webhook alert rules for one integration.

    Times are Redis server time (what the services stamped); ``clock_offset`` = Redis time − monitor
    time at the last read, so a rule given the monitor's ``now`` compares like with like.
    """

    integration: str
    snapshot: WebhookSnapshot | None  # None until the first successful read
    watching_since: float  # Redis time the monitor first read this integration: silence baseline
    fresh: bool  # False while Redis can't be read: rules must not judge silence on old data
    clock_offset: float = 0.0
    duplicate_ratio: float | None = None  # over the configured window; None below min_events
    window_events: int = 0  # deliveries in that window


# The alert engine passes other components' data to rules as ``facts``: a flat name → float mapping per
# integration, set one value at a time and never deleted (``AlertEngine.set_fact``). So every fact is
# always sent, NaN standing for "none". These two functions are the only encoder and decoder.
_FACT = "webhook."
_TYPE_FACT = "webhook.type."
_NONE = math.nan


def to_facts(obs: WebhookObservation, event_types: tuple[str, ...] = ()) -> dict[str, float]:
    """Facts of one observation; per-type last-seen only for ``event_types`` (the configured ones)."""
    snap = obs.snapshot
    facts = {
        f"{_FACT}watching_since": obs.watching_since,
        f"{_FACT}fresh": 1.0 if obs.fresh else 0.0,
        f"{_FACT}clock_offset": obs.clock_offset,
        f"{_FACT}window_events": float(obs.window_events),
        f"{_FACT}duplicate_ratio": _NONE if obs.duplicate_ratio is None else obs.duplicate_ratio,
        f"{_FACT}read_at": _NONE if snap is None else snap.read_at,
        f"{_FACT}received": _NONE if snap is None else float(snap.received),
        f"{_FACT}duplicates": _NONE if snap is None else float(snap.duplicates),
        f"{_FACT}last_event_ts": _NONE if snap is None or snap.last_event_ts is None else snap.last_event_ts,
    }
    for event_type in event_types:
        seen = None if snap is None else snap.event_types.get(event_type)
        facts[f"{_TYPE_FACT}{event_type}"] = _NONE if seen is None else seen
    return facts


def from_facts(integration: str, facts: Mapping[str, float]) -> WebhookObservation | None:
    """The observation back from facts; None when the webhook reader has not reported this integration."""

    def get(name: str) -> float | None:
        value = facts.get(f"{_FACT}{name}")
        return None if value is None or math.isnan(value) else value

    since = get("watching_since")
    if since is None:
        return None
    snapshot = None
    read_at = get("read_at")
    if read_at is not None:
        snapshot = WebhookSnapshot(
            integration=integration,
            received=int(get("received") or 0),
            duplicates=int(get("duplicates") or 0),
            last_event_ts=get("last_event_ts"),
            event_types={
                k[len(_TYPE_FACT):]: v for k, v in facts.items() if k.startswith(_TYPE_FACT) and not math.isnan(v)
            },
            read_at=read_at,
        )
    return WebhookObservation(
        integration=integration,
        snapshot=snapshot,
        watching_since=since,
        fresh=get("fresh") == 1.0,
        clock_offset=get("clock_offset") or 0.0,
        duplicate_ratio=get("duplicate_ratio"),
        window_events=int(get("window_events") or 0),
    )
