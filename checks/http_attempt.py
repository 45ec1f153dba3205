"""The attempts of one HTTP check run: send the planned request, read the response within the run's
deadline and the body cap, and classify what happened (``integration_kit.classify``).

An ``HttpRun`` lives for one run: the retry runner calls ``attempt(deadline)`` once per attempt, and the
run keeps what the result needs beyond the last attempt (the final response's headers and body, the
earliest certificate expiry seen, the redacted request). Every kind that sends HTTP requests runs its
requests through it: ``http`` as is, ``graphql`` with its own reading of the body (``inspect_body``),
``flow`` once per step; the auth headers of an attempt come in as ``extra_headers``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol

import aiohttp
from yarl import URL

from checks.base import ProbeContext
from checks.http_config import Expectation, RequestPlan
from checks.json_assertions import check_json
from checks.timing import AttemptTiming, current_attempt
from integration_kit.calls import is_json_type
from integration_kit.classify import (
    Failure,
    body_read_failure,
    body_too_large,
    classify_exception,
    classify_status,
    empty_body,
    parse_json,
    too_slow,
)
from integration_kit.deadlines import DeadlineScope
from integration_kit.errors import ErrorClass
from integration_kit.redact import HARMLESS_HEADERS
from integration_kit.results import RequestSummary
from integration_kit.retry import rate_limit_wait

BodyInspector = Callable[[int, bytes], "Failure | None"]  # (status, body) → what is wrong with it, if anything

EXCERPT_BYTES = 2048  # response excerpt kept for failures
_REQUEST_BODY_EXCERPT = 512
# Excerpts are redacted before they are cut, with this much beyond the cut, so a secret that straddles
# the cut is still recognised whole and its first half never shown.
REDACT_OVERLAP = 256
# An error response's excerpt is nice to have, not worth a run: don't wait long for a slow one.
_EXCERPT_WAIT = 1.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(slots=True)
class _Body:
    """What an attempt has read of its response so far (a deadline may interrupt it anywhere)."""

    status: int | None = None
    status_failed: bool = False
    reading: bool = False  # the body is being read (a body refused for its declared length never is)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False

    @property
    def bytes_read(self) -> int | None:
        return self.size if self.reading else None


@dataclass(slots=True)
class Attempt:
    """What one attempt saw; ``excerpt`` is raw (not yet redacted), up to EXCERPT_BYTES + REDACT_OVERLAP.
    (A success is made with the first fields positional: keywords for all cost ~2 k instructions more.)"""

    error_class: ErrorClass | None
    detail: str
    duration: float
    timing: AttemptTiming
    status: int | None = None
    retry_after: float | None = None
    excerpt: bytes | None = None
    body_bytes: int | None = None


class CallConfig(Protocol):
    """What a run needs of the request's config (``HttpCallFields``, ``GraphqlCallFields``, a flow step)."""

    @property
    def method(self) -> str: ...
    @property
    def follow_redirects(self) -> bool: ...
    @property
    def max_redirects(self) -> int: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def expect(self) -> Expectation: ...


