"""Config of an integration's ``traffic`` section: where its services' kit writes the real-traffic
counters (README, "The integration kit"). Its presence turns the monitor's traffic reader on."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from integration_kit.traffic import DEFAULT_PREFIX


class TrafficConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_prefix: str = Field(default=DEFAULT_PREFIX, min_length=1, description="the services' key prefix")
