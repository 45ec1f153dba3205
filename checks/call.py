"""One HTTP call of a probe with everything around it: the client session, auth, retries inside a
deadline, and the ``CheckResult`` it becomes. The ``http`` and ``graphql`` kinds are one call each; a
``flow`` is one call per step.

``perform_call`` runs the attempts of an ``HttpRun`` (``checks.http_attempt``) through the kit's retry
runner (``integration_kit.retry``) with the run's auth (``checks.auth``): a failed token fetch is an
attempt like any other (retried when its class is retryable), a 401 to a cached token gets its one
refresh-and-retry. ``CallOutcome.result`` makes the check result of a single-call kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import aiohttp

from checks.auth import RequestAuth, authorized_attempt, run_request
from checks.http_attempt import EXCERPT_BYTES, Attempt, BodyInspector, CallConfig, HttpRun
from checks.timing import TimedConnector, TimedResolver, TimedResponse, ssl_context
from integration_kit.ratelimit_headers import rate_limit_fields
from integration_kit.results import CheckResult, CheckResultDraft, RequestSummary
from integration_kit.retry import RetryPolicy, run_with_retries

if TYPE_CHECKING:
    from checks.auth_config import AuthConfig
    from checks.base import ProbeContext
    from checks.http_config import RequestPlan
    from integration_kit.errors import ErrorClass

USER_AGENT = "integration-monitor"


def make_session(*, limit: int) -> aiohttp.ClientSession:
    """The client session for probes; call it inside the running loop and close it on shutdown.

    A synthetic probe measures what a real client pays, so every run gets a fresh connection
    (force_close) and a fresh DNS resolution (no DNS cache); cookies are never kept between runs.
    ``limit`` (0 = none) should not be below the scheduler's concurrency: a probe waiting for a free
    slot would spend its connect timeout on our own queue.
    """
    ssl_context(True), ssl_context(False)  # load the CA store now, not inside the first probe
    # The phases come from the connector, resolver and response class (checks.timing), not from tracing.
    connector = TimedConnector(limit=limit, force_close=True, use_dns_cache=False, resolver=TimedResolver())
    session = aiohttp.ClientSession(
        connector=connector,
        response_class=TimedResponse,
        timeout=aiohttp.ClientTimeout(total=None),  # each probe sets its own deadline
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
    )
    # aiohttp silently resends an idempotent request once when the server closes the connection
    # before responding (meant for stale keep-alive connections, which force_close rules out): a
    # probe must see and count that failure instead.
    session._retry_connection = False
    return session


def probe_session(ctx: ProbeContext) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession | None]:
    """The session a probe's requests go out on: the daemon's shared one, or for a direct call one of the
    probe's own, which is then also the second item (close it once the run is over). Not an async context
    manager: it is entered once per probe, and its two coroutines cost ~5 k instructions."""
    if ctx.session is not None:
        return ctx.session, None
    own = make_session(limit=0)
    return own, own


@dataclass(slots=True)
class CallOutcome:
    """The final attempt of a call, every request's class, the time it all took, and the run's state.
    (Made with positional arguments once per run: keywords cost ~2 k instructions more.)"""

    outcome: Attempt
    classes: tuple[ErrorClass | None, ...]
    total: float
    run: HttpRun
    auth: RequestAuth

    def request(self) -> RequestSummary:
        """The redacted request behind the outcome (the token request if the token failed)."""
        return run_request(self.run, self.auth)

    def excerpt(self, ctx: ProbeContext) -> str | None:
        raw = self.outcome.excerpt
        if raw is None:
            return None
        return ctx.redactor.text(raw.decode("utf-8", errors="replace"))[:EXCERPT_BYTES]

    def result(
        self, *, kind: str, check: str, ctx: ProbeContext, started_at: float,
        rate_limit_body: tuple[tuple[str, str], ...] = (),
    ) -> CheckResult:
        outcome, run = self.outcome, self.run
        ok = outcome.error_class is None
        result = CheckResultDraft()  # a run's result, field by field (the constructor costs 8 times as much)
        result.integration = ctx.integration
        result.check = check
        result.kind = kind
        result.ok = ok
        result.error_class = outcome.error_class
        result.detail = ctx.redactor.text(outcome.detail)
        result.started_at = started_at
        result.duration = outcome.duration
        result.total_duration = self.total
        result.attempts = len(self.classes)
        result.attempt_classes = self.classes
        result.status_code = outcome.status
        result.phases = outcome.timing.phases()
        result.tls_expiry = run.tls_expiry
        result.request = None if ok else self.request()
        result.response_excerpt = None if ok else self.excerpt(ctx)
        # Not redacted: these values are never shown, only parsed (and masking a short secret that happens to
        # equal a number, "5000" say, would lose the quota).
        result.rate_limit_headers = () if run.headers is None else rate_limit_fields(run.headers)
        result.rate_limit_body = rate_limit_body
        result.body_bytes = outcome.body_bytes
        result.steps = ()
        return result.freeze()


async def perform_call(
    call: CallConfig,
    ctx: ProbeContext,
    session: aiohttp.ClientSession,
    *,
    plan: RequestPlan,
    policy: RetryPolicy,
    deadline: float | None = None,
    budget: float | None = None,
    auth: AuthConfig | None,
    inspect_body: BodyInspector | None = None,
    after_attempt: Callable[[Attempt], None] | None = None,
) -> CallOutcome:
    """Attempts of ``plan`` with ``auth`` and retries until ``deadline`` (a loop-clock value) or for
    ``budget`` seconds from the first attempt. ``after_attempt`` may amend each attempt's outcome (a
    GraphQL throttle's wait, say) before the retry runner judges it."""
    run = HttpRun(call, ctx, session, plan=plan, retry_on=policy.retry_on, inspect_body=inspect_body)
    request_auth = RequestAuth.for_run(auth, ctx, session)

    async def amended(until: float) -> Attempt:
        outcome = await authorized_attempt(run, request_auth, until)
        if after_attempt is not None:
            after_attempt(outcome)
        return outcome

    loop = run.loop  # (asked once a run: asking the running loop is a getpid system call on CPython 3.11)
    t0 = loop.time()
    if deadline is None:
        assert budget is not None, "a call needs a deadline or a budget"
        deadline = t0 + budget
    # Without an amendment, the attempts' own coroutines: a level around them is resumed at every wait.
    outcome = await (authorized_attempt(run, request_auth, deadline) if after_attempt is None else amended(deadline))
    if outcome.error_class is not None:  # the retry runner only after a failure: a success costs none of it
        attempt = amended if after_attempt is not None else partial(authorized_attempt, run, request_auth)
        outcome, _ = await run_with_retries(attempt, policy, deadline=deadline, clock=loop.time, first=outcome)
    return CallOutcome(outcome, tuple(request_auth.classes), loop.time() - t0, run, request_auth)


async def single_call_probe(
    check: CallConfig, ctx: ProbeContext, *, kind: str, name: str, plan: RequestPlan, policy: RetryPolicy,
    budget: float, auth: AuthConfig | None, inspect_body: BodyInspector | None = None,
    after_attempt: Callable[[Attempt], None] | None = None,
    body_quota: Callable[[HttpRun], tuple[tuple[str, str], ...]] | None = None,
) -> CheckResult:
    """A probe kind that is one call: the call inside ``budget`` seconds, then its result."""
    started_at = time.time()
    session, own = probe_session(ctx)
    try:
        call = await perform_call(check, ctx, session, plan=plan, policy=policy, budget=budget, auth=auth,
                                  inspect_body=inspect_body, after_attempt=after_attempt)
    finally:
        if own is not None:
            await own.close()
    return call.result(kind=kind, check=name, ctx=ctx, started_at=started_at,
                       rate_limit_body=body_quota(call.run) if body_quota is not None else ())


__all__ = ["USER_AGENT", "CallOutcome", "make_session", "perform_call", "probe_session", "single_call_probe"]
