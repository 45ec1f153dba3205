"""The daemon's HTTP API facing clients it cannot trust: who may write (monitor/write_guard.py), what a
malformed request costs in the log, and what /api/status shows with ``monitor.status_details: false``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from daemon_support import CANARY_QUERY, daemon_config, get, route_target, runs
from needs import free_port
from targets import Reply, Target
from waiting import until

from integration_kit.redact import MASK, Redactor
from monitor.app import App
from monitor.logs import setup_logging
from monitor.server import HttpServer
from monitor.settings import parse_config
from monitor.write_guard import is_loopback

TOKEN = "api-token-5d1e9c"


class Stub:
    """The least a server needs from the app."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.metrics: Any = None
        self.redactor = Redactor()
        self.writes = 0

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    def readiness(self) -> tuple[bool, list[str]]:
        return True, []

    def status_document(self) -> dict[str, Any]:
        return {}

    def api_token(self) -> str | None:
        return self.token

    def routes(self) -> list[web.RouteDef]:
        async def write(request: web.Request) -> web.Response:
            self.writes += 1
            return web.json_response({"written": True}, status=201)

        async def read(request: web.Request) -> web.Response:
            return web.json_response({"writes": self.writes})

        return [web.post("/api/thing", write), web.delete("/api/thing", write), web.get("/api/thing", read)]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    setup_logging(Redactor([TOKEN]), stream=stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


async def serve(stub: Stub, host: str) -> HttpServer:
    server = HttpServer(stub, host, free_port(), stub.routes())
    await server.start()
    return server


async def call(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def open_to_all() -> AsyncIterator[tuple[Stub, str]]:
    """Listening on every address (the default 0.0.0.0), reached here through 127.0.0.1."""
    stub = Stub(token=None)
    server = await serve(stub, "0.0.0.0")
    try:
        yield stub, f"http://127.0.0.1:{server.port}/api/thing"
    finally:
        await server.close()


async def test_writes_are_refused_without_a_token_on_a_public_address(
    log_stream: io.StringIO, open_to_all: tuple[Stub, str]
) -> None:
    """Finding 4: POST/DELETE /api/silences were open to anyone reaching port 9478 (default 0.0.0.0)."""
    stub, url = open_to_all
    for method in ("POST", "DELETE"):
        status, body = await call(method, url)
        assert status == 403 and "monitor.api_token is not set" in body["error"] and "127.0.0.1" in body["error"]
    assert stub.writes == 0
    assert (await call("GET", url)) == (200, {"writes": 0})  # reads stay open
    assert "POST/DELETE on /api/* are refused: monitor.api_token is not set" in log_stream.getvalue()


async def test_a_token_protects_writes_on_any_address(log_stream: io.StringIO) -> None:
    stub = Stub(token=TOKEN)
    server = await serve(stub, "0.0.0.0")
    url = f"http://127.0.0.1:{server.port}/api/thing"
    try:
        assert (await call("POST", url))[0] == 401
        assert (await call("POST", url, {"Authorization": "Bearer wrong"}))[0] == 401
        assert (await call("POST", url, {"Authorization": TOKEN}))[0] == 401  # the scheme is part of it
        assert (await call("POST", url, {"Authorization": f"Bearer {TOKEN}"}))[0] == 201
        stub.token = "rotated-by-a-reload"
        assert (await call("DELETE", url, {"Authorization": f"Bearer {TOKEN}"}))[0] == 401
    finally:
        await server.close()
    assert stub.writes == 1
    assert "need monitor.api_token" in log_stream.getvalue() and TOKEN not in log_stream.getvalue()


async def test_loopback_listener_allows_local_writes_without_a_token() -> None:
    stub = Stub(token=None)
    server = await serve(stub, "127.0.0.1")
    try:
        assert (await call("POST", f"http://127.0.0.1:{server.port}/api/thing"))[0] == 201
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("monitor.internal", False)],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_the_daemon_refuses_a_silence_from_anyone_by_default(target: Target) -> None:
    """The real app with its real components, listening as the default config does (0.0.0.0)."""
    route_target(target)
    app = App(parse_config(daemon_config(target), env={}), listen=f"0.0.0.0:{free_port()}")
    await app.start()
    try:
        url = f"http://127.0.0.1:{app.server.port}/api/silences"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"duration": "1h", "comment": "mute everything"}) as resp:
                assert resp.status == 403
            async with session.get(url) as resp:
                assert resp.status == 200 and (await resp.json())["silences"] == []
    finally:
        await app.close()


