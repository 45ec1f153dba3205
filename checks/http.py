"""HTTP probe (``kind: http``): one request, with retries, against an integration's API.

``probe(check, ctx)`` never raises because the target failed: every outcome is a ``CheckResult`` with
exactly one error class (README, "Checks") and a short detail. The parts: the config model
(``checks.http_config``), one attempt (``checks.http_attempt``), the classification of what an attempt
saw (``integration_kit.classify``) and the retries (``integration_kit.retry``).
"""

from __future__ import annotations

import time

import aiohttp

from checks.base import ProbeContext
from checks.http_attempt import EXCERPT_BYTES, HttpRun
from checks.http_config import Expectation, HttpCheckConfig
from checks.json_assertions import JsonAssertion, JsonType
from checks.timing import ssl_context, trace_config
from integration_kit.ratelimit_headers import rate_limit_fields
from integration_kit.results import CheckResult
from integration_kit.retry import run_with_retries

__all__ = ["EXCERPT_BYTES", "Expectation", "HttpCheckConfig", "JsonAssertion", "JsonType", "make_session", "probe"]

USER_AGENT = "integration-monitor"


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


async def probe(check: HttpCheckConfig, ctx: ProbeContext) -> CheckResult:
    """One scheduled run of an HTTP check: attempts with retries inside ``check.timeout``."""
    started_at = time.time()
    own_session = ctx.session is None
    session = make_session(limit=0) if ctx.session is None else ctx.session
    try:
        run = HttpRun(check, ctx, session)
        t0 = run.loop.time()
        outcome, classes = await run_with_retries(
            run.attempt, check.retry.policy, deadline=t0 + check.timeout, clock=run.loop.time
        )
        total = run.loop.time() - t0
    finally:
        if own_session:
            await session.close()
    ok = outcome.error_class is None
    redactor = ctx.redactor
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
        # Not redacted: these values are never shown, only parsed (and masking a short secret that
        # happens to equal a number, "5000" say, would lose the quota).
        rate_limit_headers=() if run.headers is None else rate_limit_fields(run.headers),
        body_bytes=outcome.body_bytes,
    )
