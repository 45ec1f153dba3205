"""Phase timing of one HTTP attempt (dns, connect, tls, ttfb, transfer) and the peer certificate's expiry.

aiohttp's tracing gives DNS and connection-creation boundaries but has no TLS hook: the connection span
covers TCP connect and the TLS handshake together. The split comes from the TLS object itself: our SSL
contexts build their TLS objects from a subclass whose ``do_handshake`` notes when the handshake starts
(asyncio calls it first right after the TCP connection is made) and when it completes, and takes the
peer certificate there (works with verification off too). The TLS object finds the attempt's timing
through a context variable the probe sets around the request: asyncio runs the transport callbacks in a
copy of the requesting task's context. Request-scoped trace callbacks get the same object as
``trace_request_ctx``.

Phases, in seconds, summed over redirect hops: dns (resolution), connect (TCP connect), tls (handshake),
ttfb (request headers sent → response headers received), transfer (response body read, set by the probe),
token (obtaining the OAuth2 access token before the request, set by the probe's auth; absent when the
token came from memory).
"""

from __future__ import annotations

import ssl
from contextvars import ContextVar
from functools import lru_cache
from time import perf_counter
from types import SimpleNamespace
from typing import Any, Literal

import aiohttp
from cryptography import x509

from integration_kit.results import PHASES

Stage = Literal["connect", "headers", "body"]


class AttemptTiming:
    """Mutable clock marks of one attempt; filled by trace callbacks, the TLS object and the probe."""

    __slots__ = (
        "_create_at",
        "_dns_at",
        "_dns_before_create",
        "_sent_at",
        "_tls_at",
        "_tls_before_create",
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
        self._dns_at = self._create_at = self._tls_at = self._sent_at = 0.0
        self._dns_before_create = self._tls_before_create = 0.0

    def phases(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in PHASES:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
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


# Trace callbacks: (session, trace_config_ctx, params); ``trace_request_ctx`` is the AttemptTiming.


def _timing(trace_ctx: SimpleNamespace) -> AttemptTiming | None:
    timing = trace_ctx.trace_request_ctx
    return timing if isinstance(timing, AttemptTiming) else None


async def _on_dns_start(_session: Any, trace_ctx: SimpleNamespace, _params: Any) -> None:
    if (timing := _timing(trace_ctx)) is not None:
        timing._dns_at = perf_counter()


async def _on_dns_end(_session: Any, trace_ctx: SimpleNamespace, _params: Any) -> None:
    if (timing := _timing(trace_ctx)) is not None and timing._dns_at:
        timing.dns = (timing.dns or 0.0) + perf_counter() - timing._dns_at


async def _on_create_start(_session: Any, trace_ctx: SimpleNamespace, _params: Any) -> None:
    if (timing := _timing(trace_ctx)) is not None:
        timing.stage = "connect"
        timing._create_at = perf_counter()
        timing._dns_before_create = timing.dns or 0.0
        timing._tls_before_create = timing.tls or 0.0


async def _on_create_end(_session: Any, trace_ctx: SimpleNamespace, _params: Any) -> None:
    if (timing := _timing(trace_ctx)) is not None and timing._create_at:
        # The connection span holds this hop's DNS, TCP connect and TLS handshake: keep the TCP part.
        span = perf_counter() - timing._create_at
        hop_dns = (timing.dns or 0.0) - timing._dns_before_create
        hop_tls = (timing.tls or 0.0) - timing._tls_before_create
        timing.connect = (timing.connect or 0.0) + max(0.0, span - hop_dns - hop_tls)
        timing.stage = "headers"


async def _on_headers_sent(_session: Any, trace_ctx: SimpleNamespace, _params: Any) -> None:
    if (timing := _timing(trace_ctx)) is not None:
        timing.stage = "headers"
        timing._sent_at = perf_counter()


async def _on_response_headers(_session: Any, trace_ctx: SimpleNamespace, _params: Any) -> None:
    # request_end (final response) and request_redirect (each intermediate one) both fire once the
    # response headers are in.
    if (timing := _timing(trace_ctx)) is not None and timing._sent_at:
        timing.ttfb = (timing.ttfb or 0.0) + perf_counter() - timing._sent_at
        timing._sent_at = 0.0


def trace_config() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_dns_resolvehost_start.append(_on_dns_start)
    config.on_dns_resolvehost_end.append(_on_dns_end)
    config.on_connection_create_start.append(_on_create_start)
    config.on_connection_create_end.append(_on_create_end)
    config.on_request_headers_sent.append(_on_headers_sent)
    config.on_request_redirect.append(_on_response_headers)
    config.on_request_end.append(_on_response_headers)
    return config
