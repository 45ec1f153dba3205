"""The integration kit for asyncio services: ``Integration``, and its aiohttp client middleware.

Every request through a session built with ``middlewares=(vendor.middleware,)`` waits for the shared
rate limiter, is classified exactly like a probe run (``integration_kit.classify``), is retried under
the probes' ``RetryPolicy`` (retryable classes only, full jitter, ``Retry-After`` honoured, never past
the call's deadline), is counted in Redis for the monitor, and — if it fails for good — raises a
``CallError`` carrying the class, a one-line detail and the redacted request::

    vendor = Integration("stripe", redis=redis, rate_limit=RateLimit(rate=100, per=1.0), secrets=[KEY])
    async with vendor, aiohttp.ClientSession(middlewares=(vendor.middleware,)) as http:
        async with http.get(url, middlewares=vendor.expect(required=("data.id",))) as resp:
            data = await resp.json()

Each hop of a followed redirect is a call of its own (aiohttp runs the middleware per hop). The
session's own ``ClientTimeout(total=…)`` still applies around everything: leave it unset or above the
kit's ``timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Collection, Iterable
from time import perf_counter
from typing import TYPE_CHECKING

import aiohttp

from integration_kit.calls import DEFAULT_EXPECT, Expect, body_failure
from integration_kit.classify import body_read_failure, classify_exception, classify_status
from integration_kit.deadlines import Deadlines, DeadlineScope
from integration_kit.integration_base import (
    DEFAULT_RETRY,
    EXCERPT_READ,
    Attempt,
    IntegrationBase,
    limiter_attempt,
)
from integration_kit.limiter import LimiterTimeout, RateLimit, RateLimiter
from integration_kit.recorder import TrafficRecorder
from integration_kit.retry import RetryPolicy, rate_limit_wait, run_with_retries
from integration_kit.traffic import DEFAULT_PREFIX, DEFAULT_TTL

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["Expect", "Integration", "RateLimit"]

_EXCERPT_WAIT = 1.0  # seconds an error response's excerpt may take


class Integration(IntegrationBase):
    """One vendor integration of an asyncio service.

    ``redis`` (a ``redis.asyncio.Redis``): where the shared limiter and the traffic counters live; None
    runs without both. ``rate_limit``: the shared limiter (needs ``redis``). ``record``: write the
    traffic counters (``key_prefix``, ``ttl``, every ``flush_interval`` seconds). See
    ``IntegrationBase`` for ``retry``, ``timeout``, ``expect`` and ``secrets``. Use ``async with`` (or
    ``start()`` / ``close()``) so the counters are flushed in the background and a last time at the end.
    """

    recorder: TrafficRecorder | None

    def __init__(
        self,
        name: str,
        *,
        redis: redis.asyncio.Redis | None = None,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 30.0,
        expect: Expect = DEFAULT_EXPECT,
        secrets: Iterable[str] = (),
        record: bool = True,
        key_prefix: str = DEFAULT_PREFIX,
        ttl: int = DEFAULT_TTL,
        flush_interval: float = 1.0,
    ) -> None:
        super().__init__(name, retry=retry, timeout=timeout, expect=expect, secrets=secrets,
                         shared=redis is not None, rate_limited=rate_limit is not None)
        self.limiter = None if rate_limit is None or redis is None else RateLimiter(redis, rate_limit, integration=name)
        self.recorder = (
            TrafficRecorder(redis, name, prefix=key_prefix, ttl=ttl, interval=flush_interval)
            if redis is not None and record else None
        )
        self._deadlines = Deadlines()  # of the attempts in flight (asyncio.timeout_at costs more)
        self.middleware = self._middleware_for(expect)

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()

    async def close(self) -> None:
        if self.recorder is not None:
            await self.recorder.close()

    async def __aenter__(self) -> Integration:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- the middleware -----------------------------------------------------------------------------

    def expect(
        self,
        *,
        status: Collection[int] | None = None,
        json: bool | None = None,
        required: Iterable[str] = (),
        not_null: Iterable[str] = (),
        body_required: bool | None = None,
    ) -> tuple[aiohttp.ClientMiddlewareType]:
        """Middlewares for one request with its own expectation (``session.get(url, middlewares=…)``;
        they replace the session's, and include everything the session's middleware does)."""
        expect = Expect(status=status, json=json, required=tuple(required), not_null=tuple(not_null),
                        body_required=body_required)
        return (self._middleware_for(expect),)

    def _middleware_for(self, expect: Expect) -> aiohttp.ClientMiddlewareType:
        # A partial, not a wrapping coroutine function: aiohttp's call of the middleware is then the
        # coroutine of _call itself, one frame less on every call.
        return functools.partial(self._call, expect=expect)

    async def _call(
        self, req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType, expect: Expect
    ) -> aiohttp.ClientResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        first = None
        if self.limiter is None:
            # The usual call succeeds at once: sent here, it is finished without the retry runner.
            first = await self._send(req, handler, expect, deadline, loop)
            if first.error_class is None:
                response: aiohttp.ClientResponse = self.finish(req.method, req.url, req.headers, first, 1, 0.0)
                return response
            self.log_retry(req.method, req.url, first)
        throttled, bypassed = 0.0, False

        async def attempt(deadline: float) -> Attempt:
            nonlocal throttled, bypassed
            if self.limiter is not None:
                try:
                    slot = await self.limiter.acquire(deadline=deadline)
                    throttled, bypassed = throttled + slot.waited, bypassed or slot.bypassed
                except LimiterTimeout as exc:
                    return limiter_attempt(exc, throttled)
            result = await self._send(req, handler, expect, deadline, loop)
            if result.error_class is not None:
                self.log_retry(req.method, req.url, result)
            return result

        last, classes = await run_with_retries(attempt, self.retry, deadline=deadline, clock=loop.time, first=first)
        response = self.finish(req.method, req.url, req.headers, last, len(classes), throttled, bypassed=bypassed)
        return response

    async def _send(
        self,
        req: aiohttp.ClientRequest,
        handler: aiohttp.ClientHandlerType,
        expect: Expect,
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> Attempt:
        started = perf_counter()
        resp: aiohttp.ClientResponse | None = None
        body = checks = None
        try:
            with DeadlineScope(self._deadlines, deadline):  # one deadline for the headers and the body
                resp = await handler(req)
                if expect.accepts(resp.status):
                    checks = expect.body_checks(resp.headers.get("Content-Type", ""))
                    if checks[0] or checks[1]:
                        body = await resp.read()  # kept by aiohttp: the caller's resp.json() reads it again
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # What the attempt had (only a failure's detail says it): the time left plus the time taken.
            budget = deadline - loop.time() + (perf_counter() - started)
            if resp is None:
                error_class, detail = classify_exception(exc, budget=budget)
                return Attempt(error_class=error_class, detail=detail, duration=perf_counter() - started)
            resp.close()
            error_class, detail = body_read_failure(exc, size=0, budget=budget)
            return Attempt(error_class=error_class, detail=detail, status=resp.status,
                           duration=perf_counter() - started)

        status = resp.status
        if checks is None:  # a status the call does not accept
            error_class, detail = classify_status(status, resp.reason, resp.headers)
            retry_after = None
            if error_class in self.retry.retry_on:
                retry_after = rate_limit_wait(resp.headers, now=time.time())
            excerpt = await _excerpt(resp, min(deadline, loop.time() + _EXCERPT_WAIT))
            return Attempt(error_class=error_class, detail=detail, status=status, retry_after=retry_after,
                           duration=perf_counter() - started, body=excerpt)
        if body is not None:
            failure = body_failure(expect, method=req.method, status=status, as_json=checks[0], body_required=checks[1],
                                   body=body)
            if failure is not None:
                resp.release()
                return Attempt(error_class=failure[0], detail=failure[1], status=status,
                               duration=perf_counter() - started, body=body[:EXCERPT_READ])
        return Attempt(error_class=None, status=status, duration=perf_counter() - started, response=resp)


async def _excerpt(resp: aiohttp.ClientResponse, until: float) -> bytes:
    """The first bytes of an error response (for the error's excerpt), then the connection is let go."""
    got = bytearray()
    try:
        async with asyncio.timeout_at(until):
            while len(got) < EXCERPT_READ and (chunk := await resp.content.read(EXCERPT_READ - len(got))):
                got += chunk
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # the status already says what went wrong
    resp.close()
    return bytes(got)
