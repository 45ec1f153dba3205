"""What a probe saw: the result of one check run and the request behind it; and quota readings.

Plain frozen dataclasses, so alert rules, the metrics recorder and integration services share them
without sharing anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from integration_kit.errors import ErrorClass

# The timing phases of a run (a metric label: a fixed set). ``token``: obtaining an OAuth2 access token
# (absent when it came from memory).
PHASES: tuple[str, ...] = ("dns", "connect", "tls", "ttfb", "transfer", "token")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSummary:
    """The request that produced a result, secrets already redacted."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body_excerpt: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """One step of a multi-step check (a flow): what it did. ``skipped``: a cleanup step whose references
    named a step that never ran (nothing to clean up). Details and phases as in ``CheckResult``."""

    name: str
    cleanup: bool = False
    ok: bool
    skipped: bool = False
    error_class: ErrorClass | None = None
    detail: str = ""
    status_code: int | None = None
    duration: float = 0.0  # seconds, all attempts of the step
    attempts: int = 0
    phases: Mapping[str, float] = field(default_factory=dict)


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
    # The final response's rate-limit fields as (lower-cased name, value), bounded: what the probe saw, for
    # the quota side to parse (integration_kit.ratelimit_headers: rate_limit_fields, observed_quota).
    rate_limit_headers: tuple[tuple[str, str], ...] = ()
    # Rate-limit state the final response reported in its body (a GraphQL API's cost / rateLimit objects) as
    # (field path, compact JSON), bounded; parsed on the quota side too (integration_kit.ratelimit_body).
    rate_limit_body: tuple[tuple[str, str], ...] = ()
    body_bytes: int | None = None  # response body bytes read by the final attempt (reading stops at the cap)
    steps: tuple[StepResult, ...] = ()  # a flow's steps, in the order they ran (cleanup last)

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


class CheckResultDraft:
    """A ``CheckResult`` filled in field by field, then frozen in place: the probe's hot path, one per run.

    ``CheckResult(...)`` costs ~40 k instructions: twenty keyword arguments matched to parameters, then
    every field set through ``object.__setattr__`` to get past the frozen class's own ``__setattr__``. A
    draft's fields are plain slot stores (~5 k in all), and ``freeze`` turns the draft into a
    ``CheckResult`` by giving it that class: the two have the same slots, so the object *is* a
    ``CheckResult`` from then on (frozen, equal to and printed as one built by the constructor, replaceable
    and picklable like one). There are no defaults: set every field before ``freeze``
    (tests/test_result_draft.py compares drafts with the constructor)."""

    __slots__ = CheckResult.__slots__

    integration: str
    check: str
    kind: str
    ok: bool
    error_class: ErrorClass | None
    detail: str
    started_at: float
    duration: float
    total_duration: float
    attempts: int
    attempt_classes: tuple[ErrorClass | None, ...]
    status_code: int | None
    phases: Mapping[str, float]
    tls_expiry: float | None
    request: RequestSummary | None
    response_excerpt: str | None
    rate_limit_headers: tuple[tuple[str, str], ...]
    rate_limit_body: tuple[tuple[str, str], ...]
    body_bytes: int | None
    steps: tuple[StepResult, ...]

    def freeze(self) -> CheckResult:
        self.__class__ = CheckResult  # type: ignore[assignment]
        return self  # type: ignore[return-value]


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaObservation:
    policy: str  # name of the limit as the source names it ("default", "burst", "core", "api-usage"…)
    used: float | None  # may exceed limit: reported as is
    limit: float | None
    reset_seconds: float | None = None  # seconds until the window resets / the bucket is full again
    window_seconds: float | None = None
    observed_at: float = 0.0  # epoch seconds

    @property
    def ratio(self) -> float | None:
        if self.used is None or not self.limit:
            return None
        return self.used / self.limit
