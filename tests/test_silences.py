"""Silences: matching and expiry, persistence in the shared Redis, the `silence` command (add, list,
expire) and /api/silences (GET, POST, DELETE, bearer token)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from alerts.api import add_routes
from alerts.engine import AlertEngine
from alerts.model import Alert, AlertStatus, Severity
from alerts.silences import Silence, expire, from_config, new_silence, silenced_by, stale
from alerts.store import AlertStore
from integration_kit.redact import Redactor
from monitor.cli import main
from monitor.metrics import Metrics
from monitor.settings import parse_config
from monitor.write_guard import write_guard

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = 1_800_000_000.0


def alert(integration: str = "acme", name: str = "probe_down", check: str | None = "api") -> Alert:
    return Alert(key=f"{integration}/{name}/{check}/critical", integration=integration, alert=name,
                 severity=Severity.CRITICAL, status=AlertStatus.FIRING, summary="x", check=check)


def test_matching_and_expiry() -> None:
    s = new_silence(now=T0, duration=600, integration="acme", alert="probe_down")
    assert s.active(T0) and s.active(T0 + 599) and not s.active(T0 + 600)
    assert s.matches(alert()) and not s.matches(alert(integration="other")) and not s.matches(alert(name="quota"))
    assert new_silence(now=T0, duration=1).matches(alert(integration="zeta", name="latency"))  # * and *
    only_check = new_silence(now=T0, duration=60, integration="acme", check="api")
    assert only_check.matches(alert()) and not only_check.matches(alert(check="other"))
    assert silenced_by(alert(), [s], T0 + 10) == s
    assert silenced_by(alert(), [s], T0 + 700) is None
    ended = expire(s, T0 + 60)
    assert ended.ends_at == T0 + 60 and not ended.active(T0 + 61)
    assert expire(ended, T0 + 500).ends_at == T0 + 60  # expiring twice keeps the first end
    assert not stale(ended, T0 + 3600) and stale(ended, T0 + 2 * 86400)
    with pytest.raises(ValueError, match="positive duration"):
        new_silence(now=T0, duration=0)
    assert Silence.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_config_silences() -> None:
    cfg = parse_config(yaml.safe_dump({"alerting": {"silences": [
        {"integration": "acme", "alert": "quota", "ends_at": "2027-02-01T00:00:00Z", "comment": "known"}]}}))
    (s,) = from_config(cfg.alerting.silences)
    assert s.id == "config-0" and s.alert == "quota" and s.active(T0)  # T0 is 2027-01-15 08:00 UTC
    assert not s.active(s.ends_at)


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"test:silences:{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=value + "*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_store_roundtrip_in_redis(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        store = AlertStore(client, prefix)
        a = new_silence(now=T0, duration=60, integration="acme", comment="deploy")
        b = new_silence(now=T0 + 1, duration=60, alert="quota")
        await store.put_silence(a)
        await store.put_silence(b)
        assert await store.load_silences() == [a, b]
        await store.delete_silences([a.id])
        assert await store.load_silences() == [b]
        assert await client.exists(prefix + "silences") == 1
    finally:
        await client.aclose()


def write_config(tmp_path: Path, prefix: str, redis_url: str | None = REDIS_URL) -> Path:
    raw: dict[str, Any] = {
        "integrations": {"acme": {"checks": [{"name": "api", "kind": "http", "url": "https://acme.test/x"}]}},
        "alerting": {"key_prefix": prefix},
    }
    if redis_url:
        raw["monitor"] = {"redis_url": redis_url}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_silence_command_add_list_expire(tmp_path: Path, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config(tmp_path, prefix))
    assert main(["silence", "add", "-c", path, "--integration", "acme", "--alert", "probe_down",
                 "--duration", "2h", "--comment", "vendor maintenance", "--by", "ops"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("silence ") and "integration=acme alert=probe_down" in out
    silence_id = out.split()[1]

    assert main(["silence", "list", "-c", path]) == 0
    out = capsys.readouterr().out
    assert silence_id in out and "active" in out and "by ops" in out and "# vendor maintenance" in out

    assert main(["silence", "list", "-c", path, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == silence_id and listed["active"] is True
    assert listed["ends_at"] - listed["starts_at"] == 7200

    assert main(["silence", "expire", "-c", path, silence_id]) == 0
    assert main(["silence", "list", "-c", path]) == 0
    assert "no active silences" in capsys.readouterr().out
    assert main(["silence", "list", "-c", path, "--all"]) == 0
    assert "expired" in capsys.readouterr().out
    assert main(["silence", "expire", "-c", path, "nope"]) == 1


def test_silence_command_rejects_bad_input(tmp_path: Path, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write_config(tmp_path, prefix))
    assert main(["silence", "add", "-c", path, "--integration", "nosuch", "--duration", "1h"]) == 2
    assert "unknown integration 'nosuch' (configured: acme)" in capsys.readouterr().err
    assert main(["silence", "add", "-c", path, "--alert", "typo", "--duration", "1h"]) == 2
    assert "unknown alert 'typo'" in capsys.readouterr().err
    assert main(["silence", "add", "-c", path, "--duration", "soon"]) == 2
    assert "--duration" in capsys.readouterr().err
    no_redis = str(write_config(tmp_path, prefix, redis_url=None))
    assert main(["silence", "list", "-c", no_redis]) == 2
    assert "POST /api/silences" in capsys.readouterr().err


@pytest.fixture
async def api(prefix: str) -> AsyncIterator[tuple[TestClient[Any, Any], AlertEngine]]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    cfg = parse_config(yaml.safe_dump({
        "integrations": {"acme": {}},
        "monitor": {"api_token": "tok-123456"},
        "alerting": {"key_prefix": prefix},
    }), env={})
    engine = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(cfg.secret_values()), redis=client,
                         clock=lambda: T0, autorun=False)
    await engine.start()
    app = web.Application(middlewares=[write_guard(lambda: "tok-123456", host="127.0.0.1")])  # as the daemon's
    add_routes(app, engine)
    http = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await http.start_server()
    try:
        yield http, engine
    finally:
        await http.close()
        await engine.close()
        await client.aclose()


AUTH = {"Authorization": "Bearer tok-123456"}


async def test_http_api_create_list_expire(api: tuple[TestClient[Any, Any], AlertEngine]) -> None:
    http, engine = api
    resp = await http.post("/api/silences", json={"integration": "acme", "alert": "quota", "duration": "30m",
                                                  "comment": "batch import"}, headers=AUTH)
    assert resp.status == 201
    created = await resp.json()
    assert created["active"] is True and created["ends_at"] == T0 + 1800 and created["alert"] == "quota"

    resp = await http.get("/api/silences")
    assert resp.status == 200
    assert [s["id"] for s in (await resp.json())["silences"]] == [created["id"]]
    # The engine sees it at once (and would after a restart: it is in the store).
    assert silenced_by(alert(name="quota"), engine.silences, T0 + 1) is not None
    assert [s.id for s in await engine.store.load_silences()] == [created["id"]]

    resp = await http.delete(f"/api/silences/{created['id']}", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["active"] is False
    resp = await http.delete("/api/silences/nope", headers=AUTH)
    assert resp.status == 404


async def test_http_api_validates_and_needs_the_token(api: tuple[TestClient[Any, Any], AlertEngine]) -> None:
    http, _ = api
    resp = await http.post("/api/silences", json={"integration": "acme", "duration": "1h"})
    assert resp.status == 401
    resp = await http.post("/api/silences", json={"integration": "acme", "duration": "1h"},
                           headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await http.post("/api/silences", json={"integration": "acme"}, headers=AUTH)
    assert resp.status == 400 and "either duration" in (await resp.json())["error"]
    resp = await http.post("/api/silences", json={"integration": "nosuch", "duration": "1h"}, headers=AUTH)
    assert resp.status == 400 and "unknown integration" in (await resp.json())["error"]
    resp = await http.post("/api/silences", json={"integration": "acme", "duration": "1h", "extra": 1}, headers=AUTH)
    assert resp.status == 400 and "extra" in (await resp.json())["error"]
    resp = await http.post("/api/silences", data=b"not json", headers=AUTH)
    assert resp.status == 400
    resp = await http.post("/api/silences", json={"ends_at": "2027-01-15T09:00:00+00:00"}, headers=AUTH)
    assert resp.status == 201
    resp = await http.delete("/api/silences/x")
    assert resp.status == 401
