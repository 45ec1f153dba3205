"""OAuth 2.0 token requests (RFC 6749): the client credentials grant (§4.4) and the refresh grant (§6),
the token response (§5.1) and its errors (§5.2), classified like any other call.

``request_token(session, grant)`` answers a ``Token`` or raises ``TokenError`` whose ``failure`` is one
error class with a detail that says the token endpoint failed, not the API:

* an RFC 6749 error code in a 4xx (``invalid_client``, ``invalid_grant``, ``unauthorized_client``,
  ``unsupported_grant_type``, ``invalid_scope``, ``invalid_request``) is ``auth``: wrong credentials or
  config, which no retry fixes — ``auth: token endpoint: invalid_client (Client authentication failed)``;
* ``server_error`` / ``temporarily_unavailable`` (some endpoints answer them with a 400) are ``http_5xx``;
* otherwise the status, network, timeout and body classes of ``integration_kit.classify`` apply, with
  ``token endpoint:`` in the detail (``connect: token endpoint: server closed the connection before
  responding``), so the check's retry policy retries what is retryable there too;
* no token within ``grant.timeout`` (the request, its answer and body) is ``timeout: token endpoint: no
  token within 10s`` (``no_token``).

A token response is a secret as a whole: it is never kept as an excerpt (only error responses are), and
every credential a grant holds is listed by ``TokenGrant.secrets()`` for the redactor. Error details quote
the endpoint's ``error_description``; pass them through the redactor like every detail.

Token caching, refresh before expiry and single-flight across processes are ``integration_kit.token_cache``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from integration_kit.classify import Failure, classify_exception, classify_status, parse_json, within_budget
from integration_kit.errors import ErrorClass
from integration_kit.retry import parse_retry_after

GrantType = Literal["client_credentials", "refresh_token"]
ClientAuth = Literal["header", "body"]

# RFC 6749 §5.2 error codes: the credentials or the grant are wrong; retrying does not help.
AUTH_ERRORS = frozenset(
    {"invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type", "invalid_scope",
     "invalid_request", "access_denied"}
)
# Codes of the authorization endpoint (§4.1.2.1) that some token endpoints send too: the server's trouble.
SERVER_ERRORS = frozenset({"server_error", "temporarily_unavailable"})
ERROR_EXCERPT_BYTES = 2048
_MAX_RESPONSE_BYTES = 65536  # a token response is a few hundred bytes; more is not a token response
_DESCRIPTION_CHARS = 120
PREFIX = "token endpoint: "


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenGrant:
    """How to obtain an access token from one token endpoint. Holds secrets in the clear: never show it.

    ``client_auth``: ``header`` sends the client id and secret as HTTP Basic (RFC 6749 §2.3.1, which every
    server must support), ``body`` as ``client_id``/``client_secret`` form fields. ``refresh_margin``:
    a token is renewed this many seconds before it expires (at most half its lifetime), so no request
    goes out with a token about to die. ``default_lifetime``: the lifetime assumed when the response has
    no ``expires_in``. ``timeout``: of one token request.
    """

    token_url: str
    grant_type: GrantType = "client_credentials"
    client_id: str | None = None
    client_secret: str | None = None
    client_auth: ClientAuth = "header"
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    extra_params: tuple[tuple[str, str], ...] = ()
    refresh_token: str | None = None  # the refresh grant's token as configured (rotated ones live in the cache)
    refresh_margin: float = 60.0
    default_lifetime: float = 3600.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.grant_type == "refresh_token" and not self.refresh_token:
            raise ValueError("the refresh_token grant needs a refresh token")
        if self.grant_type == "client_credentials" and not (self.client_id and self.client_secret):
            raise ValueError("the client_credentials grant needs a client id and secret")

    def form(self, refresh_token: str | None = None) -> list[tuple[str, str]]:
        """The form fields of the token request; ``refresh_token``: the current one (rotation)."""
        fields: list[tuple[str, str]] = [("grant_type", self.grant_type)]
        if self.grant_type == "refresh_token":
            fields.append(("refresh_token", refresh_token or self.refresh_token or ""))
        if self.scopes:
            fields.append(("scope", " ".join(self.scopes)))
        if self.audience:
            fields.append(("audience", self.audience))
        fields.extend(self.extra_params)
        if self.client_id and (self.client_auth == "body" or not self.client_secret):
            fields.append(("client_id", self.client_id))  # a public client sends its id in the body
            if self.client_secret:
                fields.append(("client_secret", self.client_secret))
        return fields

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if self.client_id and self.client_secret and self.client_auth == "header":
            headers["Authorization"] = basic_authorization(self.client_id, self.client_secret, form_encode=True)
        return headers

    def secrets(self) -> list[str]:
        """Every credential of the grant, as the redactor must know them (the Basic header too)."""
        out = [s for s in (self.client_secret, self.refresh_token) if s]
        if self.client_id and self.client_secret and self.client_auth == "header":
            out.append(basic_authorization(self.client_id, self.client_secret, form_encode=True))
        return out

    def fingerprint(self) -> str:
        """A short digest of everything that decides which token the endpoint hands out (credentials
        included): the cache key of this grant's tokens, so a changed secret or scope is a new slot."""
        identity = [self.token_url, self.grant_type, self.client_id, self.client_secret, self.client_auth,
                    list(self.scopes), self.audience, [list(p) for p in self.extra_params], self.refresh_token]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:20]


