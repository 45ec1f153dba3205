"""Config of alert rules (per integration) and of the ``alerting`` section (notifiers, timing).

Every rule kind has a model here with defaults, so ``alerts:`` may be omitted entirely. Each rule has
``enabled``, ``for`` (pending until the condition held this long) and ``keep_firing_for`` (hold after the
condition cleared, so a wobbling condition does not resolve and re-fire every evaluation).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alerts.notifier_config import AlertmanagerConfig, ConsoleConfig, SlackConfig
from integration_kit.durations import Duration
from integration_kit.timezones import TimeZoneName

DEFAULT_KEY_PREFIX = "im:alerts:"
Level = Literal["warning", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Rule(_Strict):
    enabled: bool = True
    for_: Duration = Field(default=0.0, alias="for", description="condition must hold this long before firing")
    keep_firing_for: Duration = Field(default=0.0, description="hold a firing alert this long after it cleared")


class BurnRateWindow(_Strict):
    """One tier of the multi-window burn-rate alert: both windows must burn faster than ``factor``."""

    long: Duration
    short: Duration
    factor: float = Field(gt=0)
    severity: Level = "critical"

    @model_validator(mode="after")
    def _short_inside_long(self) -> BurnRateWindow:
        if not 0 < self.short <= self.long:
            raise ValueError("short window must be greater than 0 and not longer than the long window")
        return self


# Google SRE workbook, chapter "Alerting on SLOs", table 5-8 (30-day SLO): two page tiers and one ticket.
DEFAULT_BURN_WINDOWS: tuple[BurnRateWindow, ...] = (
    BurnRateWindow(long=3600.0, short=300.0, factor=14.4, severity="critical"),
    BurnRateWindow(long=21600.0, short=1800.0, factor=6.0, severity="critical"),
    BurnRateWindow(long=86400.0, short=7200.0, factor=3.0, severity="warning"),
)


class TrafficGuard(_Strict):
    """The error-rate rule on an integration's real traffic (its ``traffic`` section): its own
    minimum-samples guard, since services make far more calls than probes make runs."""

    enabled: bool = True
    min_samples: int = Field(default=100, ge=1, description="calls needed in the long (or only) window")
    min_short_samples: int = Field(default=20, ge=1, description="calls needed in the short window")


class ErrorRateRule(_Rule):
    """Spike detection per check. ``mode: burn_rate`` (default) or ``threshold``.

    Giving ``threshold`` without ``mode`` selects threshold mode (the short form; README, "Alerting").
    """

    mode: Literal["burn_rate", "threshold"] = "burn_rate"
    slo: float = Field(default=0.99, gt=0, lt=1, description="success-ratio target; budget = 1 - slo")
    windows: tuple[BurnRateWindow, ...] = DEFAULT_BURN_WINDOWS
    threshold: float = Field(default=0.05, gt=0, le=1, description="error ratio (threshold mode)")
    window: Duration = Field(default=300.0, description="window of threshold mode")
    severity: Level = Field(default="critical", description="severity in threshold mode")
    min_samples: int = Field(default=10, ge=1, description="runs needed in the long (or only) window")
    min_short_samples: int = Field(default=3, ge=1, description="runs needed in the short window")
    traffic: TrafficGuard = TrafficGuard()
    keep_firing_for: Duration = 300.0

    @model_validator(mode="before")
    @classmethod
    def _threshold_implies_mode(cls, data: object) -> object:
        if isinstance(data, dict) and "threshold" in data and "mode" not in data:
            return {**data, "mode": "threshold"}
        return data

    @field_validator("windows")
    @classmethod
    def _some_windows(cls, value: tuple[BurnRateWindow, ...]) -> tuple[BurnRateWindow, ...]:
        if not value:
            raise ValueError("expected at least one burn-rate window")
        return value


class QuotaRule(_Rule):
    """Warn at ``warning``, critical at ``critical``; a warning clears below ``clear``, a critical below
    ``warning`` (hysteresis). Critical inhibits the warning of the same quota."""

    warning: float = Field(default=0.80, gt=0)
    critical: float = Field(default=0.95, gt=0)
    clear: float = Field(default=0.75, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> QuotaRule:
        if not self.clear <= self.warning <= self.critical:
            raise ValueError("expected clear <= warning <= critical")
        return self


class ProbeDownRule(_Rule):
    consecutive_failures: int = Field(default=3, ge=1)
    auth_immediately: bool = Field(default=True, description="401/403 fires at once: credentials don't heal")
    keep_firing_for: Duration = 60.0


class LatencyRule(_Rule):
    """p95 of run durations over ``window`` above ``threshold`` (default: the check's expect.max_latency)."""

    threshold: Duration | None = None
    window: Duration = 300.0
    quantile: float = Field(default=0.95, gt=0, lt=1)
    min_samples: int = Field(default=5, ge=1)
    severity: Level = "warning"
    for_: Duration = Field(default=300.0, alias="for")
    keep_firing_for: Duration = 300.0


class TlsExpiryRule(_Rule):
    days: float = Field(default=14.0, gt=0, description="warn when a certificate expires within this many days")
    critical_days: float = Field(default=3.0, ge=0)


class WebhookSilenceRule(_Rule):
    """Reserved for the webhook reader: the rule module ``alerts/rules/webhook_silence.py`` reads it."""

    severity: Level = "warning"


class TrafficSilenceRule(_Rule):
    """The ``traffic_silence`` alert; its threshold is the integration's ``traffic.max_silence``."""

    severity: Level = "warning"


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceWindow(_Strict):
    """Either a one-off window (``start`` and ``end``, with UTC offsets) or a recurring one: on ``days``
    (default every day) from ``at`` (local time of ``timezone``) for ``duration``."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    days: tuple[Weekday, ...] | None = None
    at: dt.time | None = None
    duration: Duration | None = None
    timezone: TimeZoneName = "UTC"

    @model_validator(mode="after")
    def _one_shape(self) -> MaintenanceWindow:
        one_off = self.start is not None or self.end is not None
        weekly = self.days is not None or self.at is not None or self.duration is not None
        if one_off == weekly:
            raise ValueError("expected either start and end, or at and duration (with optional days, timezone)")
        if one_off:
            if self.start is None or self.end is None:
                raise ValueError("a one-off window needs both start and end")
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start and end need a UTC offset, e.g. 2026-12-01T02:00:00Z")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        elif self.at is None or not self.duration:
            raise ValueError("a recurring window needs at (HH:MM) and a positive duration")
        return self

    def active(self, now: float) -> bool:
        if self.start is not None and self.end is not None:
            return self.start.timestamp() <= now < self.end.timestamp()
        assert self.at is not None and self.duration is not None
        days = self.days or _WEEKDAYS
        zone = zoneinfo.ZoneInfo(self.timezone)
        local = dt.datetime.fromtimestamp(now, zone)
        # A window that started on an earlier day may still be running: look back as far as it lasts.
        for back in range(int(self.duration // 86400) + 2):
            day = local.date() - dt.timedelta(days=back)
            if _WEEKDAYS[day.weekday()] not in days:
                continue
            start = dt.datetime.combine(day, self.at, zone).timestamp()
            if start <= now < start + self.duration:
                return True
        return False


class AlertRulesConfig(_Strict):
    error_rate: ErrorRateRule = ErrorRateRule()
    quota: QuotaRule = QuotaRule()
    probe_down: ProbeDownRule = ProbeDownRule()
    latency: LatencyRule = LatencyRule()
    tls_expiry: TlsExpiryRule = TlsExpiryRule()
    webhook_silence: WebhookSilenceRule = WebhookSilenceRule()
    traffic_silence: TrafficSilenceRule = TrafficSilenceRule()
    maintenance: tuple[MaintenanceWindow, ...] = Field(
        default=(), description="no notifications while one of these is active (alerts are still evaluated)"
    )

    def in_maintenance(self, now: float) -> bool:
        return any(window.active(now) for window in self.maintenance)


class FlappingConfig(_Strict):
    """Nagios-style: too many state changes within ``window`` → one "flapping" message, then quiet until
    the changes in the window fall to ``settle_transitions`` or fewer."""

    window: Duration = 3600.0
    max_transitions: int = Field(default=6, ge=2)
    settle_transitions: int = Field(default=2, ge=0)

    @model_validator(mode="after")
    def _settle_below(self) -> FlappingConfig:
        if self.settle_transitions >= self.max_transitions:
            raise ValueError("settle_transitions must be below max_transitions")
        return self


class SelfHealthConfig(_Strict):
    """Alerts about the monitor itself, sent through whatever notifier still works."""

    enabled: bool = True
    redis_down_for: Duration = 60.0
    notifier_failing_for: Duration = 300.0
    scheduler_lag: Duration = Field(default=10.0, description="mean start delay above this is lagging")


class ConfigSilence(_Strict):
    """A silence written in the config file (runtime silences come from the CLI or /api/silences)."""

    integration: str = Field(default="*", min_length=1)
    alert: str = Field(default="*", min_length=1)
    check: str | None = None
    ends_at: dt.datetime
    comment: str = ""

    @field_validator("ends_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("ends_at needs a UTC offset, e.g. 2026-12-01T02:00:00Z")
        return value


class AlertingConfig(_Strict):
    slack: SlackConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    console: ConsoleConfig | None = None
    group_by: tuple[Literal["integration", "alert", "check", "severity"], ...] = ("integration",)
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 14400.0
    send_resolved: bool = True
    silences: tuple[ConfigSilence, ...] = ()
    key_prefix: str = Field(default=DEFAULT_KEY_PREFIX, min_length=1, description="Redis key prefix of alert state")
    flapping: FlappingConfig = FlappingConfig()
    self_health: SelfHealthConfig = SelfHealthConfig()
    notes_max_chars: int = Field(default=1500, ge=0, description="how much of an integration's notes file to quote")
