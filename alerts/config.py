"""Config of alert rules (per integration) and of the ``alerting`` section (notifiers, timing)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from monitor.durations import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorRateRule(_Strict):
    threshold: float = Field(default=0.05, gt=0, le=1)
    window: Duration = 300.0
    min_samples: int = Field(default=10, ge=1)


class QuotaRule(_Strict):
    warning: float = Field(default=0.80, gt=0)
    critical: float = Field(default=0.95, gt=0)
    clear: float = Field(default=0.75, gt=0)


class AlertRulesConfig(_Strict):
    error_rate: ErrorRateRule = ErrorRateRule()
    quota: QuotaRule = QuotaRule()


class SlackConfig(_Strict):
    token: SecretStr | None = None
    channel: str | None = None
    webhook_url: SecretStr | None = None
    base_url: str | None = Field(default=None, description="Slack Web API base URL (tests point it at loopback)")


class AlertingConfig(_Strict):
    slack: SlackConfig | None = None
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 14400.0
    send_resolved: bool = True