def basic_authorization(user: str, password: str, *, form_encode: bool = False) -> str:
    """``Basic base64(user:password)``; RFC 6749 §2.3.1 form-encodes the client id and secret first."""
    if form_encode:
        user, password = quote(user, safe=""), quote(password, safe="")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """An access token. ``expires_at``: epoch seconds; ``refresh_token``: a rotated one, if the endpoint
    sent one. A secret as a whole."""

    access_token: str
    token_type: str = "Bearer"
    expires_at: float
    obtained_at: float
    refresh_token: str | None = None
    scope: str | None = None

    def authorization(self) -> str:
        """The ``Authorization`` header value (RFC 6750: ``Bearer <token>``)."""
        scheme = "Bearer" if self.token_type.lower() == "bearer" else self.token_type
        return f"{scheme} {self.access_token}"

    def renew_at(self, margin: float) -> float:
        """When to stop using it: ``margin`` seconds before expiry, at most half its lifetime early."""
        lifetime = max(0.0, self.expires_at - self.obtained_at)
        return self.expires_at - min(margin, lifetime / 2)

    def to_json(self) -> str:
        return json.dumps({
            "access_token": self.access_token, "token_type": self.token_type, "expires_at": self.expires_at,
            "obtained_at": self.obtained_at, "scope": self.scope,
        }, separators=(",", ":"))  # the rotated refresh token is kept apart (token_cache), not with every copy

    @classmethod
    def from_json(cls, text: str | bytes) -> Token | None:
        """The token ``to_json`` wrote; None for anything else (a foreign or damaged value)."""
        try:
            data = json.loads(text)
            token = cls(
                access_token=str(data["access_token"]), token_type=str(data.get("token_type") or "Bearer"),
                expires_at=float(data["expires_at"]), obtained_at=float(data["obtained_at"]),
                scope=data.get("scope"),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return token if token.access_token else None


@dataclass(slots=True)
class TokenError(Exception):
    """The token endpoint handed out no token. ``failure`` is ``(class, detail)``; ``status`` the HTTP
    status if there was a response; ``retry_after`` seconds if it asked us to wait; ``excerpt`` the raw
    start of an error response (never of a 2xx: that would be a token)."""

    failure: Failure
    status: int | None = None
    retry_after: float | None = None
    excerpt: bytes | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.failure[1]


def no_token(seconds: float | None, suffix: str = "") -> Failure:
    """No token in time: within the grant's ``timeout`` (``timeout: token endpoint: no token within 10s``),
    which bounds the whole request, its answer's body too; or, with ``suffix=" (deadline)"``, within what
    the check's deadline left (a wait for another caller's fetch included: checks/auth.py)."""
    return ErrorClass.TIMEOUT, f"timeout: {PREFIX}no token{within_budget(seconds, suffix)}"


def _failure(error_class: ErrorClass, detail: str) -> Failure:
    """``<class>: token endpoint: <what>`` from a kit detail ``<class>: <what>``."""
    return error_class, f"{error_class}: {PREFIX}{detail.removeprefix(f'{error_class}: ')}"


async def request_token(
    session: aiohttp.ClientSession, grant: TokenGrant, *, refresh_token: str | None = None,
    now: float | None = None, ssl: Any = True,
) -> Token:
    """One token request within ``grant.timeout``. Raises ``TokenError``, never anything else for a
    failing endpoint. ``refresh_token``: the current refresh token when it was rotated since config."""
    obtained_at = time.time() if now is None else now
    try:
        async with asyncio.timeout(grant.timeout):
            async with session.post(
                grant.token_url, data=grant.form(refresh_token), headers=grant.headers(), allow_redirects=False,
                ssl=ssl,
            ) as resp:
                status, reason = resp.status, resp.reason
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), now=obtained_at)
                # read(n) answers what has arrived, up to n bytes: a response sent in pieces (chunked, or
                # larger than a segment) is read piece by piece, to its end or one byte past the cap.
                got = bytearray()
                while len(got) <= _MAX_RESPONSE_BYTES and (
                        piece := await resp.content.read(_MAX_RESPONSE_BYTES + 1 - len(got))):
                    got += piece
                body = bytes(got)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ClientError):  # grant.timeout's
            raise TokenError(no_token(grant.timeout)) from None
        error_class, detail = classify_exception(exc, budget=grant.timeout)
        raise TokenError(_failure(error_class, detail)) from None
    if not 200 <= status < 300:
        raise TokenError(_error_response(status, reason, body), status=status, retry_after=retry_after,
                         excerpt=body[:ERROR_EXCERPT_BYTES])
    if len(body) > _MAX_RESPONSE_BYTES:
        raise TokenError(_failure(ErrorClass.BODY_TOO_LARGE, f"response over {_MAX_RESPONSE_BYTES} bytes"),
                         status=status)
    return parse_token_response(body, obtained_at=obtained_at, default_lifetime=grant.default_lifetime,
                                status=status)


