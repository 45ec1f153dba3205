"""What every probe kind shares: error classes, the result, the common config and the probe context.

A probe never raises because the target failed: it returns a ``CheckResult`` whose ``error_class`` says
which of the bounded classes of SPEC.md the failure belongs to.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.durations import Duration

if TYPE_CHECKING:
    import aiohttp

    from monitor.quota.model import QuotaObservation
    from monitor.redact import Redactor


class ErrorClass(enum.StrEnum):
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    HTTP_4XX = "http_4xx"
    UNEXPECTED_STATUS = "unexpected_status"
    EMPTY_BODY = "empty_body"
    MALFORMED_JSON = "malformed_json"
    MISSING_FIELD = "missing_field"
    NULL_FIELD = "null_field"
    ASSERTION_FAILED = "assertion_failed"
    BODY_TOO_LARGE = "body_too_large"
    TOO_SLOW = "too_slow"


RETRYABLE_BY_DEFAULT: frozenset[ErrorClass] = frozenset(
    {
        ErrorClass.DNS,
        ErrorClass.CONNECT,
        ErrorClass.TIMEOUT,
        ErrorClass.DISCONNECTED,
        ErrorClass.HTTP_5XX,
        ErrorClass.RATE_LIMITED,
    }
)

PHASES: tuple[str, ...] = ("dns", "connect", "tls", "ttfb", "transfer")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSummary:
    """The request that produced a result, secrets already redacted."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body_excerpt: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """The outcome of one scheduled run of one check (all attempts included)."""

    integration: str
    check: str
    kind: str
    ok: bool
    error_class: ErrorClass | None
    detail: str  # short human text, e.g. "missing_field: $.data.id"; "" on success
    started_at: float  # epoch seconds, start of the first attempt
    duration: float  # seconds, final attempt
    total_duration: float  # seconds, all attempts and backoff
    attempts: int = 1
    attempt_classes: tuple[ErrorClass | None, ...] = ()  # class of each attempt, None = success
    status_code: int | None = None
    phases: Mapping[str, float] = field(default_factory=dict)  # keys from PHASES
    tls_expiry: float | None = None  # epoch seconds of the earliest certificate expiry seen
    request: RequestSummary | None = None  # kept for failures (redacted)
    response_excerpt: str | None = None  # bounded, redacted
    quota: tuple[QuotaObservation, ...] = ()  # parsed from rate-limit response headers
    body_bytes: int | None = None  # response body bytes read by the final attempt (reading stops at the cap)

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeContext:
    """What the daemon hands every probe: shared client session and the redactor for secrets."""

    integration: str
    redactor: Redactor
    session: aiohttp.ClientSession | None = None  # None: the probe makes its own
    extra: Mapping[str, Any] = field(default_factory=dict)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=1, ge=1, le=20, description="total attempts, first included")
    backoff: Duration = Field(default=0.5, description="base of the exponential backoff (full jitter)")
    max_backoff: Duration = 8.0
    retry_on: frozenset[ErrorClass] | None = Field(
        default=None, description="error classes to retry; default: the retryable classes of SPEC.md"
    )

    @property
    def retryable(self) -> frozenset[ErrorClass]:
        return RETRYABLE_BY_DEFAULT if self.retry_on is None else self.retry_on


class CheckConfigBase(BaseModel):
    """Fields every probe kind has. Each kind subclasses this with ``kind: Literal["<kind>"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    interval: Duration = 30.0
    timeout: Duration = Field(default=10.0, description="total deadline of one run, retries included")
    retry: RetryPolicy = RetryPolicy()
    enabled: bool = True

    @model_validator(mode="after")
    def _timeout_positive(self) -> CheckConfigBase:
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        return self
