"""What the asyncio and the blocking integration clients share: the settings of an integration's calls,
one attempt's record, and the end of a call — the outcome counted, the failure logged and raised as a
``CallError`` with the request redacted."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from integration_kit.calls import DEFAULT_EXPECT, CallError, Expect, excerpt
from integration_kit.errors import ErrorClass
from integration_kit.limiter import LimiterTimeout
from integration_kit.recorder import Recorder
from integration_kit.redact import Redactor, redactor_of, request_secrets
from integration_kit.results import RequestSummary
from integration_kit.retry import RetryPolicy

log = logging.getLogger("integration_kit.client")

DEFAULT_RETRY = RetryPolicy(attempts=3, backoff=0.5, max_backoff=8.0)
EXCERPT_READ = 4096  # bytes of a failing response read for the error's excerpt


@dataclass(slots=True, kw_only=True)
class Attempt:
    """One attempt of a call, classified (the retry runner reads ``error_class`` and ``retry_after``)."""

    error_class: ErrorClass | None
    detail: str = ""
    status: int | None = None
    retry_after: float | None = None
    duration: float = 0.0
    body: bytes | None = None  # a failing response's first bytes, for the excerpt (raw)
    throttle_wait: float = 0.0
    response: Any = None  # the adapter's response object of a successful attempt


def limiter_attempt(exc: LimiterTimeout, throttle_wait: float) -> Attempt:
    """The shared limiter had no slot before the deadline: the call was not sent."""
    return Attempt(error_class=ErrorClass.RATE_LIMITED, detail=str(exc), throttle_wait=throttle_wait)


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationStats:
    """How the kit is doing, for the service's own metrics: calls finished and failed, and what Redis
    trouble cost (calls let through without the limiter, counts not written, flushes that failed)."""

    calls: int
    failed: int
    limiter_bypassed: int
    lost: int
    failed_flushes: int


class IntegrationBase:
    """``name`` is the integration (the ``integration`` label on the monitor's side). ``retry``: the
    policy for each call (the probes' ``RetryPolicy``); ``timeout``: the deadline of a whole call,
    limiter waits and retries included; ``expect``: what every answer must be, unless a call says
    otherwise; ``secrets``: values to mask wherever the request or response is shown (sensitive header
    names and URL credentials are masked anyway)."""

    recorder: Recorder | None = None  # the traffic counters, when the subclass was given a Redis

    def __init__(
        self,
        name: str,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 30.0,
        expect: Expect = DEFAULT_EXPECT,
        secrets: Iterable[str] = (),
        shared: bool = False,
        rate_limited: bool = False,
    ) -> None:
        """``shared``: a Redis client was given; ``rate_limited``: a rate limit was (it needs Redis)."""
        if rate_limited and not shared:
            raise ValueError("a rate_limit is shared through Redis: give redis= too")
        if not name or timeout <= 0:
            raise ValueError(f"an integration needs a name and a timeout above 0, got {name!r}/{timeout!r}")
        self.name = name
        self.retry = retry
        self.timeout = timeout
        self.default_expect = expect
        self.redactor = Redactor(secrets)
        self._calls = 0
        self._failed = 0

    def request_summary(self, method: str, url: Any, headers: Mapping[str, str]) -> RequestSummary:
        r = self.redactor
        return RequestSummary(method=method, url=r.url(str(url)), headers=r.headers(dict(headers)))

    def error(self, method: str, url: Any, headers: Mapping[str, str], last: Attempt, attempts: int) -> CallError:
        """The typed error of a failed call, logged once (redacted) as it is raised."""
        assert last.error_class is not None
        carried = redactor_of(request_secrets(url, headers))  # echoed by the vendor, listed or not

        def redact(text: str) -> str:
            return carried.text(self.redactor.text(text))

        err = CallError(
            integration=self.name, error_class=last.error_class, detail=redact(last.detail),
            request=self.request_summary(method, url, headers), status=last.status, attempts=attempts,
            response_excerpt=excerpt(last.body, redact),
            retryable=last.error_class in self.retry.retry_on,
        )
        log.warning("%s", err)
        return err

    def finish(
        self, method: str, url: Any, headers: Mapping[str, str], last: Attempt, attempts: int, throttled: float,
        *, bypassed: bool = False,
    ) -> Any:
        """The end of a call: counted (and recorded, with a recorder), then the answer — the last
        attempt's response — or the ``CallError``."""
        self._calls += 1
        if last.error_class is not None:
            self._failed += 1
        if self.recorder is not None:  # counted without a CallOutcome: one less object per call
            self.recorder.count(last.error_class, last.status, last.duration, attempts, throttled, bypassed)
        if last.error_class is None:
            return last.response
        raise self.error(method, url, headers, last, attempts)

    def log_retry(self, method: str, url: Any, attempt: Attempt) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s %s: %s; retrying", self.name, method, self.redactor.url(str(url)),
                      self.redactor.text(attempt.detail))

    @property
    def stats(self) -> IntegrationStats:
        limiter = getattr(self, "limiter", None)
        rec = self.recorder.stats if self.recorder is not None else None
        return IntegrationStats(
            calls=self._calls, failed=self._failed, limiter_bypassed=limiter.bypassed if limiter is not None else 0,
            lost=rec.lost if rec is not None else 0, failed_flushes=rec.failed_flushes if rec is not None else 0,
        )