def _error_response(status: int, reason: str | None, body: bytes) -> Failure:
    data, _ = parse_json(body)
    code = data.get("error") if isinstance(data, Mapping) else None
    if isinstance(code, str) and code:
        description = data.get("error_description")
        said = code if not isinstance(description, str) or not description else f"{code} ({_short(description)})"
        if code in SERVER_ERRORS:
            return ErrorClass.HTTP_5XX, f"http_5xx: {PREFIX}{status} {said}"
        if code in AUTH_ERRORS or status in (400, 401, 403):
            return ErrorClass.AUTH, f"auth: {PREFIX}{said}"
    error_class, detail = classify_status(status, reason)
    return _failure(error_class, detail)


def parse_token_response(
    body: bytes, *, obtained_at: float, default_lifetime: float = 3600.0, status: int = 200
) -> Token:
    """A 2xx token response (RFC 6749 §5.1) → ``Token``; ``TokenError`` when it is not one. ``expires_in``
    may be a number or a numeric string (vendors send both); without it ``default_lifetime`` applies."""
    data, malformed = parse_json(body)
    if malformed is not None:
        raise TokenError(_failure(*malformed), status=status)
    if not isinstance(data, Mapping):
        raise TokenError(_failure(ErrorClass.MALFORMED_JSON, "response is not a JSON object"), status=status)
    access_token = data.get("access_token")
    if access_token is None or access_token == "":
        missing = ErrorClass.MISSING_FIELD if "access_token" not in data else ErrorClass.NULL_FIELD
        raise TokenError((missing, f"{missing}: {PREFIX}access_token"), status=status)
    if not isinstance(access_token, str):
        raise TokenError(_failure(ErrorClass.ASSERTION_FAILED, "access_token is not a string"), status=status)
    lifetime = _lifetime(data.get("expires_in"), default_lifetime, since=obtained_at)
    token_type = data.get("token_type")
    refresh = data.get("refresh_token")
    scope = data.get("scope")
    return Token(
        access_token=access_token,
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        expires_at=obtained_at + lifetime,
        obtained_at=obtained_at,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scope=scope if isinstance(scope, str) else None,
    )


def _lifetime(value: Any, default: float, *, since: float) -> float:
    if isinstance(value, bool):
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    # A lifetime too short to move the clock (``expires_in: 1e-20``) is no lifetime, like 0: the token
    # would be expired the moment it came.
    return seconds if math.isfinite(seconds) and since + seconds > since else default


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DESCRIPTION_CHARS else text[: _DESCRIPTION_CHARS - 1] + "…"


__all__ = [
    "AUTH_ERRORS", "PREFIX", "ClientAuth", "GrantType", "Token", "TokenError", "TokenGrant",
    "basic_authorization", "parse_token_response", "request_token",
]
