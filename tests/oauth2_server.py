"""A vendor on 127.0.0.1 that hands out OAuth2 tokens and guards an API with them, misbehaving on demand.

``POST /oauth/token`` implements RFC 6749's client credentials and refresh grants: client authentication
by HTTP Basic or form fields, ``expires_in`` of ``lifetime`` seconds, rotated refresh tokens (the old
one then answers ``invalid_grant``, as OAuth 2.1 servers do), an optional delay, and scripted failures
(``fail_with``). ``GET /api/me`` answers 200 to a valid, unexpired bearer token and 401 otherwise;
``revoke_all()`` invalidates every token (a vendor revoking early). Everything is counted, and what was
left of a token's lifetime when the API saw it (``api_left``). ``clock`` (default: monotonic seconds) is
the vendor's; a test can give it the token cache's fake clock, so expiry is judged on one clock.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from targets import LoopbackApp

CLIENT_ID = "client-7"
CLIENT_SECRET = "cs_CANARY_client_secret_5e1f"
REFRESH_TOKEN = "rt_CANARY_refresh_0_a9c4"


@dataclass
class TokenRequest:
    form: dict[str, str]
    authorization: str | None
    at: float


@dataclass
class OAuth2Server(LoopbackApp):
    lifetime: float = 3600.0
    rotate: bool = False
    delay: float = 0.0
    expires_in_as_string: bool = False
    fail_with: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # next responses, in order
    token_requests: list[TokenRequest] = field(default_factory=list)
    api_hits: list[str | None] = field(default_factory=list)  # the Authorization header of each API call
    issued: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)  # every refresh token handed out, in order
    api_left: list[float] = field(default_factory=list)  # seconds of its lifetime a valid token had left, per call
    clock: Callable[[], float] = field(default=time.monotonic)
    _valid: dict[str, float] = field(default_factory=dict)  # access token -> expiry (on clock)
    _refresh_valid: set[str] = field(default_factory=lambda: {REFRESH_TOKEN})
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def token_url(self) -> str:
        return self.url("/oauth/token")

    def revoke_all(self) -> None:
        self._valid.clear()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/api/me", self._api)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(TokenRequest(form, request.headers.get("Authorization"), self.clock()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with:
            status, body = self.fail_with.pop(0)
            return web.json_response(body, status=status)
        if not self._client_ok(form, request.headers.get("Authorization")):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, status=401
            )
        body: dict[str, Any] = {}
        if form.get("grant_type") == "refresh_token":
            presented = form.get("refresh_token", "")
            if presented not in self._refresh_valid:
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "refresh token is invalid or was rotated"},
                    status=400,
                )
            if self.rotate:
                self._refresh_valid.discard(presented)
                new = f"rt_CANARY_rotated_{next(self._serial)}_7d2e"
                self._refresh_valid.add(new)
                self.refresh_tokens.append(new)
                body["refresh_token"] = new
        elif form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = f"at_CANARY_access_{next(self._serial)}_{id(self) % 997}"
        self.issued.append(token)
        self._valid[token] = self.clock() + self.lifetime
        expires: Any = str(int(self.lifetime)) if self.expires_in_as_string else self.lifetime
        body.update({"access_token": token, "token_type": "bearer", "expires_in": expires, "scope": form.get("scope")})
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _client_ok(self, form: dict[str, str], authorization: str | None) -> bool:
        if authorization and authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return unquote(user) == CLIENT_ID and unquote(password) == CLIENT_SECRET
        if "client_secret" in form:
            return form.get("client_id") == CLIENT_ID and form["client_secret"] == CLIENT_SECRET
        return form.get("grant_type") == "refresh_token" and form.get("client_id") == CLIENT_ID  # a public client

    async def _api(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        self.api_hits.append(authorization)
        token = authorization[7:] if authorization and authorization.startswith("Bearer ") else ""
        expiry = self._valid.get(token)
        if expiry is None or expiry <= self.clock():
            return web.json_response({"error": "invalid_token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        self.api_left.append(expiry - self.clock())
        return web.json_response({"id": "me", "name": "Probe"})
