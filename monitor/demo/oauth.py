"""The simulated CRM's OAuth2 server and the API it guards (part of the demo's vendor, monitor/demo/vendor.py).

``POST /crm/oauth/v1/token`` hands out access tokens for the client credentials grant (client id and
secret as HTTP Basic or form fields; anything else is ``invalid_client``) that live ``lifetime`` seconds,
so the monitor's token refresh shows within minutes. Every ``revoke_every`` seconds the vendor rotates
its signing key and every token issued before becomes invalid long before its ``expires_in``: the next
probe gets a 401, drops the token, fetches a new one and retries once — a green run with two attempts
and no ``auth`` alert. ``GET /crm/v3/objects/deals`` answers 200 to a valid token, 401 otherwise.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
from collections.abc import Callable
from urllib.parse import unquote

from aiohttp import web

CLIENT_ID = "demo-crm-client"
CLIENT_SECRET = "demo-crm-client-secret-0000"  # the bundled config's default for ${DEMO_CRM_CLIENT_SECRET}


class DemoOAuth:
    def __init__(self, *, clock: Callable[[], float], started_at: Callable[[], float], lifetime: float,
                 revoke_every: float) -> None:
        self._clock = clock
        self._started_at = started_at
        self.lifetime = lifetime
        self.revoke_every = revoke_every
        self._tokens: dict[str, tuple[float, int]] = {}  # token -> (expires at, key generation)
        self._serial = itertools.count(1)
        self.issued = 0

    def _generation(self) -> int:
        return int(max(0.0, self._clock() - self._started_at()) // self.revoke_every)

    def _client(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return unquote(user) == CLIENT_ID and unquote(password) == CLIENT_SECRET
        return form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if not self._client(request, form):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"}, status=401
            )
        now = self._clock()
        self._tokens = {t: v for t, v in self._tokens.items() if v[0] > now}  # forget expired ones
        token = f"demo-crm-at-{next(self._serial)}-{secrets.token_hex(8)}"
        self._tokens[token] = (now + self.lifetime, self._generation())
        self.issued += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": int(self.lifetime),
             "scope": form.get("scope")},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def valid(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        found = self._tokens.get(header[7:]) if header.startswith("Bearer ") else None
        return found is not None and found[0] > self._clock() and found[1] == self._generation()

    async def deals(self, request: web.Request) -> web.Response:
        if not self.valid(request):
            return web.json_response(
                {"status": "error", "category": "INVALID_AUTHENTICATION", "message": "token revoked or expired"},
                status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return web.json_response({"results": [{"id": "9001", "properties": {"dealname": "Demo renewal",
                                                                             "amount": "12000"}}]})
