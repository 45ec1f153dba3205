"""Phase timing of one HTTP attempt (dns, connect, tls, ttfb, transfer) and the peer certificate's expiry.

The probes' session marks the boundaries with aiohttp's extension points, not its tracing (a session with
any ``TraceConfig`` sends every signal of every request through coroutines and a params object each:
~70 k instructions a probe, a quarter of what the daemon added to a bare request: bench/README.md):

* dns: the session's resolver (``TimedResolver``, the system resolver as aiohttp's default) times
  ``resolve``;
* connect: the connector (``TimedConnector``) times ``_create_connection``, the step aiohttp's reference
  names for subclasses to override: a new connection's DNS, TCP connect and TLS handshake; the TCP part is
  what is left once this hop's dns and tls are taken out (a connection from the pool is never created:
  no connect phase);
* tls: our SSL contexts build their TLS objects from a subclass whose ``do_handshake`` notes when the
  handshake starts (asyncio calls it first right after the TCP connection is made) and when it completes,
  and takes the peer certificate there (works with verification off too);
* ttfb: the session's response class (``TimedResponse``) times ``start``, which aiohttp calls once the
  request is written and which returns when the response headers are in.

Each hook finds the attempt's timing through a context variable the probe sets around the request: the
resolver, the connector and the response run in the requesting task, the TLS object in asyncio's transport
callbacks, which run in a copy of that task's context. A request made outside an attempt (a token fetch)
is not timed.

Phases, in seconds, summed over redirect hops: dns (resolution), connect (TCP connect), tls (handshake),
ttfb (request written → response headers received), transfer (response body read, set by the probe),
token (obtaining the OAuth2 access token before the request, set by the probe's auth; absent when the
token came from memory).
"""

from __future__ import annotations

import math
import socket
import ssl
from contextvars import ContextVar
from functools import lru_cache
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from cryptography import x509

from integration_kit.deadlines import Deadlines, DeadlineScope

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

Stage = Literal["connect", "headers", "body"]


class AttemptTiming:
    """Mutable clock marks of one attempt; filled by the session's hooks, the TLS object and the probe."""

    __slots__ = (
        "_tls_at",
        "cert_expiry",
        "connect",
        "dns",
        "stage",
        "tls",
        "token",
        "transfer",
        "ttfb",
    )

    def __init__(self) -> None:
        self.stage: Stage = "connect"  # what the attempt is waiting for; names a timeout
        self.dns: float | None = None
        self.connect: float | None = None
        self.tls: float | None = None
        self.ttfb: float | None = None
        self.transfer: float | None = None
        self.token: float | None = None  # obtaining the access token (cache, other replicas, token endpoint)
        self.cert_expiry: float | None = None  # epoch seconds, earliest seen
        self._tls_at = 0.0

    def phases(self) -> dict[str, float]:
        """The phases measured, in ``integration_kit.results.PHASES`` order (a test per phase: a loop of
        ``getattr`` over the names cost 3 times as much, once per run)."""
        out: dict[str, float] = {}
        if self.dns is not None:
            out["dns"] = self.dns
        if self.connect is not None:
            out["connect"] = self.connect
        if self.tls is not None:
            out["tls"] = self.tls
        if self.ttfb is not None:
            out["ttfb"] = self.ttfb
        if self.transfer is not None:
            out["transfer"] = self.transfer
        if self.token is not None:
            out["token"] = self.token
        return out

    # TLS object side ---------------------------------------------------------------------------------
    def tls_started(self) -> None:
        if not self._tls_at:
            self._tls_at = perf_counter()

    def tls_done(self, der: bytes | None) -> None:
        if self._tls_at:
            self.tls = (self.tls or 0.0) + perf_counter() - self._tls_at
            self._tls_at = 0.0
        if der:
            expiry = certificate_expiry(der)
            if expiry is not None and (self.cert_expiry is None or expiry < self.cert_expiry):
                self.cert_expiry = expiry


current_attempt: ContextVar[AttemptTiming | None] = ContextVar("current_attempt", default=None)