async def test_malformed_http_is_one_log_line_not_a_traceback(
    log_stream: io.StringIO, open_to_all: tuple[Stub, str]
) -> None:
    """Finding 8: a bad chunk size got its 400 but aiohttp logged a full traceback at ERROR."""
    _, url = open_to_all
    port = int(url.split(":")[2].split("/")[0])
    answers = []
    for raw in (
        b"POST /api/thing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
        f"GET /api/thing HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x01\r\n\r\n".encode(),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        answers.append((await reader.read(100)).split(b"\r\n", 1)[0])
        writer.close()
        await writer.wait_closed()
    assert answers == [b"HTTP/1.0 400 Bad Request"] * 2
    await until(lambda: log_stream.getvalue().count("malformed HTTP request") == 2, "two log lines")
    logs = log_stream.getvalue()
    assert "malformed HTTP request from 127.0.0.1 answered 400: Invalid character in chunk size" in logs
    assert "Traceback" not in logs and "ERROR" not in logs and TOKEN not in logs
    assert len([line for line in logs.splitlines() if "malformed" in line]) == 2


async def test_status_details_switch_hides_excerpts_request_details_and_key_names(target: Target) -> None:
    route_target(target)
    config = daemon_config(target).replace("  shutdown_grace: 2s", "  shutdown_grace: 2s\n  status_details: false")
    app = App(parse_config(config, env={}), components=[])
    await app.start()
    try:
        await until(lambda: runs(app, "shop", "broken"), "a run of shop/broken")
        doc = json.loads((await get(f"{app.server.url}/api/status"))[2])
    finally:
        await app.close()
    failure = doc["integrations"]["shop"]["checks"]["broken"]["last_failure"]
    assert failure["error_class"] == "http_5xx" and failure["detail"].startswith("http_5xx: 500")
    assert failure["response_excerpt"] is None
    assert failure["request"]["headers"] is None and failure["request"]["body_excerpt"] is None
    assert failure["request"]["method"] == "GET" and "/broken" in failure["request"]["url"]


async def test_status_stays_json_when_an_error_body_repeats_a_credential_url(target: Target) -> None:
    """A vendor's JSON error body that repeats the request URL (``api_key=…`` inside a JSON string): the
    document is masked as a whole after it is serialised, and must still parse."""
    target.route("/echo", Reply(status=500, echo=True))
    config = f"""
monitor: {{listen: "127.0.0.1:0", jitter: 0, shutdown_grace: 2s}}
integrations:
  shop:
    checks:
      - {{name: echo, kind: http, url: "{target.url('/echo')}?api_key={CANARY_QUERY}", interval: 200ms, timeout: 2s}}
"""
    app = App(parse_config(config, env={}), components=[])
    await app.start()
    try:
        await until(lambda: runs(app, "shop", "echo"), "a run of shop/echo")
        text = (await get(f"{app.server.url}/api/status"))[2]
        one = (await get(f"{app.server.url}/api/status/shop/echo"))[2]
    finally:
        await app.close()
    assert CANARY_QUERY not in text + one
    for shown in (json.loads(text)["integrations"]["shop"]["checks"]["echo"], json.loads(one)):
        assert f'"query_string": "api_key={MASK}"' in shown["last_failure"]["response_excerpt"]
