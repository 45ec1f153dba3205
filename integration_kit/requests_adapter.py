"""The kit for services built on requests: a transport adapter that runs every request of a
``requests.Session`` through a ``SyncIntegration`` (limiter, the probes' classes and retry policy,
traffic counters, ``CallError``)::

    stripe = SyncIntegration("stripe", redis=redis.Redis.from_url(REDIS_URL), secrets=[KEY])
    session = requests.Session()
    session.mount("https://api.stripe.com/", KitAdapter(stripe))
    charge = session.get("https://api.stripe.com/v1/charges/ch_1").json()   # or CallError

The only module of the kit that needs requests (``pip install 'integration-kit[requests]'``); nothing
else imports it. An adapter checks every answer against one ``Expect``; mount adapters with other
expectations on more specific URL prefixes.
"""

from __future__ import annotations

import os
import re
import socket
import time
from time import perf_counter
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from integration_kit.calls import Expect, body_failure, status_failure
from integration_kit.classify import Failure, describe, within_budget
from integration_kit.errors import ErrorClass
from integration_kit.integration_base import EXCERPT_READ, Attempt
from integration_kit.retry import rate_limit_wait
from integration_kit.sync_client import SyncIntegration

__all__ = ["KitAdapter", "classify_requests_exception"]


def classify_requests_exception(exc: BaseException, *, budget: float | None = None) -> Failure:
    """The probes' class of a requests exception raised before the response headers were in."""
    within = within_budget(budget)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ErrorClass.TIMEOUT, f"timeout: connect did not complete{within}"
    if isinstance(exc, requests.exceptions.Timeout):
        return ErrorClass.TIMEOUT, f"timeout: no response headers{within}"
    if isinstance(exc, requests.exceptions.SSLError):
        return ErrorClass.TLS, f"tls: {_reason(exc)}"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return ErrorClass.UNEXPECTED_STATUS, "unexpected_status: too many redirects"
    # socket.gaierror, not urllib3 2's NameResolutionError: requests >= 2.31 also runs on urllib3 1.26,
    # which has no such class (the adapter raised AttributeError on every refused connection there).
    if _caused_by(exc, socket.gaierror):
        return ErrorClass.DNS, f"dns: name did not resolve ({_reason(exc)})"
    if _caused_by(exc, urllib3.exceptions.ProtocolError) and "without response" in str(exc):
        return ErrorClass.CONNECT, "connect: server closed the connection before responding"
    return ErrorClass.CONNECT, f"connect: {_reason(exc)}"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        reason = getattr(seen, "reason", None)
        nested = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = reason if isinstance(reason, BaseException) else nested or seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    """The innermost reason, without urllib3's pool and object addresses."""
    inner: BaseException = exc
    for _ in range(8):
        reason = getattr(inner, "reason", None)
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        following = reason if isinstance(reason, BaseException) else nested
        if following is None:
            break
        inner = following
    if isinstance(inner, OSError) and inner.errno:
        return describe(inner)
    text = str(inner)
    if errno := _ERRNO.search(text):  # urllib3 keeps only the text of the OSError: "[Errno 111] …"
        return os.strerror(int(errno.group(1))).lower()
    return text.rsplit(": ", 1)[-1] if "object at 0x" in text else describe(inner)


_ERRNO = re.compile(r"\[Errno (\d+)\]")


class KitAdapter(HTTPAdapter):
    """A requests transport adapter; every request it sends is one call of ``integration``.
    ``expect``: what every answer must be (default: the integration's)."""

    def __init__(self, integration: SyncIntegration, *, expect: Expect | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("max_retries", 0)  # the kit retries, under its policy
        super().__init__(**kwargs)
        self.integration = integration
        self.expect = expect if expect is not None else integration.default_expect

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        method = request.method or "GET"

        def once(deadline: float) -> Attempt:
            started = perf_counter()
            budget = max(0.001, deadline - time.monotonic())
            connect = min(timeout[0] if isinstance(timeout, tuple) and timeout[0] else budget, budget)
            try:
                resp = super(KitAdapter, self).send(request, stream=True, timeout=(connect, budget), verify=verify,
                                                    cert=cert, proxies=proxies)
            except requests.exceptions.RequestException as exc:
                error_class, detail = classify_requests_exception(exc, budget=budget)
                return Attempt(error_class=error_class, detail=detail, duration=perf_counter() - started)
            return self._answer(method, resp, started)

        response: requests.Response = self.integration.run(method, request.url, request.headers, once)
        return response

    def _answer(self, method: str, resp: requests.Response, started: float) -> Attempt:
        status = resp.status_code
        failure = status_failure(self.expect, status, resp.reason, resp.headers)
        if failure is not None:
            retry_after = None
            if failure[0] in self.integration.retry.retry_on:
                retry_after = rate_limit_wait(resp.headers, now=time.time())
            body = _head(resp)
            return Attempt(error_class=failure[0], detail=failure[1], status=status, retry_after=retry_after,
                           duration=perf_counter() - started, body=body)
        as_json, body_required = self.expect.body_checks(resp.headers.get("Content-Type", ""))
        if as_json or body_required:
            try:
                body = resp.content  # kept by requests: the caller's resp.json() reads it again
            except requests.exceptions.RequestException as exc:
                resp.close()
                return Attempt(error_class=ErrorClass.DISCONNECTED, detail=f"disconnected: {_reason(exc)}",
                               status=status, duration=perf_counter() - started)
            failure = body_failure(self.expect, method=method, status=status, as_json=as_json,
                                   body_required=body_required, body=body)
            if failure is not None:
                resp.close()
                return Attempt(error_class=failure[0], detail=failure[1], status=status,
                               duration=perf_counter() - started, body=body[:EXCERPT_READ])
        return Attempt(error_class=None, status=status, duration=perf_counter() - started, response=resp)


def _head(resp: requests.Response) -> bytes:
    """The first bytes of an error response, then the connection is let go."""
    try:
        return resp.raw.read(EXCERPT_READ, decode_content=True) or b""
    except Exception:  # the status already says what went wrong
        return b""
    finally:
        resp.close()
