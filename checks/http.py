"""HTTP probe: one request (with retries) against an integration's API, classified per SPEC.md.

``probe(check, ctx)`` never raises because the target failed: every outcome is a ``CheckResult`` with
exactly one error class and a short detail. Everything a run needs that can be derived from the config
(URL with query, plain headers, encoded body, compiled JSON paths, SSL context, client timeout) is
computed once per config object and cached, so the hot path only sends, reads and compares.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from time import perf_counter
from typing import Any, Literal

import aiohttp
import jsonpath_rfc9535
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from checks.base import CheckConfigBase, ProbeContext
from checks.json_assertions import JsonAssertion, JsonType, check_json, compile_path
from checks.retry import parse_retry_after, run_with_retries
from checks.timing import AttemptTiming, current_attempt, ssl_context, trace_config
from integration_kit.durations import Duration
from integration_kit.errors import ErrorClass
from integration_kit.results import CheckResult, RequestSummary
from monitor.quota.headers import parse_rate_limit_headers

__all__ = ["Expectation", "HttpCheckConfig", "JsonAssertion", "JsonType", "make_session", "probe"]

_STATUS_RANGE = re.compile(r"^([1-5])xx$|^(\d{3})-(\d{3})$")


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: tuple[tuple[int, int], ...] = Field(
        default=((200, 299),), description="codes (200), ranges ('200-299') or classes ('2xx')"
    )
    json_: dict[str, JsonAssertion] = Field(default_factory=dict, alias="json")
    body_required: bool = Field(default=True, description="a 2xx with an empty body is `empty_body`")
    max_latency: Duration | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        items = value if isinstance(value, list | tuple) else [value]
        out: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
                out.append((item, item))
                continue
            match = _STATUS_RANGE.match(str(item).strip()) if isinstance(item, str) else None
            if match and match.group(1):
                base = int(match.group(1)) * 100
                out.append((base, base + 99))
            elif match and 100 <= int(match.group(2)) <= int(match.group(3)) <= 599:
                out.append((int(match.group(2)), int(match.group(3))))
            else:
                raise ValueError(
                    f"expected HTTP status codes (200), ranges ('200-299') or classes ('2xx'), got {item!r}"
                )
        return tuple(out)

    @field_validator("json_", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        for path in value if isinstance(value, dict) else ():
            try:
                compile_path(path)  # cached: the run reuses this compiled query
            except jsonpath_rfc9535.JSONPathError as exc:
                raise ValueError(f"invalid JSON path {path!r}: {exc}") from None
        return value

    def status_ok(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.status)

    @cached_property
    def compiled_json(self) -> tuple[tuple[str, jsonpath_rfc9535.JSONPathQuery, JsonAssertion], ...]:
        return tuple((path, compile_path(path), assertion) for path, assertion in self.json_.items())


class HttpCheckConfig(CheckConfigBase):
    kind: Literal["http"]
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    query: dict[str, SecretStr] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    connect_timeout: Duration = 5.0
    follow_redirects: bool = True
    max_redirects: int = Field(default=10, ge=0)
    verify_tls: bool = True
    expect: Expectation = Expectation()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"expected an http(s) URL, got {value!r}: {exc}") from None
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError(f"expected an absolute http:// or https:// URL with a host, got {value!r}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_body(self) -> HttpCheckConfig:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        return self

    @cached_property
    def request_plan(self) -> RequestPlan:
        """What every run sends, derived once. Holds secrets in the clear: never shown anywhere."""
        headers = {k: v.get_secret_value() for k, v in self.headers.items()}
        data: bytes | None = None
        if self.json_body is not None:
            data = json.dumps(self.json_body, separators=(",", ":")).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif self.body is not None:
            data = self.body.encode()
        url = URL(self.url)
        if self.query:
            url = url.update_query({k: v.get_secret_value() for k, v in self.query.items()})
        return RequestPlan(
            method=self.method,
            url=url,
            headers=headers,
            data=data,
            ssl=ssl_context(self.verify_tls),
            timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout),
        )

    def secret_values(self) -> list[str]:
        """Header and query values are secret unless the header is one that never carries credentials:
        vendors put API keys in headers of every name (X-Api-Key, Stripe-Account, X-Shopify-Access-Token…),
        so the list of harmless ones is the short, closed one."""
        headers = [v for k, v in self.headers.items() if k.lower() not in _HARMLESS_HEADERS]
        return [v.get_secret_value() for v in (*headers, *self.query.values())]


_HARMLESS_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "cache-control", "content-type", "user-agent", "connection"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestPlan:
    method: str
    url: URL
    headers: Mapping[str, str]
    data: bytes | None
    ssl: ssl.SSLContext
    timeout: aiohttp.ClientTimeout


USER_AGENT = "integration-monitor"
EXCERPT_BYTES = 2048  # response excerpt kept for failures
_REQUEST_BODY_EXCERPT = 512
# Excerpts are redacted before they are cut, with this much beyond the cut, so a secret that straddles
# the cut is still recognised whole and its first half never shown.
_REDACT_OVERLAP = 256
# An error response's excerpt is nice to have, not worth a run: don't wait long for a slow one.
_EXCERPT_WAIT = 1.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def make_session(*, limit: int) -> aiohttp.ClientSession:
    """The client session for probes; call it inside the running loop and close it on shutdown.

    A synthetic probe measures what a real client pays, so every run gets a fresh connection
    (force_close) and a fresh DNS resolution (no DNS cache); cookies are never kept between runs.
    ``limit`` (0 = none) should not be below the scheduler's concurrency: a probe waiting for a free
    slot would spend its connect timeout on our own queue.
    """
    ssl_context(True), ssl_context(False)  # load the CA store now, not inside the first probe
    connector = aiohttp.TCPConnector(limit=limit, force_close=True, use_dns_cache=False)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),  # each probe sets its own deadline
        trace_configs=[trace_config()],
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
    )
    # aiohttp silently resends an idempotent request once when the server closes the connection
    # before responding (meant for stale keep-alive connections, which force_close rules out): a
    # probe must see and count that failure instead.
    session._retry_connection = False
    return session


@dataclass(slots=True, kw_only=True)
class _Attempt:
    error_class: ErrorClass | None
    detail: str
    duration: float
    timing: AttemptTiming
    status: int | None = None
    retry_after: float | None = None
    excerpt: bytes | None = None
    body_bytes: int | None = None


class _Run:
    """State of one run across its attempts: what the last response said, the earliest cert expiry."""

    __slots__ = ("check", "headers", "loop", "plan", "redactor", "session", "tls_expiry")

    def __init__(self, check: HttpCheckConfig, ctx: ProbeContext, session: aiohttp.ClientSession) -> None:
        self.check = check
        self.plan = check.request_plan
        self.redactor = ctx.redactor
        self.session = session
        self.loop = asyncio.get_running_loop()
        self.headers: Mapping[str, str] | None = None  # of the latest response, for quota parsing
        self.tls_expiry: float | None = None

    async def attempt(self, deadline: float) -> _Attempt:
        timing = AttemptTiming()
        token = current_attempt.set(timing)
        started = perf_counter()
        try:
            outcome = await self._attempt(timing, deadline, started)
        finally:
            current_attempt.reset(token)
        if timing.cert_expiry is not None and (self.tls_expiry is None or timing.cert_expiry < self.tls_expiry):
            self.tls_expiry = timing.cert_expiry
        return outcome

    async def _attempt(self, timing: AttemptTiming, deadline: float, started: float) -> _Attempt:
        check, plan = self.check, self.plan
        budget = deadline - self.loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                resp = await self.session.request(
                    plan.method,
                    plan.url,
                    headers=plan.headers,
                    data=plan.data,
                    allow_redirects=check.follow_redirects,
                    max_redirects=check.max_redirects + 1,  # aiohttp counts the final response too
                    ssl=plan.ssl,
                    timeout=plan.timeout,
                    trace_request_ctx=timing,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error_class, detail = _classify_exception(exc, timing, check, budget)
            return _Attempt(error_class=error_class, detail=detail, duration=perf_counter() - started, timing=timing)

        fully_read = False
        try:
            headers_at = perf_counter()
            timing.stage = "body"
            self.headers = resp.headers
            status = resp.status
            if not check.expect.status_ok(status):
                return await self._status_failure(resp, timing, started, deadline)
            declared = None if plan.method == "HEAD" else resp.content_length
            if declared is not None and declared > check.expect.max_body_bytes:
                return self._failure(
                    ErrorClass.BODY_TOO_LARGE,
                    f"body_too_large: Content-Length {declared} over the "
                    f"{check.expect.max_body_bytes}-byte cap",
                    timing, started, status=status,
                )
            cap = check.expect.max_body_bytes
            chunks: list[bytes] = []
            size = 0
            try:
                async with asyncio.timeout_at(deadline):
                    content = resp.content
                    while chunk := await content.readany():
                        size += len(chunk)
                        chunks.append(chunk)
                        if size > cap:
                            break
            except TimeoutError:
                return self._failure(
                    ErrorClass.TIMEOUT,
                    f"timeout: body not complete within {_secs(budget)} ({size} bytes read)",
                    timing, started, status=status, body=chunks, size=size,
                )
            except (aiohttp.ClientError, OSError) as exc:
                return self._failure(
                    ErrorClass.DISCONNECTED,
                    f"disconnected: connection closed after {size} body bytes ({_reason(exc)})",
                    timing, started, status=status, body=chunks, size=size,
                )
            timing.transfer = perf_counter() - headers_at
            if size > cap:
                return self._failure(
                    ErrorClass.BODY_TOO_LARGE,
                    f"body_too_large: over the {cap}-byte cap, stopped reading",
                    timing, started, status=status, body=chunks, size=size,
                )
            fully_read = True
        finally:
            if fully_read:
                resp.release()
            else:
                resp.close()

        duration = perf_counter() - started
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        failure = _check_body(check, status, body)
        if failure is None and check.expect.max_latency is not None and duration > check.expect.max_latency:
            failure = ErrorClass.TOO_SLOW, f"too_slow: {_secs(duration)}, max {_secs(check.expect.max_latency)}"
        if failure is not None:
            return self._failure(*failure, timing, started, status=status, body=[body], size=size, duration=duration)
        return _Attempt(error_class=None, detail="", duration=duration, timing=timing, status=status, body_bytes=size)

    async def _status_failure(
        self, resp: aiohttp.ClientResponse, timing: AttemptTiming, started: float, deadline: float
    ) -> _Attempt:
        status = resp.status
        error_class = _status_class(status)
        detail = f"{error_class}: {status} {resp.reason or ''}".rstrip()
        if status in _REDIRECTS and (location := resp.headers.get("Location")):
            detail += f" -> {self.redactor.url(location)}"
        retry_after = None
        if error_class in self.check.retry.retryable:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), now=time.time())
        excerpt = bytearray()
        try:
            async with asyncio.timeout_at(min(deadline, self.loop.time() + _EXCERPT_WAIT)):
                want = EXCERPT_BYTES + _REDACT_OVERLAP
                while len(excerpt) < want and (chunk := await resp.content.read(want - len(excerpt))):
                    excerpt += chunk
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # the status already says what went wrong; the excerpt is what we got
        attempt = self._failure(error_class, detail, timing, started, status=status, body=[bytes(excerpt)])
        attempt.retry_after = retry_after
        return attempt

    def _failure(
        self,
        error_class: ErrorClass,
        detail: str,
        timing: AttemptTiming,
        started: float,
        *,
        status: int | None = None,
        body: list[bytes] | None = None,
        size: int | None = None,
        duration: float | None = None,
    ) -> _Attempt:
        return _Attempt(
            error_class=error_class,
            detail=detail,
            duration=perf_counter() - started if duration is None else duration,
            timing=timing,
            status=status,
            excerpt=None if not body else _head(body, EXCERPT_BYTES + _REDACT_OVERLAP),
            body_bytes=size,
        )

    def request_summary(self) -> RequestSummary:
        plan, redactor = self.plan, self.redactor
        body = None
        if plan.data is not None:
            text = plan.data[: _REQUEST_BODY_EXCERPT + _REDACT_OVERLAP].decode("utf-8", errors="replace")
            body = redactor.text(text)[:_REQUEST_BODY_EXCERPT]
        return RequestSummary(
            method=plan.method,
            url=redactor.url(plan.url),
            headers=redactor.headers(plan.headers),
            body_excerpt=body,
        )


async def probe(check: HttpCheckConfig, ctx: ProbeContext) -> CheckResult:
    """One scheduled run of an HTTP check: attempts with retries inside ``check.timeout``."""
    started_at = time.time()
    own_session = ctx.session is None
    session = make_session(limit=0) if ctx.session is None else ctx.session
    try:
        run = _Run(check, ctx, session)
        t0 = run.loop.time()
        outcome, classes = await run_with_retries(
            run.attempt, check.retry, deadline=t0 + check.timeout, clock=run.loop.time
        )
        total = run.loop.time() - t0
    finally:
        if own_session:
            await session.close()
    ok = outcome.error_class is None
    redactor = ctx.redactor
    quota = () if run.headers is None else tuple(parse_rate_limit_headers(run.headers, now=time.time()))
    return CheckResult(
        integration=ctx.integration,
        check=check.name,
        kind=check.kind,
        ok=ok,
        error_class=outcome.error_class,
        detail=redactor.text(outcome.detail),
        started_at=started_at,
        duration=outcome.duration,
        total_duration=total,
        attempts=len(classes),
        attempt_classes=classes,
        status_code=outcome.status,
        phases=outcome.timing.phases(),
        tls_expiry=run.tls_expiry,
        request=None if ok else run.request_summary(),
        response_excerpt=(
            None
            if ok or outcome.excerpt is None
            else redactor.text(outcome.excerpt.decode("utf-8", errors="replace"))[:EXCERPT_BYTES]
        ),
        quota=quota,
        body_bytes=outcome.body_bytes,
    )


def _status_class(status: int) -> ErrorClass:
    """Class of a status that ``expect.status`` does not accept."""
    if status in (401, 403):
        return ErrorClass.AUTH
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if 400 <= status < 500:
        return ErrorClass.HTTP_4XX
    if 500 <= status < 600:
        return ErrorClass.HTTP_5XX
    return ErrorClass.UNEXPECTED_STATUS


def _check_body(check: HttpCheckConfig, status: int, body: bytes) -> tuple[ErrorClass, str] | None:
    expect = check.expect
    assertions = expect.compiled_json
    if (
        (expect.body_required or assertions)
        and 200 <= status < 300
        and status not in (204, 205)
        and check.method != "HEAD"
        and (not body or body.isspace())
    ):
        return ErrorClass.EMPTY_BODY, f"empty_body: {status} with an empty body"
    if not assertions:
        return None
    return check_json(body, assertions)


def _classify_exception(
    exc: BaseException, timing: AttemptTiming, check: HttpCheckConfig, budget: float
) -> tuple[ErrorClass, str]:
    """Class and detail of an attempt that ended before the response headers were in."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ErrorClass.TIMEOUT, f"timeout: connect did not complete within {_secs(check.connect_timeout)}"
    if isinstance(exc, TimeoutError):  # the run's deadline
        if timing.stage == "connect":
            return ErrorClass.TIMEOUT, f"timeout: connect did not complete within {_secs(budget)} (deadline)"
        return ErrorClass.TIMEOUT, f"timeout: no response headers within {_secs(budget)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ErrorClass.DNS, f"dns: {exc.host} did not resolve ({_reason(exc)})"
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch | ssl.SSLError):
        return ErrorClass.TLS, f"tls: {_reason(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ErrorClass.CONNECT, f"connect: {exc.host}:{exc.port}: {_reason(exc)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ErrorClass.CONNECT, "connect: server closed the connection before responding"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return ErrorClass.UNEXPECTED_STATUS, f"unexpected_status: more than {check.max_redirects} redirects"
    if isinstance(exc, aiohttp.RedirectClientError | aiohttp.NonHttpUrlClientError):
        return ErrorClass.UNEXPECTED_STATUS, "unexpected_status: redirect to an invalid or non-HTTP URL"
    if isinstance(exc, aiohttp.ClientResponseError):  # the response could not be parsed as HTTP
        return ErrorClass.UNEXPECTED_STATUS, f"unexpected_status: invalid HTTP response ({exc.message})"
    return ErrorClass.CONNECT, f"connect: {_reason(exc)} before the response"


def _reason(exc: BaseException) -> str:
    """The most specific short reason in an aiohttp exception chain."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        return getattr(cert_error, "verify_message", None) or getattr(cert_error, "reason", None) or str(cert_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


def _head(chunks: list[bytes], size: int) -> bytes:
    """The first ``size`` bytes of a chunked body, without joining a large body to cut it."""
    out = bytearray()
    for chunk in chunks:
        out += chunk[: size - len(out)]
        if len(out) >= size:
            break
    return bytes(out)


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"
