"""Config of an integration's ``webhooks`` section: the thresholds of the ``webhook_silence`` and
``webhook_duplicates`` alerts, when silence counts, and where services write the ledger keys.

```yaml
webhooks:
  max_silence: 30m                  # alert when no delivery arrived for this long (active time only)
  event_types:                      # optional; only these get a per-type gauge (bounded labels)
    invoice.paid: {max_silence: 2h} #   …and, with max_silence, their own silence alert
    charge.refunded: {}             #   tracked (gauge, /api/status), no alert of its own
  schedule:                         # optional: silence only counts inside this window
    timezone: Europe/Berlin
    days: [mon, tue, wed, thu, fri]
    start: "09:00"
    end: "18:00"                    # end <= start wraps past midnight; start == end is all day
  duplicate_ratio: {threshold: 0.5, window: 15m, min_events: 20}
  retention: 7d                     # how long services remember event IDs (WebhookLedger retention)
  key_prefix: "im:wh:"              # where services write the ledger keys (see integration_kit.webhooks)
```
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from integration_kit.durations import Duration
from integration_kit.timezones import TimeZoneName
from integration_kit.webhooks import DEFAULT_KEY_PREFIX, DEFAULT_RETENTION

DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY_NAMES: tuple[DayName, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = weekday()
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActiveSchedule(_Strict):
    """When a webhook stream is expected to be busy; outside it, silence is normal and not counted.

    One daily window on the listed days, in local time of an IANA time zone (DST handled by zoneinfo).
    A window whose ``end`` is not after its ``start`` runs past midnight into the next day and belongs to
    the day it starts on; ``start == end`` means the whole day.
    """

    timezone: TimeZoneName = "UTC"
    days: tuple[DayName, ...] = DAY_NAMES
    start: str = Field(default="00:00", description="HH:MM local time the window opens")
    end: str = Field(default="00:00", description="HH:MM local time the window closes")

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[DayName, ...]) -> tuple[DayName, ...]:
        if not value:
            raise ValueError("expected at least one day (mon … sun)")
        return value

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"expected a 24-hour time HH:MM such as 09:00, got {value!r}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def active_since(self, ts: float) -> float | None:
        """Epoch seconds at which the active window containing ``ts`` opened, or None when inactive."""
        zone = self.zone
        local = dt.datetime.fromtimestamp(ts, zone)
        start, end = _parse_hhmm(self.start), _parse_hhmm(self.end)
        wraps = end <= start
        # The window that may contain `local` opened today, or (for wrapping windows) yesterday.
        for days_back in (0, 1) if wraps else (0,):
            day = local.date() - dt.timedelta(days=days_back)
            if DAY_NAMES[day.weekday()] not in self.days:
                continue
            opened = dt.datetime.combine(day, start, tzinfo=zone)
            closes_day = day + dt.timedelta(days=1) if wraps else day
            closes = dt.datetime.combine(closes_day, end, tzinfo=zone)
            if opened.timestamp() <= ts < closes.timestamp():
                return opened.timestamp()
        return None

    def is_active(self, ts: float) -> bool:
        return self.active_since(ts) is not None


def _parse_hhmm(value: str) -> dt.time:
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


class EventTypeConfig(_Strict):
    max_silence: Duration | None = Field(default=None, gt=0)


class DuplicateRatioConfig(_Strict):
    """Alert when this share of deliveries in ``window`` were duplicates (the vendor retries everything:
    our endpoint is probably failing them)."""

    threshold: float = Field(default=0.5, gt=0, le=1)
    window: Duration = Field(default=900.0, gt=0)
    min_events: int = Field(default=20, ge=1, description="deliveries in the window before the ratio counts")


class WebhookConfig(_Strict):
    max_silence: Duration | None = Field(default=None, gt=0)
    event_types: dict[str, EventTypeConfig] = Field(default_factory=dict)
    schedule: ActiveSchedule | None = None
    duplicate_ratio: DuplicateRatioConfig = DuplicateRatioConfig()
    retention: Duration = Field(default=DEFAULT_RETENTION, gt=0)
    key_prefix: str = Field(default=DEFAULT_KEY_PREFIX, pattern=r"^[A-Za-z0-9_.:-]{0,64}$")

    @field_validator("event_types", mode="before")
    @classmethod
    def _empty_entries(cls, value: Any) -> Any:
        # `invoice.paid:` with nothing after it means "track it", like `invoice.paid: {}`.
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("event_types")
    @classmethod
    def _type_names(cls, value: dict[str, EventTypeConfig]) -> dict[str, EventTypeConfig]:
        for name in value:
            if not 1 <= len(name) <= 128:
                raise ValueError(f"event type names must be 1 to 128 characters, got {name!r}")
        if len(value) > 50:
            raise ValueError(f"at most 50 event types (each is a metric label), got {len(value)}")
        return value
