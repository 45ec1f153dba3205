"""A real HTTP server on 127.0.0.1 speaking Slack's Web API and incoming-webhook protocol.

Point slack-sdk at it with ``base_url=fake.api_url`` (``http://127.0.0.1:PORT/api/``) or use
``fake.webhook_url``. It keeps the messages it was sent (so chat.update of an unknown ts fails like
Slack's ``message_not_found``), checks the Block Kit limits Slack enforces (``invalid_blocks``), checks
the bot token (``invalid_auth``), records every request, and can be scripted to answer the next
requests with 429 + Retry-After, 5xx or ``ok: false`` errors, or to answer one late (``delay``, or
``hold``: once the test says so).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

TOKEN = "xoxb-1111-2222-fakeslacktoken"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A scripted answer. ``only`` limits it to one API method (e.g. "chat.update") or "webhook".

    ``Reply()`` (status 200, no error) lets that request through to normal handling.
    """

    status: int = 200
    error: str | None = None  # ok:false error (HTTP 200 unless status says otherwise)
    retry_after: str | None = None
    body: str | None = None  # raw body for 5xx (Slack sends HTML) or webhook error text
    only: str | None = None
    delay: float = 0.0  # seconds before answering (a send still under way while its sender is paused)
    hold: asyncio.Event | None = None  # answered once the test sets it (a send under way until then)


@dataclass(slots=True, kw_only=True)
class Recorded:
    kind: str  # API method name ("chat.postMessage") or "webhook"
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # monotonic
    answered: int = 0  # HTTP status sent back
    error: str | None = None  # ok:false error or scripted failure


@dataclass(slots=True)
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: int = 0


def block_kit_problems(blocks: Any) -> list[str]:
    """The limits Slack answers ``invalid_blocks`` for (the ones our builder must respect)."""
    if blocks is None:
        return []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    problems = []
    if len(blocks) > 50:
        problems.append(f"{len(blocks)} blocks > 50")
    for i, block in enumerate(blocks):
        kind = block.get("type")
        text = (block.get("text") or {}).get("text", "")
        if kind == "header" and not 0 < len(text) <= 150:
            problems.append(f"block {i}: header text {len(text)} chars")
        if kind == "section":
            fields = block.get("fields") or []
            if "text" in block and not 0 < len(text) <= 3000:
                problems.append(f"block {i}: section text {len(text)} chars")
            if not text and not fields:
                problems.append(f"block {i}: empty section")
            if len(fields) > 10:
                problems.append(f"block {i}: {len(fields)} fields")
            long_fields = [f for f in fields if not 0 < len(f["text"]) <= 2000]
            problems.extend(f"block {i}: field {len(f['text'])} chars" for f in long_fields)
        if kind == "context" and len(block.get("elements", [])) > 10:
            problems.append(f"block {i}: context elements")
    return problems


@dataclass
class FakeSlack:
    token: str = TOKEN
    requests: list[Recorded] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)
    script: deque[Reply] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _arrival: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, port: int = 0) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/services/{path:.*}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/services/T000/B000/webhooksecretXYZ"

    async def wait_requests(self, count: int) -> None:
        """Until at least ``count`` requests have arrived (wrap in a timeout)."""
        while len(self.requests) < count:
            self._arrival.clear()
            await self._arrival.wait()

    def then(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def calls(self, kind: str) -> list[Recorded]:
        return [r for r in self.requests if r.kind == kind]

    async def wait_calls(self, kind: str, count: int = 1) -> None:
        """Until at least ``count`` requests of ``kind`` (an API method) have arrived (wrap in a timeout)."""
        while len(self.calls(kind)) < count:
            await self.wait_requests(len(self.requests) + 1)

    def delivered(self, kind: str) -> list[Recorded]:
        return [r for r in self.requests if r.kind == kind and r.answered == 200 and r.error is None]

    def _scripted(self, kind: str) -> Reply | None:
        for reply in self.script:
            if reply.only in (None, kind):
                self.script.remove(reply)
                return reply
        return None

    @staticmethod
    def _failure(reply: Reply, *, webhook: bool) -> web.Response:
        headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
        if reply.status >= 500:
            return web.Response(status=reply.status, text=reply.body or "<html>oops</html>", content_type="text/html")
        if webhook:
            text = reply.body or ("rate_limited" if reply.status == 429 else reply.error or "invalid_payload")
            return web.Response(status=reply.status, text=text, headers=headers)
        error = reply.error or ("ratelimited" if reply.status == 429 else "unknown")
        return web.json_response({"ok": False, "error": error}, status=reply.status, headers=headers)

    async def _read(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if request.content_type == "application/json":
            return dict(json.loads(raw or b"{}"))
        return dict(parse_qsl(raw.decode()))

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._read(request)
        record = Recorded(kind=method, body=body, headers=dict(request.headers), at=time.monotonic())
        self.requests.append(record)
        self._arrival.set()
        reply = self._scripted(method)
        if reply is not None and reply.delay:
            await asyncio.sleep(reply.delay)
        if reply is not None and reply.hold is not None:
            await reply.hold.wait()
        if reply is not None and (reply.status != 200 or reply.error is not None):
            record.answered, record.error = reply.status, reply.error or f"scripted {reply.status}"
            return self._failure(reply, webhook=False)
        record.answered = 200
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            record.error = "invalid_auth" if "Authorization" in request.headers else "not_authed"
            return web.json_response({"ok": False, "error": record.error})
        result = self._method(method, body)
        record.error = result.get("error")
        return web.json_response(result)

    def _method(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "team": "Fake", "user": "monitor", "team_id": "T000", "user_id": "U000"}
        if method not in ("chat.postMessage", "chat.update"):
            return {"ok": False, "error": "unknown_method"}
        blocks = body.get("blocks")
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        if block_kit_problems(blocks):
            return {"ok": False, "error": "invalid_blocks", "errors": block_kit_problems(blocks)}
        if not body.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        channel = str(body.get("channel", ""))
        if channel in ("", "#nope"):
            return {"ok": False, "error": "channel_not_found"}
        channel_id = channel if channel.startswith("C") else "C123"
        if method == "chat.postMessage":
            thread_ts = body.get("thread_ts")
            if thread_ts is not None and thread_ts not in self.messages:
                return {"ok": False, "error": "thread_not_found"}
            ts = f"{1700000000 + next(self._ts)}.000100"
            self.messages[ts] = Message(channel_id, ts, str(body.get("text", "")), blocks or [], thread_ts)
            return {"ok": True, "channel": channel_id, "ts": ts, "message": {"text": body.get("text")}}
        message = self.messages.get(str(body.get("ts")))
        if message is None or message.channel != channel_id:
            return {"ok": False, "error": "message_not_found"}
        message.text, message.blocks = str(body.get("text", "")), blocks or []
        message.updates += 1
        return {"ok": True, "channel": channel_id, "ts": message.ts, "text": message.text}

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        record = Recorded(kind="webhook", body=body, headers=dict(request.headers), at=time.monotonic())
        self.requests.append(record)
        self._arrival.set()
        reply = self._scripted("webhook")
        if reply is not None and (reply.status != 200 or reply.error is not None):
            record.answered, record.error = reply.status, reply.error or f"scripted {reply.status}"
            return self._failure(reply, webhook=True)
        problems = block_kit_problems(body.get("blocks"))
        record.answered = 400 if problems else 200
        if problems:
            record.error = "invalid_blocks"
            return web.Response(status=400, text="invalid_blocks")
        return web.Response(text="ok")
