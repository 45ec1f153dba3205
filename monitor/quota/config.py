"""Config of the ``quotas`` entries of an integration (``source: redis`` or ``source: headers``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from monitor.durations import Duration

RedisFormat = Literal["limits", "counter", "rate_limiter_flexible", "sliding_log", "token_bucket", "gcra"]


class RedisQuotaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    source: Literal["redis"]
    format: RedisFormat
    match: str = Field(min_length=1, description="SCAN MATCH pattern (never KEYS)")
    limit: float | None = Field(default=None, gt=0, description="limit where the format does not encode it")
    window: Duration | None = None
    interval: Duration = 15.0


class HeadersQuotaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    source: Literal["headers"]
    check: str = Field(description="name of the check of this integration whose responses carry the headers")


QuotaConfig = Annotated[RedisQuotaConfig | HeadersQuotaConfig, Field(discriminator="source")]
