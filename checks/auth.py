"""Auth at run time: the headers each request of a check carries, and what happens when they fail.

``RequestAuth`` is one run's view of a check's ``auth:`` (``checks.auth_config``):

* ``basic``: the ``Authorization: Basic`` header; ``hmac``: a fresh signature per request
  (``integration_kit.signing``);
* OAuth2: a token from the daemon's ``TokenCache`` (``ProbeContext.tokens``: per credential, refreshed
  before expiry, single-flight across replicas through Redis). The time spent getting it is the attempt's
  ``token`` phase. When the token endpoint fails, the attempt fails with the endpoint's class and a
  detail that says so (``auth: token endpoint: invalid_client (…)``), and the failing request shown is
  the token request (redacted), not the API call that was never sent.

``authorized_attempt`` wraps one attempt of an ``HttpRun``: a 401 to a request that carried a cached
OAuth2 token invalidates that token (here and in Redis) and sends the request once more with a new one —
exactly one refresh-and-retry per run, counted as an attempt, so a token revoked or expired early costs
one extra request and no failure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

from checks.auth_config import AuthConfig, BasicAuth, HmacAuth, OAuth2ClientCredentials, OAuth2RefreshToken
from checks.http_attempt import EXCERPT_BYTES, REDACT_OVERLAP, Attempt, HttpRun
from checks.timing import AttemptTiming, ssl_context
from integration_kit.deadlines import DeadlineScope
from integration_kit.errors import ErrorClass
from integration_kit.oauth2 import Token, TokenError, no_token
from integration_kit.redact import MASK, is_sensitive_name
from integration_kit.results import RequestSummary
from integration_kit.token_cache import TokenCache

if TYPE_CHECKING:
    import aiohttp

    from checks.base import ProbeContext

_REQUEST_BODY_EXCERPT = 512


@dataclass(slots=True)
class _TokenFailure:
    attempt: Attempt
    request: RequestSummary


@dataclass(slots=True)
class RequestAuth:
    """The auth of one run (``auth`` None or ``none``: no headers). Build it with ``for_run``."""

    auth: AuthConfig | None
    ctx: ProbeContext
    session: aiohttp.ClientSession
    tokens: TokenCache | None
    token: Token | None = None  # the OAuth2 token the latest request carried
    failed_request: RequestSummary | None = None  # the token request, when the latest attempt failed there
    refreshed: bool = False  # this run used its one refresh-and-retry
    classes: list[ErrorClass | None] = field(default_factory=list)  # every request of the run, in order

    @classmethod
    def for_run(cls, auth: AuthConfig | None, ctx: ProbeContext, session: aiohttp.ClientSession) -> RequestAuth:
        if auth is not None and auth.kind == "none":
            auth = None  # one way to say "no headers": attempts then skip asking for them (see authorized_attempt)
        tokens = ctx.tokens
        if tokens is None and isinstance(auth, OAuth2ClientCredentials | OAuth2RefreshToken):
            tokens = TokenCache(on_secret=ctx.redactor.rotate)  # a direct call, outside the daemon: this run's own
        return cls(auth, ctx, session, tokens)

    @property
    def oauth2(self) -> OAuth2ClientCredentials | OAuth2RefreshToken | None:
        return self.auth if isinstance(self.auth, OAuth2ClientCredentials | OAuth2RefreshToken) else None

    def cache_key(self) -> str | None:
        oauth2 = self.oauth2
        return None if oauth2 is None else f"{self.ctx.integration}:{oauth2.grant.fingerprint()}"

    async def headers(
        self, run: HttpRun, timing: AttemptTiming, deadline: float
    ) -> Mapping[str, str] | _TokenFailure:
        """The auth headers of the next request of ``run``, or why there are none."""
        auth, plan = self.auth, run.plan
        self.token = None
        if isinstance(auth, BasicAuth):
            return {"Authorization": auth.header}
        if isinstance(auth, HmacAuth):
            return {**{k: v.get_secret_value() for k, v in auth.headers.items()},
                    **auth.signer.headers(plan.method, plan.url, plan.data)}
        oauth2 = self.oauth2
        if oauth2 is None:
            return {}
        key = self.cache_key()
        assert key is not None and self.tokens is not None
        started = time.monotonic()
        try:
            with DeadlineScope(self.ctx.deadlines, deadline):
                lease = await self.tokens.get(key, oauth2.grant, self.session, label=self.ctx.integration,
                                              ssl=ssl_context(oauth2.verify_tls))
        except TimeoutError:
            waited = time.monotonic() - started
            timing.token = waited
            return self._token_failure(no_token(waited, " (deadline)"), timing, waited)
        except TokenError as exc:
            waited = time.monotonic() - started
            timing.token = waited
            attempt = self._token_failure(exc.failure, timing, waited, status=exc.status, excerpt=exc.excerpt)
            attempt.attempt.retry_after = exc.retry_after
            return attempt
        timing.token = lease.waited
        self.token = lease.token
        return {"Authorization": lease.token.authorization()}

    async def after_unauthorized(self) -> bool:
        """A 401 answered a request that carried a cached token: drop it, once per run. True when a
        new request with a new token is worth sending."""
        key = self.cache_key()
        if self.token is None or key is None or self.tokens is None or self.refreshed:
            return False
        self.refreshed = True
        await self.tokens.invalidate(key, self.token)
        return True

    def _token_failure(
        self, failure: tuple[ErrorClass, str], timing: AttemptTiming, waited: float, *,
        status: int | None = None, excerpt: bytes | None = None,
    ) -> _TokenFailure:
        oauth2 = self.oauth2
        assert oauth2 is not None
        grant, redactor = oauth2.grant, self.ctx.redactor
        # Credentials are masked by field name before encoding: a secret with characters that form
        # encoding escapes would not be recognised by its value afterwards.
        form = "&".join(f"{quote_plus(k)}={MASK if is_sensitive_name(k) else quote_plus(v)}" for k, v in grant.form())
        body = redactor.text(form[: _REQUEST_BODY_EXCERPT + REDACT_OVERLAP])[:_REQUEST_BODY_EXCERPT]
        request = RequestSummary(method="POST", url=redactor.url(grant.token_url),
                                 headers=redactor.headers(grant.headers()), body_excerpt=body)
        attempt = Attempt(error_class=failure[0], detail=failure[1], duration=waited, timing=timing, status=status,
                          excerpt=None if excerpt is None else excerpt[: EXCERPT_BYTES + REDACT_OVERLAP])
        return _TokenFailure(attempt=attempt, request=request)


async def authorized_attempt(run: HttpRun, auth: RequestAuth, deadline: float) -> Attempt:
    """One attempt of ``run`` with ``auth``'s headers, and the one refresh-and-retry after a 401 (see the
    module docstring). Every request goes into ``auth.classes``."""
    while True:
        timing = AttemptTiming()
        # Without auth, no coroutine asked for no headers (~10 k instructions an attempt: its isinstance checks
        # on the auth config's classes go through ABCMeta's, pydantic's metaclass being one).
        headers = {} if auth.auth is None else await auth.headers(run, timing, deadline)
        if isinstance(headers, _TokenFailure):
            auth.failed_request = headers.request
            auth.classes.append(headers.attempt.error_class)
            return headers.attempt
        auth.failed_request = None
        outcome = await run.attempt(deadline, headers, timing=timing)
        auth.classes.append(outcome.error_class)
        if outcome.status != 401 or not await auth.after_unauthorized():
            return outcome


def run_request(run: HttpRun, auth: RequestAuth) -> RequestSummary:
    """The failing request to show: the token request when the token failed, else the API request."""
    return auth.failed_request if auth.failed_request is not None else run.request_summary()


__all__ = ["RequestAuth", "authorized_attempt", "run_request"]
