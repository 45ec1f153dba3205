"""``/api/silences``: list (GET), create (POST) and expire (DELETE /api/silences/{id}) silences.

Who may create and expire them is the HTTP server's business (monitor/write_guard.py: a bearer token, or
a loopback listen address), not this module's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alerts.rules import unknown_alert
from alerts.silences import ANY, Silence, new_silence
from integration_kit.durations import Duration

if TYPE_CHECKING:
    from alerts.inputs import ConfigView


class SilenceControl(Protocol):
    """What the API works on (the alert engine is one)."""

    @property
    def config(self) -> ConfigView: ...

    def now(self) -> float: ...

    async def list_silences(self) -> list[Silence]: ...

    async def add_silence(self, silence: Silence) -> None: ...

    async def expire_silence(self, silence_id: str) -> Silence | None: ...


log = logging.getLogger(__name__)


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    integration: str = Field(default=ANY, min_length=1, max_length=64)
    alert: str = Field(default=ANY, min_length=1, max_length=64)
    check: str | None = Field(default=None, max_length=64)
    duration: Duration | None = None
    ends_at: dt.datetime | None = None
    comment: str = Field(default="", max_length=500)
    created_by: str = Field(default="", max_length=100)

    @model_validator(mode="after")
    def _one_end(self) -> SilenceRequest:
        if (self.duration is None) == (self.ends_at is None):
            raise ValueError("give either duration (e.g. 2h) or ends_at (ISO 8601 with offset)")
        if self.ends_at is not None and self.ends_at.tzinfo is None:
            raise ValueError("ends_at needs a UTC offset, e.g. 2026-12-01T02:00:00Z")
        return self


def silence_json(silence: Silence, now: float) -> dict[str, Any]:
    return {**silence.to_dict(), "active": silence.active(now),
            "ends_at_iso": dt.datetime.fromtimestamp(silence.ends_at, dt.UTC).isoformat()}


def routes(control: SilenceControl) -> list[web.RouteDef]:
    async def list_silences(request: web.Request) -> web.Response:
        now = control.now()
        try:
            silences = await control.list_silences()
        except Exception as exc:
            return _store_down(exc)
        return web.json_response({"silences": [silence_json(s, now) for s in silences]})

    async def create(request: web.Request) -> web.Response:
        try:
            body = strict_json(await request.read())
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object, got {type(body).__name__}")
            req = SilenceRequest.model_validate(body)
        except ValidationError as exc:
            # pydantic's "Value error, " before our own validators' messages says nothing to a client
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            ]
            return web.json_response({"error": "; ".join(problems)}, status=400)
        except ValueError as exc:
            return web.json_response({"error": f"not a valid request body: {exc}"}, status=400)
        config = control.config
        if req.integration != ANY and req.integration not in config.integrations:
            return web.json_response({"error": f"unknown integration {req.integration!r}"}, status=400)
        if (problem := unknown_alert(req.alert)) is not None:  # a typo would mute nothing, silently
            return web.json_response({"error": problem}, status=400)
        now = control.now()
        duration = req.duration if req.duration is not None else req.ends_at.timestamp() - now  # type: ignore[union-attr]
        try:
            silence = new_silence(now=now, duration=duration, integration=req.integration, alert=req.alert,
                                  check=req.check, comment=req.comment, created_by=req.created_by)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            await control.add_silence(silence)
        except Exception as exc:
            return _store_down(exc)
        return web.json_response(silence_json(silence, now), status=201)

    async def expire(request: web.Request) -> web.Response:
        try:
            expired = await control.expire_silence(request.match_info["silence_id"])
        except Exception as exc:
            return _store_down(exc)
        if expired is None:
            return web.json_response({"error": "no such silence"}, status=404)
        return web.json_response(silence_json(expired, control.now()))

    return [
        web.get("/api/silences", list_silences),
        web.post("/api/silences", create),
        web.delete("/api/silences/{silence_id}", expire),
    ]


MAX_NESTING = 32


def strict_json(data: bytes) -> Any:
    """Standard JSON only: UTF-8, no NaN / Infinity (Python's json accepts them), nesting of at most
    MAX_NESTING levels. ValueError says what is wrong."""
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # the decoder recursed to Python's limit: it unwinds cleanly
        raise ValueError(f"nested deeper than {MAX_NESTING} levels") from None
    if _depth(value) > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (expected a number or a string)")


def _store_down(exc: Exception) -> web.Response:
    log.warning("silence store unavailable: %s", type(exc).__name__)
    return web.json_response({"error": "alert store unavailable (Redis down?)"}, status=503)


def add_routes(app: web.Application, control: SilenceControl) -> None:
    app.add_routes(routes(control))
