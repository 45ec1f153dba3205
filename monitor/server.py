"""The daemon's HTTP endpoints (aiohttp.web): /metrics, /healthz, /readyz, /api/status (and one integration's
or one check's part of it: /api/status/INTEGRATION[/CHECK], where alerts link to).

More endpoints come from components: a component with a ``routes()`` method (see
monitor/component.py) has its routes added before the server starts listening; ``extra_routes``
passed to ``HttpServer`` are added too. Every JSON body goes through the redactor on its way out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import types
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.exposition import gzip_accepted

from monitor.write_guard import describe, write_guard

if TYPE_CHECKING:
    from integration_kit.redact import Redactor
    from monitor.metrics import Metrics

log = logging.getLogger(__name__)

# /metrics compressed when the scraper accepts gzip (Prometheus does unless its scrape config says
# ``enable_compression: false``): ~20 x fewer bytes. Level 1, not aiohttp's level 6 (``enable_compression``):
# bench/scrape.py measured level 6 at ~3 x the CPU of level 1 for ~20 % fewer bytes. With the ``speed``
# extra, by ISA-L (``isal``): the same gzip stream format at ~1/5 of zlib's CPU for a page of 50,000 checks
# (bench/scrape.py), slightly smaller; zlib otherwise.
GZIP_LEVEL = 1
gzip_codec: types.ModuleType
try:
    from isal import isal_zlib as gzip_codec
except ImportError:  # installed without the speed extra
    gzip_codec = zlib


class ListenError(OSError):
    """The HTTP server could not take its address (in use, not this host's, no permission): a problem
    of the listen setting, said in one line rather than as a traceback."""


class Monitored(Protocol):
    """What the endpoints ask of the app (monitor.app.App implements it)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def redactor(self) -> Redactor: ...

    def health(self) -> tuple[bool, str]: ...

    def readiness(self) -> tuple[bool, list[str]]: ...

    def status_document(self) -> dict[str, Any]: ...

    def api_token(self) -> str | None:
        """The bearer token writes need (monitor.api_token), None when not set."""
        ...

    def integration_status(self, name: str) -> dict[str, Any] | None: ...


MONITOR = web.AppKey("monitor", Monitored)


def json_response(request: web.Request, data: Any, *, status: int = 200) -> web.Response:
    """JSON out, secrets masked (the data should hold none; this is the last line of defence)."""
    return web.Response(
        text=_dump(data, request.app[MONITOR].redactor), status=status, content_type="application/json"
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    # Rendered piece by piece on the event loop, each written out as soon as it is ready: thousands of
    # series never hold the loop for long (a render thread would, through the GIL), and the whole page is
    # never in memory at once.
    # While it is written, the alert evaluation's slices wait (monitor/scrape_priority.py).
    exported = request.app[MONITOR].metrics
    with exported.scrape_priority.writing():
        return await _write_metrics(request, exported)


async def _write_metrics(request: web.Request, exported: Metrics) -> web.StreamResponse:
    content_type, pieces = exported.exposition(request.headers.get("Accept", ""))
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    gzip = gzip_accepted(request.headers.get("Accept-Encoding", ""))  # Prometheus asks for it by default
    if gzip:
        headers["Content-Encoding"] = "gzip"
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    compressor = gzip_codec.compressobj(GZIP_LEVEL, wbits=16 + zlib.MAX_WBITS) if gzip else None
    for piece in pieces:
        # Compressed here, on the loop (level 1: ~0.4 ms for a piece of 1 MB by ISA-L, ~2 ms by zlib): in a
        # thread, each piece would wait for 3-4 turns of a busy loop instead of one (bench/scrape.py --turn-ms).
        await response.write(piece if compressor is None else compressor.compress(piece))
        await asyncio.sleep(0)  # write() only suspends when the socket buffer is full: let probes run
    if compressor is not None:
        await response.write(compressor.flush())
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    ok, reason = request.app[MONITOR].health()
    return json_response(request, {"status": "ok" if ok else "unhealthy", "reason": reason}, status=200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    ok, reasons = request.app[MONITOR].readiness()
    return json_response(
        request, {"status": "ready" if ok else "not ready", "reasons": reasons}, status=200 if ok else 503
    )


async def api_status(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR]
    document = monitor.status_document()
    # Thousands of checks make a large document: serialise and redact it off the event loop.
    text = await asyncio.to_thread(_dump, document, monitor.redactor)
    return web.Response(text=text, content_type="application/json")


async def api_status_part(request: web.Request) -> web.Response:
    """/api/status/INTEGRATION and /api/status/INTEGRATION/CHECK: the part of /api/status about it."""
    name, check = request.match_info["integration"], request.match_info.get("check")
    doc = request.app[MONITOR].integration_status(name)
    if doc is None:
        return json_response(request, {"error": f"no integration {name!r}"}, status=404)
    if check is None:
        return json_response(request, {"integration": name, **doc})
    if check not in doc["checks"]:
        return json_response(request, {"error": f"integration {name!r} has no check {check!r}"}, status=404)
    return json_response(request, {"integration": name, "check": check, **doc["checks"][check]})


def _dump(data: Any, redactor: Redactor) -> str:
    return redactor.text(json.dumps(data, indent=2, default=str))


def core_routes() -> list[web.RouteDef]:
    return [
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/api/status", api_status),
        web.get("/api/status/{integration}", api_status_part),
        web.get("/api/status/{integration}/{check}", api_status_part),
    ]


class _OneLineForMalformedRequests(logging.Filter):
    """aiohttp answers a malformed request (a bad chunk size, a header it cannot parse) with 400 but logs
    it at ERROR with a traceback, though nothing is wrong with the monitor: one line instead, without the
    request's bytes that aiohttp quotes (they may hold a client's credentials)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = str(exc.message).split("\n", 1)[0].rstrip(": ") or type(exc).__name__
        log.log(min(record.levelno, logging.INFO), "malformed HTTP request from %s answered %d: %s",
                client, exc.code, reason)
        return False


_MALFORMED_REQUESTS = _OneLineForMalformedRequests()


class HttpServer:
    """Owns the aiohttp runner; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, monitor: Monitored, host: str, port: int, extra_routes: Iterable[web.AbstractRouteDef] = ()):
        self.host = host
        self.port = port
        self.monitor = monitor
        self.web_app = web.Application(middlewares=[write_guard(monitor.api_token, host=host)])
        self.web_app[MONITOR] = monitor
        self.web_app.add_routes(core_routes())
        self.web_app.add_routes(list(extra_routes))
        self._runner: web.AppRunner | None = None

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        self.web_app.add_routes(list(routes))

    async def start(self) -> None:
        logging.getLogger("aiohttp.server").addFilter(_MALFORMED_REQUESTS)
        self._runner = web.AppRunner(self.web_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise ListenError(
                f"cannot listen on {self.host}:{self.port} (monitor.listen or --listen): "
                f"{os.strerror(exc.errno).lower() if exc.errno else exc}"
            ) from None
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("serving /metrics /healthz /readyz /api/status on %s:%d; %s", self.host, self.port,
                 describe(self.monitor.api_token(), host=self.host, port=self.port))

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"
