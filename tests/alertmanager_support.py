"""A real Alertmanager for the tests (Debian's ``prometheus-alertmanager``), on free loopback ports with its
cluster listener off, whose only receiver is a webhook into a loopback sink (a ``Target``) that records
every notification; plus an authenticating reverse proxy, as teams put in front of Alertmanager.

Fails under CI when the binary is missing (scripts/test installs it) and skips visibly elsewhere.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from needs import free_port, need_binary
from prometheus_client.parser import text_string_to_metric_families
from targets import Hit, Reply, Target
from waiting import until

HOOK = "/hook"


def alertmanager_binary() -> str:
    return need_binary("prometheus-alertmanager", "Debian package `prometheus-alertmanager`")


def amtool_binary() -> str:
    return need_binary("amtool", "Debian package `prometheus-alertmanager`")


def routing_config(sink_url: str, *, group_by: str = "[alertname, integration, check]") -> str:
    """Short timings so a test sees a notification within about a second of the alert arriving."""
    return f"""
route:
  receiver: sink
  group_by: {group_by}
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
    webhook_configs:
      - url: "{sink_url}"
        send_resolved: true
"""


@dataclass(frozen=True, slots=True)
class Notified:
    """One webhook notification as the sink got it."""

    status: str  # firing / resolved
    alerts: list[dict[str, Any]]
    raw: bytes

    @classmethod
    def of(cls, hit: Hit) -> Notified:
        doc = json.loads(hit.body)
        return cls(status=doc["status"], alerts=doc["alerts"], raw=hit.body)

    def alert_statuses(self) -> list[tuple[str, str]]:
        return [(a["labels"].get("check", ""), a["status"]) for a in self.alerts]


class Alertmanager:
    """``async with Alertmanager(tmp, sink) as am``; ``await am.stop()`` / ``await am.start()`` to take it
    away and bring it back on the same port (its storage directory, hence its notification log, is kept)."""

    def __init__(self, workdir: Path, sink: Target, *, web_config: str | None = None, group_by: str | None = None):
        self.binary = alertmanager_binary()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        sink.route(HOOK, Reply(status=200))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "alertmanager.yml"
        kwargs = {"group_by": group_by} if group_by else {}
        self.config.write_text(routing_config(sink.url(HOOK), **kwargs))
        self.web_config: Path | None = None
        if web_config is not None:
            self.web_config = workdir / "web.yml"
            self.web_config.write_text(web_config)
        self.proc: asyncio.subprocess.Process | None = None
        self.log = b""

    async def __aenter__(self) -> Alertmanager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        args = [
            f"--config.file={self.config}", f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn",
        ]
        if self.web_config is not None:
            args.append(f"--web.config.file={self.web_config}")
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        await until(self._ready, "alertmanager to be ready")

    async def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:  # it exited: no use waiting on
            err = (await self.proc.communicate())[1].decode(errors="replace")
            raise AssertionError(f"alertmanager exited with {self.proc.returncode}: {err}")
        try:
            status, _ = await self.get("/-/ready")
        except (aiohttp.ClientError, OSError):
            return False
        return status in (200, 401)  # 401: up, behind its own basic auth

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 15)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
        self.log += err or b""

    async def get(self, path: str, *, auth: str | None = None) -> tuple[int, Any]:
        """``auth``: an Authorization header value (Alertmanager behind its own basic auth)."""
        headers = {"Authorization": auth} if auth else None
        async with aiohttp.ClientSession() as session, session.get(self.url + path, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def alerts(self, *, auth: str | None = None, active_only: bool = False) -> list[dict[str, Any]]:
        """What Alertmanager holds (GET /api/v2/alerts), resolved ones included unless ``active_only``."""
        query = "" if active_only else "?active=true&silenced=true&inhibited=true&unprocessed=true"
        status, doc = await self.get("/api/v2/alerts" + query, auth=auth)
        assert status == 200, (status, doc)
        assert isinstance(doc, list)
        return doc

    async def webhook_notifies_ended(self) -> float:
        """How many webhook notifications Alertmanager has seen through (its notification latency histogram's
        count). It observes one as the webhook call returns, in the step just before the one that writes the
        notification to its log (nflog): once the sink has a notification and this has counted it, taking
        Alertmanager away keeps the notification in the log it saves on shutdown. The sink alone is not
        enough: Alertmanager could be stopped between the sink's answer and the log, and notify again once
        back."""
        status, text = await self.get("/metrics")
        assert status == 200, status
        for family in text_string_to_metric_families(text):
            if family.name == "alertmanager_notification_latency_seconds":
                for sample in family.samples:
                    if sample.name.endswith("_count") and sample.labels.get("integration") == "webhook":
                        return sample.value
        return 0.0

    def notifications(self) -> list[Notified]:
        return [Notified.of(hit) for hit in self.sink.hits(HOOK)]


class AuthProxy:
    """A reverse proxy in front of Alertmanager that wants ``Authorization: Bearer <token>`` (as an
    oauth2-proxy or an ingress would) and records every request it was sent."""

    def __init__(self, upstream: str, token: str) -> None:
        self.upstream = upstream
        self.token = token
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> AuthProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused += 1
            return web.Response(status=401, text="unauthorized")
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream + request.path_qs, data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type=resp.content_type)
