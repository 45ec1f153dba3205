"""Config of an integration's ``webhooks`` section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from monitor.durations import Duration


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_silence: Duration | None = None
