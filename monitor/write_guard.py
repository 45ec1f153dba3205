"""Who may change things through the HTTP API (today: create and expire silences, which mute alerts).

The port also serves /metrics and /api/status, often to more people than should mute alerts, so every
request that is not a read (anything but GET, HEAD, OPTIONS) needs ``Authorization: Bearer <token>``
when ``monitor.api_token`` is set. Without a token, writes are allowed only when the server listens on
a loopback address (only this machine — in a pod, this pod — can reach it); on any other address they
are refused with 403 and a message saying how to enable them. Secure by default, and a sidecar that
listens on 127.0.0.1 needs no token for `curl` from its own pod.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, :: and every other address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def write_guard(token: Callable[[], str | None], *, host: str) -> Middleware:
    """aiohttp middleware enforcing the rule above. ``token`` is read per request (a reload may set it)."""
    loopback = is_loopback(host)
    refused = (
        f"writes are disabled: the API listens on {host or '0.0.0.0'} and monitor.api_token is not set; set it "
        "(then send 'Authorization: Bearer <token>') or listen on 127.0.0.1"
    )

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in READ_METHODS:
            return await handler(request)
        expected = token()
        if expected is None:
            if loopback:
                return await handler(request)
            return web.json_response({"error": refused}, status=403)
        given = request.headers.get("Authorization", "")
        # (surrogatepass: a header aiohttp decoded with surrogate escapes must not raise here)
        if not hmac.compare_digest(given.encode(errors="surrogatepass"), f"Bearer {expected}".encode()):
            return web.json_response(
                {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    return guard


def describe(token: str | None, *, host: str, port: int) -> str:
    """One line for the start-up log: how writes are protected."""
    if token is not None:
        return "POST/DELETE on /api/* need monitor.api_token (Authorization: Bearer …)"
    if is_loopback(host):
        return f"POST/DELETE on /api/* are open to local clients only ({host} is a loopback address)"
    return (f"POST/DELETE on /api/* are refused: monitor.api_token is not set and {host}:{port} is not a "
            "loopback address")
