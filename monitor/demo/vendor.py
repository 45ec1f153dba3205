"""The simulated vendor API of ``integration-monitor demo``: one aiohttp app on loopback whose endpoints
misbehave the ways real third-party APIs do, so every error class (README, "Checks") and rate-limit header
format (README, "Rate-limit quotas") can be seen without any external service.

Behaviour is deterministic: call-count patterns depend only on how often an endpoint was called, the
rate-limit curves only on the time since the vendor started (``clock`` is injectable for tests), and
generated body values on ``seed``.

==========================================  ================================================================
endpoint                                    behaviour (demo error class)
==========================================  ================================================================
GET  /payments/v1/account                   healthy (a check that stays green)
GET  /payments/v1/balance                   503 bursts: calls 0..2 of every 6 fail (``http_5xx``)
GET  /payments/v1/charges                   429 + ``Retry-After: 1`` on calls 0..1 of every 4 (``rate_limited``)
GET  /payments/v1/customers/cus_demo        200, ``email`` is null (``null_field``)
POST /payments/v1/test_charges              creates a test object (201) for the demo's flow; ``GET`` and
GET, DELETE /payments/v1/test_charges/{id}  ``DELETE`` it; every ``flow_lag_every``-th is not readable
                                            right after creation (404 at the flow's ``read`` step)
GET  /payments/v1/charges/{id}              the payments service's own calls: 1 in 8 customers has a null
                                            ``billing_details.email``; 502 on half the calls during the first
                                            ``outage_seconds`` of every ``outage_period`` (real traffic)
GET  /crm/v3/objects/contacts/{id}          healthy: the CRM sync job's calls, throttled by its own limiter
GET  /crm/v3/contacts                       200, ``results[0].id`` missing; IETF ``RateLimit`` headers
                                            (``missing_field``; quota ``burst`` and ``daily``)
GET  /crm/v3/owners                         401 expired token (``auth``)
POST /crm/oauth/v1/token                    OAuth2 client credentials: tokens live ``token_lifetime`` s
GET  /crm/v3/objects/deals                  needs a token; the vendor revokes every token each
                                            ``token_revoke_every`` s (one 401, one refresh, still green)
GET  /crm/services/data/v59.0/limits        healthy; ``Sforce-Limit-Info: api-usage=N/5000`` climbing
GET  /shipping/v1/rates                     answers after ``slow_seconds`` (``too_slow``)
GET  /shipping/v1/track/1Z999AA10123456784  answers after ``hang_seconds`` (``timeout``)
POST /shipping/v1/labels                    200 with an empty body (``empty_body``)
GET  /shipping/v1/status                    503 during an incident: the first ``incident_seconds`` of every
                                            ``incident_period`` (probe_down fires, then resolves)
GET  /messaging/v1/messages                 200 ``application/json`` that is not JSON (``malformed_json``)
GET  /messaging/v1/usage                    GitHub ``x-ratelimit-*`` climbing toward the limit, resetting
                                            every ``rate_window`` s; 429 while exhausted (``rate_limited``)
GET  /messaging/v1/export                   ``large_body_bytes`` of JSON (``body_too_large``)
GET  /messaging/v1/stream                   connection closed mid-body (``disconnected``)
GET  /storefront/admin/api/2024-01/shop.json  Shopify ``X-Shopify-Shop-Api-Call-Limit`` leaky bucket; 429 +
                                            ``Retry-After: 2.0`` while the bucket is full
GET  /storefront/admin/api/2023-01/orders.json  410, retired API version (``http_4xx``)
GET  /storefront/admin/api/2024-01/inventory_levels.json  ``available`` is a string (``assertion_failed``)
POST /storefront/admin/api/2024-01/graphql.json  GraphQL: cost bucket in ``extensions.cost.throttleStatus``
                                            drained by a sync job every ``graphql_cycle`` s, ``THROTTLED``
                                            errors in a 200 when empty; ``legacyResourceId`` is gone
                                            (``graphql_error``)
GET  /                                      this table as JSON
==========================================  ================================================================

Every endpoint is served twice: on plain HTTP (``url``) and on HTTPS (``tls_url``) with a self-signed
certificate made at start that expires in ``cert_days`` days — so a check with ``verify_tls: false``
reads the expiry (and the ``tls_expiry`` rule has something to warn about) and one with verification on
fails with ``tls``.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import ipaddress
import math
import random
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import http_sfv
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from monitor.demo.graphql import DemoGraphql
from monitor.demo.oauth import DemoOAuth
from monitor.demo.objects import DemoObjects

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The 0-based number of the call being answered, per request task (set on arrival, before any await).
_CALL: contextvars.ContextVar[int] = contextvars.ContextVar("demo_vendor_call")


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorBehaviour:
    """Knobs of the simulation; the defaults are what the demo uses."""

    seed: int = 0
    burst_fail: int = 3  # /payments/v1/balance: this many 503s …
    burst_every: int = 6  # … at the start of every this many calls
    throttle_fail: int = 2  # /payments/v1/charges: this many 429s …
    throttle_every: int = 4  # … at the start of every this many calls
    slow_seconds: float = 1.5
    hang_seconds: float = 8.0
    large_body_bytes: int = 4 * 1024 * 1024
    rate_window: float = 50.0  # GitHub-style window, compressed so the demo shows a full cycle
    github_limit: int = 5000
    incident_seconds: float = 20.0
    incident_period: float = 300.0
    shopify_bucket: int = 40
    shopify_cycle: float = 40.0  # a sync job fills the bucket, then it drains
    cert_days: float = 10.0  # the HTTPS certificate's remaining validity
    token_lifetime: float = 60.0  # CRM OAuth2 access tokens (real ones live 30 min: compressed for the demo)
    token_revoke_every: float = 150.0  # the CRM rotates its signing key: earlier tokens stop working
    outage_seconds: float = 40.0  # /payments/v1/charges/{id}: half the calls fail for this long …
    outage_period: float = 180.0  # … at the start of every this many seconds
    flow_lag_every: int = 5  # /payments/v1/test_charges: every n-th object is not readable at once
    graphql_cycle: float = 120.0  # the storefront's GraphQL cost bucket: drained, throttled, refilled


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    behaviour: str


class SimulatedVendor:
    """Holds the call counters; ``app()`` builds the aiohttp application, ``start()`` serves it."""

    def __init__(self, behaviour: VendorBehaviour | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.behaviour = behaviour or VendorBehaviour()
        self._clock = clock
        self.started_at = clock()
        self.calls: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self.tls_url: str | None = None
        self.endpoints: list[Endpoint] = []
        self._routes: list[tuple[Endpoint, Handler]] = []
        b = self.behaviour
        self._route("GET", "/payments/v1/account", "healthy", self._account)
        self._route(
            "GET", "/payments/v1/balance", f"503 on {b.burst_fail} of every {b.burst_every} calls", self._balance
        )
        self._route(
            "GET",
            "/payments/v1/charges",
            f"429 Retry-After on {b.throttle_fail} of every {b.throttle_every} calls",
            self._charges,
        )
        self._route("GET", "/payments/v1/customers/cus_demo", "200, email is null", self._customer)
        self.objects = DemoObjects(lag_every=b.flow_lag_every)
        self._route("POST", "/payments/v1/test_charges", "creates a test object (201)", self.objects.create)
        self._route("GET", "/payments/v1/test_charges/{id}",
                    f"reads it; every {b.flow_lag_every}th is not readable at once (404)", self.objects.read)
        self._route("DELETE", "/payments/v1/test_charges/{id}", "deletes it (204)", self.objects.delete)
        self._route(
            "GET", "/payments/v1/charges/{charge_id}",
            f"1 in 8 emails null; 502 on half the calls for {b.outage_seconds}s of every {b.outage_period}s",
            self._charge,
        )
        self._route("GET", "/crm/v3/objects/contacts/{contact_id}", "healthy (the sync job's calls)", self._contact)
        self._route("GET", "/crm/v3/contacts", "200, results[0].id missing; IETF RateLimit headers", self._contacts)
        self._route("GET", "/crm/v3/owners", "401 expired token", self._owners)
        self.oauth = DemoOAuth(clock=clock, started_at=lambda: self.started_at, lifetime=b.token_lifetime,
                               revoke_every=b.token_revoke_every)
        self._route("POST", "/crm/oauth/v1/token", f"OAuth2 client credentials; tokens live {b.token_lifetime:g}s",
                    self.oauth.token)
        self._route("GET", "/crm/v3/objects/deals",
                    f"needs a bearer token; all tokens revoked every {b.token_revoke_every:g}s", self.oauth.deals)
        self._route("GET", "/crm/services/data/v59.0/limits", "healthy; Sforce-Limit-Info climbing", self._sf_limits)
        self._route("GET", "/shipping/v1/rates", f"answers after {b.slow_seconds}s", self._rates)
        self._route("GET", "/shipping/v1/track/1Z999AA10123456784", f"answers after {b.hang_seconds}s", self._track)
        self._route("POST", "/shipping/v1/labels", "200 with an empty body", self._labels)
        self._route(
            "GET",
            "/shipping/v1/status",
            f"503 for the first {b.incident_seconds}s of every {b.incident_period}s",
            self._status,
        )
        self._route("GET", "/messaging/v1/messages", "200 application/json that is not JSON", self._messages)
        self._route("GET", "/messaging/v1/usage", "GitHub x-ratelimit-* climbing; 429 when exhausted", self._usage)
        self._route("GET", "/messaging/v1/export", f"{b.large_body_bytes} bytes of JSON", self._export)
        self._route("GET", "/messaging/v1/stream", "connection closed mid-body", self._stream)
        self._route(
            "GET", "/storefront/admin/api/2024-01/shop.json", "Shopify call-limit bucket; 429 when full", self._shop
        )
        self._route("GET", "/storefront/admin/api/2023-01/orders.json", "410 retired API version", self._orders)
        self._route(
            "GET", "/storefront/admin/api/2024-01/inventory_levels.json", "available is a string", self._inventory
        )
        self.graphql = DemoGraphql(elapsed=self._elapsed, cycle=b.graphql_cycle)
        self._route("POST", "/storefront/admin/api/2024-01/graphql.json",
                    "GraphQL: cost bucket in the body, THROTTLED errors in a 200 when empty", self.graphql.handle)

    # -- serving ---------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        for endpoint, handler in self._routes:
            app.router.add_route(endpoint.method, endpoint.path, self._counted(endpoint.path, handler))
        app.router.add_get("/", self._index)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, tls_port: int = 0) -> str:
        """Serve HTTP on ``host:port`` and HTTPS on ``host:tls_port`` (0 = a free port); returns the HTTP
        base URL (``tls_url`` holds the HTTPS one)."""
        self.started_at = self._clock()  # the time-driven behaviours start their cycles now
        # Short shutdown: the hanging endpoints must not hold up the demo's exit.
        self._runner = web.AppRunner(self.app(), shutdown_timeout=0.5, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            plain = web.TCPSite(self._runner, host, port)
            await plain.start()
            self.url = f"http://{host}:{self._runner.addresses[0][1]}"
            context = self_signed_context(host, days=self.behaviour.cert_days, now=self._clock())
            secure = web.TCPSite(self._runner, host, tls_port, ssl_context=context)
            await secure.start()
            self.tls_url = f"https://{host}:{self._runner.addresses[1][1]}"
        except BaseException:
            await self.close()
            raise
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _route(self, method: str, path: str, behaviour: str, handler: Handler) -> None:
        endpoint = Endpoint(method, path, behaviour)
        self.endpoints.append(endpoint)
        self._routes.append((endpoint, handler))

    def _counted(self, path: str, handler: Handler) -> Handler:
        async def counted(request: web.Request) -> web.StreamResponse:
            # Numbered on arrival: a handler that awaits first still knows which call it answers.
            _CALL.set(self.calls[path])
            self.calls[path] += 1
            return await handler(request)

        return counted

    # -- helpers ---------------------------------------------------------------------------------------

    def _nth(self, request: web.Request) -> int:
        """0-based number of this call to the endpoint."""
        return _CALL.get()

    def _elapsed(self) -> float:
        return max(0.0, self._clock() - self.started_at)

    def _rng(self, request: web.Request) -> random.Random:
        # Seeded by endpoint and call number, so values don't depend on how calls interleave.
        return random.Random(f"{self.behaviour.seed}:{request.path}:{self._nth(request)}")

    def _window(self, length: float) -> tuple[float, float]:
        """(phase 0..1 in the current window, seconds until it resets); windows start at vendor start."""
        elapsed = self._elapsed()
        into = elapsed % length
        return into / length, length - into

    async def _index(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"endpoints": [{"method": e.method, "path": e.path, "behaviour": e.behaviour} for e in self.endpoints]}
        )

    # -- payments --------------------------------------------------------------------------------------

    async def _account(self, request: web.Request) -> web.Response:
        return web.json_response({"id": "acct_1Demo", "object": "account", "charges_enabled": True, "country": "US"})

    async def _balance(self, request: web.Request) -> web.Response:
        b = self.behaviour
        if self._nth(request) % b.burst_every < b.burst_fail:
            return web.json_response(
                {"error": {"type": "api_error", "message": "An unknown error occurred"}},
                status=503,
                headers={"Request-Id": f"req_{self._nth(request):06d}"},
            )
        amount = self._rng(request).randrange(10_000, 5_000_000)
        return web.json_response(
            {"object": "balance", "available": [{"amount": amount, "currency": "usd"}], "livemode": False}
        )

    async def _charges(self, request: web.Request) -> web.Response:
        b = self.behaviour
        if self._nth(request) % b.throttle_every < b.throttle_fail:
            return web.json_response(
                {"error": {"type": "rate_limit_error", "message": "Too many requests hit the API too quickly."}},
                status=429,
                headers={"Retry-After": "1", "Stripe-Should-Retry": "true"},
            )
        rng = self._rng(request)
        return web.json_response(
            {"object": "list", "data": [{"id": f"ch_{rng.randrange(10**8):08d}", "amount": rng.randrange(100, 90_000)}]}
        )

    async def _customer(self, request: web.Request) -> web.Response:
        # The quirk: a customer created through the dashboard has no email, and the API says null.
        return web.json_response({"id": "cus_demo", "object": "customer", "email": None, "name": "Demo Customer"})

    async def _charge(self, request: web.Request) -> web.Response:
        # The payments service's own calls (real traffic, through the integration kit).
        b = self.behaviour
        rng = self._rng(request)
        if self._elapsed() % b.outage_period < b.outage_seconds and rng.random() < 0.5:
            return web.json_response({"error": {"type": "api_error", "message": "Bad gateway"}}, status=502)
        charge_id = request.match_info["charge_id"]
        email = None if rng.randrange(8) == 0 else f"{charge_id}@example.com"
        return web.json_response({"id": charge_id, "object": "charge", "amount": 1200,
                                  "billing_details": {"email": email, "name": "Demo Customer"}})

    # -- crm -------------------------------------------------------------------------------------------

    async def _contact(self, request: web.Request) -> web.Response:
        contact_id = request.match_info["contact_id"]
        return web.json_response({"id": contact_id, "properties": {"email": f"{contact_id}@example.com"}})

    async def _contacts(self, request: web.Request) -> web.Response:
        # IETF draft-10 RateLimit/RateLimit-Policy: a 10 s burst policy and a daily one.
        phase, burst_reset = self._window(10.0)
        burst_used = min(100, int(60 * phase) + 1)
        daily_used = 18_000 + int(3 * self._elapsed())
        seconds_to_midnight = 86_400 - int(self._clock()) % 86_400
        policy, state = http_sfv.List(), http_sfv.List()
        for name, quota, window, remaining, reset in (
            ("burst", 100, 10, 100 - burst_used, math.ceil(burst_reset)),
            ("daily", 25_000, 86_400, max(0, 25_000 - daily_used), seconds_to_midnight),
        ):
            p = http_sfv.Item(name)
            p.params["q"], p.params["w"] = quota, window
            policy.append(p)
            s = http_sfv.Item(name)
            s.params["r"], s.params["t"] = remaining, reset
            state.append(s)
        rng = self._rng(request)
        # Schema drift: the vendor renamed ``id`` to ``hs_object_id`` in this API version.
        contact = {"hs_object_id": str(rng.randrange(10**9)), "properties": {"email": "ada@example.com"}}
        return web.json_response(
            {"results": [contact], "paging": {"next": {"after": "2"}}},
            headers={"RateLimit-Policy": str(policy), "RateLimit": str(state)},
        )

    async def _owners(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "error",
                "category": "EXPIRED_AUTHENTICATION",
                "message": "The OAuth token used to make this call expired 4 hour(s) ago.",
            },
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    async def _sf_limits(self, request: web.Request) -> web.Response:
        used = 3_600 + int(2 * self._elapsed())
        return web.json_response(
            {"DailyApiRequests": {"Max": 5000, "Remaining": max(0, 5000 - used)}},
            headers={"Sforce-Limit-Info": f"api-usage={used}/5000"},
        )

    # -- shipping --------------------------------------------------------------------------------------

    async def _rates(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.behaviour.slow_seconds)
        cents = self._rng(request).randrange(500, 4_000)
        return web.json_response({"rates": [{"service": "ground", "amount": cents / 100, "currency": "USD"}]})

    async def _track(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.behaviour.hang_seconds)
        return web.json_response({"tracking_number": "1Z999AA10123456784", "status": "in_transit"})

    async def _labels(self, request: web.Request) -> web.Response:
        # The quirk: label creation under load answers 200 with nothing at all.
        return web.Response(status=200, body=b"", content_type="application/json")

    async def _status(self, request: web.Request) -> web.Response:
        b = self.behaviour
        if self._elapsed() % b.incident_period < b.incident_seconds:
            return web.json_response({"status": "major_outage"}, status=503, headers={"Retry-After": "30"})
        return web.json_response({"status": "operational"})

    # -- messaging -------------------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.Response:
        if self._nth(request) % 2 == 0:
            # An HTML error page from the vendor's load balancer, labelled as JSON.
            body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        else:
            # A body cut short by a proxy.
            body = b'{"messages": [{"sid": "SM1f0e", "body": "Your code is 4'
        return web.Response(status=200, body=body, content_type="application/json")

    def github_usage(self) -> tuple[int, int, float]:
        """(used, limit, seconds to reset) of the simulated GitHub-style window (own calls included)."""
        b = self.behaviour
        phase, reset_in = self._window(b.rate_window)
        # Background traffic starts each window at half the limit and would reach 110% at its end.
        used = int(b.github_limit * (0.5 + 0.6 * phase)) + self.calls["/messaging/v1/usage"] % 50
        return min(used, b.github_limit), b.github_limit, reset_in

    async def _usage(self, request: web.Request) -> web.Response:
        used, limit, reset_in = self.github_usage()
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(limit - used),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(math.ceil(self._clock() + reset_in)),
            "x-ratelimit-resource": "core",
        }
        if used >= limit:
            headers["Retry-After"] = str(math.ceil(reset_in))
            return web.json_response({"message": "API rate limit exceeded"}, status=429, headers=headers)
        return web.json_response({"resources": {"core": {"limit": limit, "used": used}}}, headers=headers)

    async def _export(self, request: web.Request) -> web.StreamResponse:
        size = self.behaviour.large_body_bytes
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = size
        await response.prepare(request)
        # Valid JSON of exactly `size` bytes: whole records, padded with whitespace before the end.
        head, tail, record = (
            b'{"messages": [',
            b"]}",
            b'{"sid": "SM00000000000000000000000000000000", "status": "delivered"}',
        )
        count = max(1, (size - len(head) - len(tail)) // (len(record) + 1))
        padding = max(0, size - len(head) - len(tail) - count * (len(record) + 1) + 1)
        batch = 1_000
        try:
            await response.write(head)
            for start in range(0, count, batch):
                n = min(batch, count - start)
                await response.write(b",".join([record] * n) + (b"," if start + n < count else b""))
            await response.write(b" " * padding + tail)
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading at its cap: expected
        return response

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 4096
        await response.prepare(request)
        await response.write(b'{"messages": [{"sid": "SM1f0e", ')
        if request.transport is not None:
            request.transport.close()  # the vendor's worker died mid-response
        return response

    # -- storefront ------------------------------------------------------------------------------------

    def shopify_bucket(self) -> tuple[int, bool]:
        """(level shown in the header, full?) of the leaky bucket a background sync job keeps filling."""
        b = self.behaviour
        phase, _ = self._window(b.shopify_cycle)
        # Fills from 20% to 110% over three quarters of the cycle, then drains.
        raw = (
            b.shopify_bucket * (0.2 + 0.9 * phase / 0.75) if phase < 0.75 else b.shopify_bucket * 1.1 * 4 * (1 - phase)
        )
        level = int(raw) + 1
        return min(level, b.shopify_bucket), level > b.shopify_bucket

    async def _shop(self, request: web.Request) -> web.Response:
        level, full = self.shopify_bucket()
        headers = {"X-Shopify-Shop-Api-Call-Limit": f"{level}/{self.behaviour.shopify_bucket}"}
        if full:
            headers["Retry-After"] = "2.0"
            return web.json_response(
                {
                    "errors": "Exceeded 2 calls per second for api client. Reduce request "
                    "rates to resume uninterrupted service."
                },
                status=429,
                headers=headers,
            )
        return web.json_response(
            {"shop": {"id": 548380009, "name": "Demo Store", "plan_name": "basic"}}, headers=headers
        )

    async def _orders(self, request: web.Request) -> web.Response:
        return web.json_response({"errors": "API version 2023-01 is no longer supported"}, status=410)

    async def _inventory(self, request: web.Request) -> web.Response:
        available = self._rng(request).randrange(0, 200)
        # The quirk: one legacy location reports ``available`` as a string.
        return web.json_response(
            {
                "inventory_levels": [
                    {"inventory_item_id": 808950810, "location_id": 655441491, "available": str(available)}
                ]
            }
        )


def self_signed_context(host: str, *, days: float, now: float) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for ``host`` valid for ``days`` from ``now``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vendor.demo.invalid")])
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    start = dt.datetime.fromtimestamp(now - 86_400, dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days + 1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain reads files only: a private temporary directory, gone right after loading.
    with tempfile.TemporaryDirectory(prefix="im-demo-tls-") as tmp:
        cert_file, key_file = f"{tmp}/cert.pem", f"{tmp}/key.pem"
        with open(cert_file, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_file, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        context.load_cert_chain(cert_file, key_file)
    return context