class HttpRun:
    """State of one run across its attempts: what the last response said, the earliest cert expiry."""

    __slots__ = ("body", "check", "deadlines", "extra_headers", "headers", "inspect_body", "loop", "plan",
                 "redactor", "retry_on", "session", "tls_expiry")

    def __init__(
        self,
        check: CallConfig,
        ctx: ProbeContext,
        session: aiohttp.ClientSession,
        *,
        plan: RequestPlan,
        retry_on: frozenset[ErrorClass],
        inspect_body: BodyInspector | None = None,
    ) -> None:
        self.check = check
        self.plan = plan
        self.retry_on = retry_on  # the classes whose Retry-After is worth reading
        # None: this run's own ``_check_body``. Not kept as a bound method here: the run would hold itself in
        # a reference cycle, and only the cycle collector would free it (with the response's headers it
        # holds): four objects a probe, the bulk of what a young collection at 10,000 checks had to free.
        self.inspect_body = inspect_body
        self.redactor = ctx.redactor
        self.deadlines = ctx.deadlines
        self.session = session
        self.loop = ctx.deadlines.running_loop()
        self.headers: Mapping[str, str] | None = None  # of the latest response, for quota parsing
        self.body: bytes | None = None  # of the latest response read in full
        self.extra_headers: Mapping[str, str] = {}  # of the latest attempt (auth): shown redacted
        self.tls_expiry: float | None = None

    def attempt(
        self, deadline: float, extra_headers: Mapping[str, str] | None = None, *, timing: AttemptTiming | None = None
    ) -> Coroutine[Any, Any, Attempt]:
        """One attempt within ``deadline`` (a loop-clock value). The attempt's coroutine itself, not an
        ``async def`` around it: every wait of the request resumes each coroutine level above it."""
        return self._attempt(AttemptTiming() if timing is None else timing, deadline, extra_headers or {})

    async def _attempt(self, timing: AttemptTiming, deadline: float, extra_headers: Mapping[str, str]) -> Attempt:
        token = current_attempt.set(timing)  # the session's hooks time this attempt (checks.timing)
        started = perf_counter()
        self.extra_headers = extra_headers
        self.body = None
        try:
            check, plan = self.check, self.plan
            budget = deadline - self.loop.time()
            headers = {**plan.headers, **self.extra_headers} if self.extra_headers else plan.headers
            body = _Body()
            resp: aiohttp.ClientResponse | None = None
            try:
                # One deadline for the request and its body, on the probes' shared timer (an asyncio.timeout
                # costs ~35 k instructions, a scope ~8 k). What it interrupts is told by timing.stage and what
                # was read.
                with DeadlineScope(self.deadlines, deadline):
                    try:
                        resp = await self.session.request(
                            plan.method,
                            plan.url,
                            headers=headers,
                            data=plan.data,
                            allow_redirects=check.follow_redirects,
                            max_redirects=check.max_redirects + 1,  # aiohttp counts the final response too
                            ssl=plan.ssl,
                            timeout=plan.timeout,
                            middlewares=self._middlewares(headers),
                        )
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        return self._request_failure(exc, timing, started, budget)
                    headers_at = perf_counter()
                    timing.stage = "body"
                    self.headers = resp.headers
                    body.status = resp.status
                    if not check.expect.status_ok(body.status):
                        body.status_failed = True  # its excerpt is read below, with a shorter wait of its own
                    else:
                        failure = await self._read_body(resp, body, budget)
                        if failure is not None:
                            return self._failure(failure, timing, started, status=body.status, body=body.chunks,
                                                 size=body.bytes_read)
                        timing.transfer = perf_counter() - headers_at
            except TimeoutError as exc:  # the run's deadline, at whatever stage the attempt was
                if resp is None:
                    return self._request_failure(exc, timing, started, budget)
                failure = body_read_failure(exc, size=body.size, budget=budget)
                return self._failure(failure, timing, started, status=body.status, body=body.chunks,
                                     size=body.bytes_read)
            finally:
                if resp is not None and not body.status_failed:
                    if body.complete:
                        resp.release()
                    else:
                        resp.close()
            if body.status_failed:
                try:
                    return await self._status_failure(resp, timing, started, deadline)
                finally:
                    resp.close()

            duration = perf_counter() - started
            content = body.chunks[0] if len(body.chunks) == 1 else b"".join(body.chunks)
            self.body = content
            inspect = self.inspect_body
            failure = self._check_body(body.status, content) if inspect is None else inspect(body.status, content)
            if failure is None and check.expect.max_latency is not None:
                failure = too_slow(duration, check.expect.max_latency)
            if failure is not None:
                return self._failure(failure, timing, started, status=body.status, body=[content], size=body.size,
                                     duration=duration)
            return Attempt(None, "", duration, timing, body.status, body_bytes=body.size)
        finally:
            current_attempt.reset(token)
            if timing.cert_expiry is not None and (self.tls_expiry is None or timing.cert_expiry < self.tls_expiry):
                self.tls_expiry = timing.cert_expiry

    def _middlewares(self, headers: Mapping[str, str]) -> tuple[aiohttp.ClientMiddlewareType, ...]:
        """``same_origin_only`` for the configured and auth headers that are secrets, when a redirect could
        take them elsewhere (nothing to guard otherwise: aiohttp's middleware chain has a cost)."""
        if not headers or not self.check.follow_redirects:
            return ()
        secret = frozenset(k for k in headers if k.lower() not in HARMLESS_HEADERS)
        return (same_origin_only(self.plan.url, secret),) if secret else ()

    async def _read_body(self, resp: aiohttp.ClientResponse, body: _Body, budget: float) -> Failure | None:
        """The body into ``body``, up to the cap; what went wrong, if anything (the deadline excepted)."""
        cap = self.check.expect.max_body_bytes
        declared = None if self.plan.method == "HEAD" else resp.content_length
        if declared is not None and declared > cap:
            return body_too_large(cap, declared=declared)
        body.reading = True
        try:
            content = resp.content
            while chunk := await content.readany():
                body.size += len(chunk)
                body.chunks.append(chunk)
                if body.size > cap:
                    return body_too_large(cap)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # aiohttp's own (sock_read), not the deadline
            return body_read_failure(exc, size=body.size, budget=budget)
        body.complete = True
        return None

    def _request_failure(self, exc: BaseException, timing: AttemptTiming, started: float, budget: float) -> Attempt:
        error_class, detail = classify_exception(
            exc, stage=timing.stage, budget=budget, connect_timeout=self.check.connect_timeout,
            max_redirects=self.check.max_redirects,
        )
        return Attempt(error_class=error_class, detail=detail, duration=perf_counter() - started, timing=timing)

    def _check_body(self, status: int, body: bytes) -> Failure | None:
        expect = self.check.expect
        assertions = expect.compiled_json
        if expect.body_required or assertions:
            failure = empty_body(status, body, method=self.plan.method)
            if failure is not None:
                return failure
        if assertions:
            return check_json(body, assertions)
        # Without assertions, a body that says it is JSON must still be JSON (as the kit's client judges
        # it): a vendor's 200 with a broken document is the failure a check without expectations is for.
        if body and self.headers is not None and is_json_type(self.headers.get("Content-Type", "")):
            return parse_json(body)[1]
        return None

    async def _status_failure(
        self, resp: aiohttp.ClientResponse, timing: AttemptTiming, started: float, deadline: float
    ) -> Attempt:
        status = resp.status
        error_class, detail = classify_status(status, resp.reason, resp.headers)
        if status in _REDIRECTS and (location := resp.headers.get("Location")):
            detail += f" -> {self.redactor.url(location)}"
        retry_after = None
        if error_class in self.retry_on:
            retry_after = rate_limit_wait(resp.headers, now=time.time())
        excerpt = bytearray()
        try:
            with DeadlineScope(self.deadlines, min(deadline, self.loop.time() + _EXCERPT_WAIT)):
                want = EXCERPT_BYTES + REDACT_OVERLAP
                while len(excerpt) < want and (chunk := await resp.content.read(want - len(excerpt))):
                    excerpt += chunk
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # the status already says what went wrong; the excerpt is what we got
        attempt = self._failure((error_class, detail), timing, started, status=status, body=[bytes(excerpt)])
        attempt.retry_after = retry_after
        return attempt

    def _failure(
        self,
        failure: Failure,
        timing: AttemptTiming,
        started: float,
        *,
        status: int | None = None,
        body: list[bytes] | None = None,
        size: int | None = None,
        duration: float | None = None,
    ) -> Attempt:
        error_class, detail = failure
        return Attempt(
            error_class=error_class,
            detail=detail,
            duration=perf_counter() - started if duration is None else duration,
            timing=timing,
            status=status,
            excerpt=None if not body else _head(body, EXCERPT_BYTES + REDACT_OVERLAP),
            body_bytes=size,
        )

    def request_summary(self) -> RequestSummary:
        plan, redactor = self.plan, self.redactor
        body = None
        if plan.data is not None:
            text = plan.data[: _REQUEST_BODY_EXCERPT + REDACT_OVERLAP].decode("utf-8", errors="replace")
            body = redactor.text(text)[:_REQUEST_BODY_EXCERPT]
        return RequestSummary(
            method=plan.method,
            url=redactor.url(plan.url),
            headers=redactor.headers({**plan.headers, **self.extra_headers}),
            body_excerpt=body,
        )


def same_origin_only(origin: URL, names: frozenset[str]) -> aiohttp.ClientMiddlewareType:
    """A per-request middleware (it sees every hop of a redirect chain) that drops the ``names`` headers
    from every request once the chain has left ``origin`` (scheme, host, port): a vendor's redirect must
    not hand the check's credentials to whatever host it names. aiohttp itself drops only Authorization
    (and cookies); X-Api-Key and friends would follow. Once left, always left: a chain that comes back
    to the origin through another host does not get them back."""
    home = origin.origin()
    left = False

    async def middleware(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        nonlocal left
        left = left or request.url.origin() != home
        if left:
            for name in names:
                request.headers.popall(name, None)
        return await handler(request)

    return middleware


def _head(chunks: list[bytes], size: int) -> bytes:
    """The first ``size`` bytes of a chunked body, without joining a large body to cut it."""
    out = bytearray()
    for chunk in chunks:
        out += chunk[: size - len(out)]
        if len(out) >= size:
            break
    return bytes(out)
