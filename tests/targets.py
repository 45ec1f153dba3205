"""A vendor API on 127.0.0.1 that misbehaves on purpose, for probe tests (and anything else that needs a
real HTTP target).

``Target`` is an aiohttp server on a free port. Each path answers with a script of ``Reply`` objects,
one per request, the last one repeating: a test says ``target.route("/pay", Reply(status=503),
Reply(json={...}))`` and the first request gets a 503, every later one the JSON. A ``Reply`` can delay
its headers, drip its body, stream a large body, declare a length and close the connection early, close
without answering at all, or echo the request back (``echo``). Every request is recorded
(``target.hits(path)``) with its arrival time on the monotonic clock, headers, query and body; streamed
bytes are counted (``target.bytes_sent``). ``target.answered(path)`` counts the requests whose reply (or
scripted close) was given: a client that gave up on a delayed reply leaves it uncounted, which is how a
test shows that a deadline, not the vendor's answer, ended a wait. The server runs on the test's event
loop, whose timers fire in the order they are due: a client's deadline due seconds before the reply is met
first, however late a loaded machine wakes the loop.

``SilentServer`` accepts TCP connections and never says a byte (a TLS handshake or a response that
never comes); ``closed_port()`` gives a port nothing listens on; ``tls_server_context()`` makes a
trustme certificate for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Self

import trustme
from aiohttp import web
from multidict import CIMultiDict

DOC: dict[str, Any] = {
    "data": {"id": "ch_1", "amount": 1200, "currency": "usd", "tags": ["a", "b"]},
    "livemode": False,
    "empty_list": [],
    "nothing": None,
}
_NO_JSON = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One scripted answer. Body: ``json`` (serialised) or ``body`` (bytes or text)."""

    status: int = 200
    json: Any = _NO_JSON
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the response headers
    hold: asyncio.Event | None = None  # answered (after ``delay``) once the test sets it: a run kept in flight
    drip: float | None = None  # send the body one `chunk` at a time with this pause between chunks
    chunk: int = 1
    stream_bytes: int | None = None  # stream this many filler bytes (chunked), counting what was sent
    truncate_at: int | None = None  # declare the full Content-Length, send this many bytes, then close
    close_before_response: bool = False  # read the request, close the connection without a byte
    echo: bool = False  # the body (JSON) and an X-Echo header repeat what the request carried, as a vendor may

    def payload(self) -> bytes:
        if self.json is not _NO_JSON:
            return json.dumps(self.json).encode()
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass(frozen=True, slots=True)
class Hit:
    at: float  # time.monotonic() when the request arrived
    wall: float  # time.time() then
    method: str
    path: str
    headers: CIMultiDict[str]
    query: dict[str, str]
    body: bytes


class LoopbackApp:
    """Base of a test server that is an aiohttp app on a free loopback port: subclasses add their routes
    in ``routes(app)``; ``async with Server() as s: s.url("/path")``."""

    port = 0
    _runner: web.AppRunner | None = None
    _ssl: ssl.SSLContext | None = None  # serve HTTPS with this context

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def url(self, path: str) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.routes(app)
        # handler_cancellation: a client that goes away must not leave a sleeping handler behind.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Target(LoopbackApp):
    """``async with Target() as target: target.url("/ok")``; pass ``ssl=`` for an HTTPS target."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._routes: dict[str, list[Reply]] = {"/ok": [Reply(json=DOC)]}
        self._served: dict[str, int] = defaultdict(int)
        self._answered: dict[str, int] = defaultdict(int)
        self._hits: list[Hit] = []
        self.bytes_sent: dict[str, int] = defaultdict(int)

    def route(self, path: str, *replies: Reply) -> str:
        """Script ``path``; returns its URL. Re-routing a path restarts its script."""
        if not replies:
            raise ValueError("a route needs at least one Reply")
        self._routes[path] = list(replies)
        self._served[path] = 0
        return self.url(path)

    def url(self, path: str = "/ok") -> str:
        return super().url(path)

    def hits(self, path: str | None = None) -> list[Hit]:
        return [h for h in self._hits if path is None or h.path == path]

    def answered(self, path: str) -> int:
        """Requests to ``path`` whose scripted reply was given (after its ``delay``)."""
        return self._answered[path]

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        seen = CIMultiDict(request.headers)
        self._hits.append(Hit(time.monotonic(), time.time(), request.method, path, seen, dict(request.query), body))
        script = self._routes.get(path)
        if script is None:
            return web.Response(status=404, text="no such route\n")
        reply = script[min(self._served[path], len(script) - 1)]
        self._served[path] += 1
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.hold is not None:
            await reply.hold.wait()
        self._answered[path] += 1
        if reply.close_before_response:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # nothing may be written; aiohttp drops the request quietly
        if reply.stream_bytes is not None:
            return await self._stream(request, reply)
        if reply.echo:
            return self._echo(request, reply, body)
        payload = reply.payload()
        if reply.json is not _NO_JSON and "Content-Type" not in reply.headers:
            headers = {"Content-Type": "application/json", **reply.headers}
        else:
            headers = reply.headers
        if reply.truncate_at is not None:
            return await self._truncated(request, reply, payload, headers)
        if reply.drip is None:
            return web.Response(status=reply.status, body=payload, headers=headers)
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.content_length = len(payload)
        await response.prepare(request)
        for start in range(0, len(payload), reply.chunk):
            await response.write(payload[start : start + reply.chunk])
            await asyncio.sleep(reply.drip)
        await response.write_eof()
        return response

    @staticmethod
    def _echo(request: web.Request, reply: Reply, body: bytes) -> web.Response:
        """What a careless vendor does in its error pages: repeat the request, credentials included."""
        seen = {
            "url": str(request.url), "query_string": request.query_string, "headers": dict(request.headers),
            "body": body.decode("utf-8", errors="replace"),
        }
        header = " ".join(f"{k}={v}" for k, v in request.headers.items() if k.lower() != "host")
        return web.json_response(seen, status=reply.status, headers={**reply.headers, "X-Echo": header})

    async def _stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        assert reply.stream_bytes is not None
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        block = b"x" * 65536
        left = reply.stream_bytes
        try:
            while left > 0:
                piece = block[: min(left, len(block))]
                await response.write(piece)  # waits while the client does not read
                self.bytes_sent[request.path] += len(piece)
                left -= len(piece)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client stopped reading and closed: exactly what the test wants to see
        return response

    async def _truncated(
        self, request: web.Request, reply: Reply, payload: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        assert reply.truncate_at is not None
        response = web.StreamResponse(status=reply.status, headers=headers)
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: reply.truncate_at])
        await asyncio.sleep(0.05)  # let the client have the headers and the part before the close
        assert request.transport is not None
        request.transport.close()
        raise asyncio.CancelledError


class SilentServer:
    """Accepts TCP connections and never answers; ``async with SilentServer() as s: s.port``.

    With ``greeting`` set it sends those bytes on connect and then nothing (a non-HTTP service)."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.greeting:
            writer.write(self.greeting)

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def tls_server_context(
    *, not_after: dt.datetime | None = None
) -> tuple[ssl.SSLContext, trustme.CA]:
    """A server context with a trustme certificate for 127.0.0.1/localhost (not trusted by any client
    unless the CA is installed in it)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", not_after=not_after)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context, ca
