"""Silences: mute notifications of alerts matching an integration / alert (/ check) until they expire.

Silenced alerts are still evaluated and tracked (``integration_alert_firing`` stays truthful); only
their notifications are held back and counted as ``suppressed``. Silences are stored with the alert
state (``AlertStore``) so the daemon, the ``silence`` command and ``/api/silences`` share them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from alerts.config import ConfigSilence
from alerts.model import Alert
from integration_kit.durations import MAX_DURATION, format_duration

ANY = "*"
# Stored times are epoch seconds a datetime can show (1970 to the end of 9999); config silences start at 0.
_EPOCH_RANGE = (0.0, 253402300799.0)
# Expired silences stay listed this long (to see what was muted), then are dropped.
EXPIRED_RETENTION = 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Silence:
    id: str
    integration: str = ANY
    alert: str = ANY
    check: str | None = None
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, alert: Alert) -> bool:
        return (
            self.integration in (ANY, alert.integration)
            and self.alert in (ANY, alert.alert)
            and (self.check is None or self.check == alert.check)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Silence:
        """A stored silence; ValueError (or TypeError, KeyError) when the record is not one."""
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        starts_at, ends_at = float(data["starts_at"]), float(data["ends_at"])
        for name, value in (("starts_at", starts_at), ("ends_at", ends_at)):
            if not _EPOCH_RANGE[0] <= value <= _EPOCH_RANGE[1]:  # NaN fails too
                raise ValueError(f"{name} {value!r} is not a time between the years 1970 and 9999")
        return cls(
            id=str(data["id"]), integration=str(data.get("integration", ANY)), alert=str(data.get("alert", ANY)),
            check=None if data.get("check") in (None, "") else str(data["check"]),
            starts_at=starts_at, ends_at=ends_at,
            comment=str(data.get("comment", "")), created_by=str(data.get("created_by", "")),
        )


def new_silence(
    *, now: float, duration: float, integration: str = ANY, alert: str = ANY, check: str | None = None,
    comment: str = "", created_by: str = "",
) -> Silence:
    if not 0 < duration <= MAX_DURATION:  # NaN fails too
        raise ValueError(f"a silence needs a positive duration of at most {format_duration(MAX_DURATION)}")
    if not integration or not alert:
        raise ValueError("integration and alert must be names or '*'")
    return Silence(
        id=secrets.token_hex(6), integration=integration, alert=alert, check=check or None, starts_at=now,
        ends_at=now + duration, comment=comment, created_by=created_by,
    )


def expire(silence: Silence, now: float) -> Silence:
    return replace(silence, ends_at=min(silence.ends_at, now))


def from_config(items: Iterable[ConfigSilence]) -> list[Silence]:
    return [
        Silence(
            id=f"config-{i}", integration=item.integration, alert=item.alert, check=item.check, starts_at=0.0,
            ends_at=item.ends_at.timestamp(), comment=item.comment, created_by="config",
        )
        for i, item in enumerate(items)
    ]


def silenced_by(alert: Alert, silences: Iterable[Silence], now: float) -> Silence | None:
    for silence in silences:
        if silence.active(now) and silence.matches(alert):
            return silence
    return None


def stale(silence: Silence, now: float) -> bool:
    return silence.ends_at + EXPIRED_RETENTION < now
