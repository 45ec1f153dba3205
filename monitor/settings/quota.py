"""Config of the ``quotas`` entries of an integration (``source: redis`` or ``source: headers``).

A Redis quota names the ``format`` its counters are written in; the limit and window come from the key
where the format encodes them (``limits``) and from these fields otherwise:

| format | needs | optional |
|---|---|---|
| ``limits`` | nothing (limit and window are in the key) | |
| ``counter`` | ``limit`` | ``window`` (shown only) |
| ``rate_limiter_flexible`` | ``limit`` (the limiter's ``points``) | ``window`` (its ``duration``) |
| ``sliding_log`` | ``limit``, ``window`` | ``time_unit`` of the scores (default ``ms``, PyrateLimiter) |
| ``token_bucket`` | ``capacity``, ``rate`` (tokens per ``period``, default 1s) | ``layout`` and the rest below |
| ``gcra`` | ``variant`` (``redis_rate`` / ``redis_cell``), ``rate`` per ``period``, ``burst`` | |

token_bucket ``layout``: ``keys`` (default; ``<id>.tokens`` and ``<id>.timestamp`` as Spring Cloud
Gateway writes them, suffixes configurable) or ``hash`` (one hash, fields ``tokens``/``timestamp``
configurable); timestamps in ``time_unit`` (default ``s``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from integration_kit.durations import Duration
from integration_kit.limiter_formats import FormatName

RedisFormat = FormatName  # the formats integration_kit.limiter_formats reads

# Which of the format-specific fields each format requires and accepts; anything else set is an error,
# so a typo such as ``capacity`` on a ``counter`` quota is reported instead of silently ignored.
_FORMAT_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "limits": (frozenset(), frozenset()),
    "counter": (frozenset({"limit"}), frozenset({"limit", "window"})),
    "rate_limiter_flexible": (frozenset({"limit"}), frozenset({"limit", "window"})),
    "sliding_log": (frozenset({"limit", "window"}), frozenset({"limit", "window", "time_unit"})),
    "token_bucket": (
        frozenset({"capacity", "rate"}),
        frozenset(
            {"capacity", "rate", "period", "layout", "tokens_suffix", "timestamp_suffix", "tokens_field",
             "timestamp_field", "time_unit"}
        ),
    ),
    "gcra": (frozenset({"variant", "rate", "burst"}), frozenset({"variant", "rate", "period", "burst"})),
}
_SPECIFIC = frozenset().union(*(allowed for _, allowed in _FORMAT_FIELDS.values()))


class RedisQuotaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    source: Literal["redis"]
    format: RedisFormat
    match: str = Field(min_length=1, description="SCAN MATCH pattern (never KEYS)")
    interval: Duration = 15.0
    near_limit: float = Field(default=0.80, gt=0, description="a key above this usage ratio counts as near its limit")
    scan_count: int = Field(
        default=10_000, ge=10, le=100_000,
        description="COUNT hint of each SCAN call: how much of the keyspace one call walks (and holds Redis for)",
    )
    max_keys: int = Field(
        default=100_000, ge=1, le=10_000_000,
        description="key names remembered and read at most; names found beyond are counted, not read",
    )
    rescan_interval: Duration = Field(
        default=60.0,
        description="one SCAN pass over the keyspace per rescan_interval, a share at each read: a new key "
        "name is read at most about this long after it appears (known keys are read at every interval)",
    )

    # Format-specific (see the table in the module docstring).
    limit: float | None = Field(default=None, gt=0, description="limit where the format does not encode it")
    window: Duration | None = None
    time_unit: Literal["s", "ms"] | None = None
    capacity: float | None = Field(default=None, gt=0)
    rate: float | None = Field(default=None, gt=0, description="units per period")
    period: Duration = 1.0
    burst: int | None = Field(default=None, ge=0)
    variant: Literal["redis_rate", "redis_cell"] | None = None
    layout: Literal["keys", "hash"] = "keys"
    tokens_suffix: str = Field(default=".tokens", min_length=1)
    timestamp_suffix: str = Field(default=".timestamp", min_length=1)
    tokens_field: str = Field(default="tokens", min_length=1)
    timestamp_field: str = Field(default="timestamp", min_length=1)

    @model_validator(mode="after")
    def _format_fields(self) -> RedisQuotaConfig:
        required, allowed = _FORMAT_FIELDS[self.format]
        given = {f for f in self.model_fields_set if f in _SPECIFIC}
        missing = sorted(f for f in required if getattr(self, f) is None)
        if missing:
            raise ValueError(f"format {self.format!r} needs {', '.join(missing)}")
        extra = sorted(given - allowed)
        if extra:
            why = " (limits keys carry their own limit and window)" if self.format == "limits" else ""
            raise ValueError(f"format {self.format!r} does not use {', '.join(extra)}{why}")
        if self.window is not None and self.window <= 0:
            raise ValueError("window must be greater than 0")
        if self.period <= 0:
            raise ValueError("period must be greater than 0")
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.rescan_interval < self.interval:
            raise ValueError(
                f"rescan_interval ({self.rescan_interval:g}s) must be at least interval ({self.interval:g}s): "
                "each read walks a share of the keyspace, a whole pass at most"
            )
        return self


class HeadersQuotaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    source: Literal["headers"]
    check: str = Field(description="name of the check of this integration whose responses carry the headers")


QuotaConfig = Annotated[RedisQuotaConfig | HeadersQuotaConfig, Field(discriminator="source")]
