"""Config of an integration's ``traffic`` section: where its services' kit writes the real-traffic
counters (README, "The integration kit"). Its presence turns the monitor's traffic reader on."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from alerts.webhook_config import ActiveSchedule
from integration_kit.durations import Duration
from integration_kit.traffic import DEFAULT_PREFIX


class TrafficConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_prefix: str = Field(default=DEFAULT_PREFIX, min_length=1, description="the services' key prefix")
    max_silence: Duration | None = Field(
        default=None, gt=0, description="alert (traffic_silence) when the services recorded no call for this long"
    )
    schedule: ActiveSchedule | None = Field(default=None, description="silence counts only inside this window")