class _TimedSSLObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        timing = current_attempt.get()
        if timing is None:
            super().do_handshake()
            return
        timing.tls_started()
        super().do_handshake()  # raises SSLWantReadError until the handshake is complete
        timing.tls_done(self.getpeercert(binary_form=True))


@lru_cache(maxsize=2)
def ssl_context(verify: bool) -> ssl.SSLContext:
    """One context per verification mode, built once (loading the CA store is blocking I/O)."""
    if verify:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    context.sslobject_class = _TimedSSLObject
    return context


@lru_cache(maxsize=256)
def certificate_expiry(der: bytes) -> float | None:
    """notAfter of a DER certificate as epoch seconds; None if it does not parse."""
    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
    except ValueError:
        return None




# The session's hooks. Each costs a coroutine level around what it times (every wait inside resumes it):
# ~1 k instructions a wait, against aiohttp's tracing at ~70 k a request.


class TimedResolver(aiohttp.ThreadedResolver):
    """The system resolver (aiohttp's default without aiodns), its lookups counted as the attempt's dns."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        timing = current_attempt.get()
        if timing is None:
            return await super().resolve(host, port, family)
        started = perf_counter()
        hosts = await super().resolve(host, port, family)
        timing.dns = (timing.dns or 0.0) + perf_counter() - started
        return hosts


class TimedConnector(aiohttp.TCPConnector):
    """A new connection's span, less its dns and tls, is the attempt's connect; it names the stage a
    deadline interrupts ("connect" while it lasts, "headers" once the connection is there).

    Its connect timeout (``ClientTimeout.connect``) runs on one timer shared by the connections in flight
    (integration_kit.deadlines) instead of aiohttp's ``asyncio.timeout`` per connection: about as many
    instructions, but that one asks for the running loop three times, and on CPython 3.11 each ask is a
    getpid system call (the figures: bench/README.md, its section on the whole process). The same limit:
    from the same instant, rounded up to a whole second past ``ceil_threshold`` as aiohttp's
    ``ceil_timeout`` does, and a ``TimeoutError`` out of ``connect`` that aiohttp's session turns into
    ``ConnectionTimeoutError`` as before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connect_deadlines = Deadlines()

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        delay = timeout.connect
        if delay is None or delay <= 0:
            return await super().connect(req, traces, timeout)
        when = self._loop.time() + delay  # (aiohttp's connector runs on the loop it was made in)
        if delay > timeout.ceil_threshold:
            when = math.ceil(when)
        with DeadlineScope(self._connect_deadlines, when):
            return await super().connect(req, traces, _without_connect(timeout))

    async def _create_connection(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> ResponseHandler:
        timing = current_attempt.get()
        if timing is None:
            return await super()._create_connection(req, traces, timeout)
        timing.stage = "connect"
        started = perf_counter()
        dns_before, tls_before = timing.dns or 0.0, timing.tls or 0.0
        proto = await super()._create_connection(req, traces, timeout)
        span = perf_counter() - started
        hop_dns = (timing.dns or 0.0) - dns_before
        hop_tls = (timing.tls or 0.0) - tls_before
        timing.connect = (timing.connect or 0.0) + max(0.0, span - hop_dns - hop_tls)
        timing.stage = "headers"
        return proto


@lru_cache(maxsize=256)
def _without_connect(timeout: aiohttp.ClientTimeout) -> aiohttp.ClientTimeout:
    """``timeout`` less its connect limit (TimedConnector enforces that one); each check's plan holds one
    ``ClientTimeout`` for all its runs, so this is built once a check."""
    return aiohttp.ClientTimeout(total=timeout.total, sock_read=timeout.sock_read, sock_connect=timeout.sock_connect,
                                 ceil_threshold=timeout.ceil_threshold)


class TimedResponse(aiohttp.ClientResponse):
    """``start`` reads the status line and headers of each response (a redirect hop's too): its span is
    the hop's ttfb."""

    async def start(self, connection: Connection) -> TimedResponse:
        timing = current_attempt.get()
        if timing is None:
            await super().start(connection)
            return self
        timing.stage = "headers"
        sent = perf_counter()
        await super().start(connection)
        timing.ttfb = (timing.ttfb or 0.0) + perf_counter() - sent
        return self
