"""Silences: matching and expiry, persistence in the shared Redis, the `silence` command (add, list,
expire) and /api/silences (GET, POST, DELETE, bearer token)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_servers import SHARED_REDIS

from alerts.api import add_routes
from alerts.engine import AlertEngine
from alerts.model import Alert, AlertStatus, Severity
from alerts.silences import Silence, expire, from_config, new_silence, silenced_by, stale
from alerts.store import AlertStore
from integration_kit.redact import Redactor
from monitor.cli import main
from monitor.metrics import Metrics
from monitor.settings import ConfigError, parse_config
from monitor.write_guard import write_guard

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
    cfg = parse_config(yaml.safe_dump({"integrations": {"acme": {}}, "alerting": {"silences": [
        {"integration": "acme", "alert": "quota", "ends_at": "2027-02-01T00:00:00Z", "comment": "known"}]}}))
    (s,) = from_config(cfg.alerting.silences)
    assert s.id == "config-0" and s.alert == "quota" and s.active(T0)  # T0 is 2027-01-15 08:00 UTC
    assert not s.active(s.ends_at)


def test_config_silences_naming_nothing_are_config_errors() -> None:
    # A typo in a config-file silence would mute nothing, silently: said with its path, as the silence command
    # and /api/silences say it.
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_dump({"integrations": {"acme": {}}, "alerting": {"silences": [
            {"integration": "acme", "alert": "webhook_duplicates", "ends_at": "2027-02-01T00:00:00Z"},
            {"integration": "acmee", "alert": "qouta", "ends_at": "2027-02-01T00:00:00Z"},
            {"alert": "monitor_redis_down", "ends_at": "2027-02-01T00:00:00Z"},
        ]}}))
    assert [(path, message.split(" (")[0]) for path, message in raised.value.problems] == [
        ("alerting.silences[1].integration", "unknown integration 'acmee'"),
        ("alerting.silences[1].alert", "unknown alert 'qouta'"),
    ]


async def test_store_roundtrip_in_redis(shared_redis: redis.asyncio.Redis, prefix: str) -> None:
    store = AlertStore(shared_redis, prefix)
    a = new_silence(now=T0, duration=60, integration="acme", comment="deploy")
    b = new_silence(now=T0 + 1, duration=60, alert="quota")
    await store.put_silence(a)
    await store.put_silence(b)
    assert await store.load_silences() == [a, b]
    await store.delete_silences([a.id])
    assert await store.load_silences() == [b]
    assert await shared_redis.exists(prefix + "silences") == 1


def write_config(tmp_path: Path, prefix: str, redis_url: str | None = SHARED_REDIS) -> Path:
    raw: dict[str, Any] = {
        "integrations": {"acme": {"checks": [{"name": "api", "kind": "http", "url": "https://acme.test/x"}]}},
        "alerting": {"key_prefix": prefix},
    }
    if redis_url:
        raw["monitor"] = {"redis_url": redis_url}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_silence_command_add_list_expire(
    tmp_path: Path, shared_redis: redis.asyncio.Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_silence_command_rejects_bad_input(
    tmp_path: Path, shared_redis: redis.asyncio.Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(write_config(tmp_path, prefix))
    assert main(["silence", "add", "-c", path, "--integration", "nosuch", "--duration", "1h"]) == 2
    assert "unknown integration 'nosuch' (configured: acme)" in capsys.readouterr().err
    assert main(["silence", "add", "-c", path, "--alert", "typo", "--duration", "1h"]) == 2
    assert "unknown alert 'typo'" in capsys.readouterr().err
    # Every alert the rules raise can be silenced: webhook_silence raises webhook_duplicates too.
    assert main(["silence", "add", "-c", path, "--alert", "webhook_duplicates", "--duration", "1h"]) == 0
    assert "alert=webhook_duplicates" in capsys.readouterr().out
    assert main(["silence", "add", "-c", path, "--duration", "soon"]) == 2
    assert "--duration" in capsys.readouterr().err
    no_redis = str(write_config(tmp_path, prefix, redis_url=None))
    assert main(["silence", "list", "-c", no_redis]) == 2
    assert "POST /api/silences" in capsys.readouterr().err


@pytest.fixture
async def api(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> AsyncIterator[tuple[TestClient[Any, Any], AlertEngine]]:
    cfg = parse_config(yaml.safe_dump({
        "integrations": {"acme": {}},
        "monitor": {"api_token": "tok-123456"},
        "alerting": {"key_prefix": prefix},
    }), env={})
    engine = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(cfg.secret_values()), redis=shared_redis,
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
    assert resp.status == 400
    assert (await resp.json())["error"] == "body: give either duration (e.g. 2h) or ends_at (ISO 8601 with offset)"
    resp = await http.post("/api/silences", json={"duration": "soon"}, headers=AUTH)  # said as the config says it
    assert (await resp.json())["error"] == "duration: expected a duration like 500ms, 30s, 5m or 4h, got 'soon'"
    resp = await http.post("/api/silences", json={"integration": "nosuch", "duration": "1h"}, headers=AUTH)
    assert resp.status == 400 and "unknown integration" in (await resp.json())["error"]
    # An alert no rule raises would mute nothing, silently: refused as the silence command refuses it.
    resp = await http.post("/api/silences", json={"alert": "probe-down", "duration": "1h"}, headers=AUTH)
    assert resp.status == 400 and "unknown alert 'probe-down'" in (await resp.json())["error"]
    resp = await http.post("/api/silences", json={"alert": "webhook_duplicates", "duration": "1h"}, headers=AUTH)
    assert resp.status == 201
    resp = await http.post("/api/silences", json={"alert": "monitor_redis_down", "duration": "1h"}, headers=AUTH)
    assert resp.status == 201
    resp = await http.post("/api/silences", json={"integration": "acme", "duration": "1h", "extra": 1}, headers=AUTH)
    assert resp.status == 400 and "extra" in (await resp.json())["error"]
    resp = await http.post("/api/silences", data=b"not json", headers=AUTH)
    assert resp.status == 400
    resp = await http.post("/api/silences", json={"ends_at": "2027-01-15T09:00:00+00:00"}, headers=AUTH)
    assert resp.status == 201
    resp = await http.delete("/api/silences/x")
    assert resp.status == 401


# --- hostile request bodies and damaged records (issue 12, finding 5) ----------------------------------


async def post_raw(http: TestClient[Any, Any], body: str | bytes) -> tuple[int, dict[str, Any]]:
    resp = await http.post("/api/silences", data=body, headers={**AUTH, "Content-Type": "application/json"})
    return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{"duration": NaN}', "NaN is not JSON"),
        ('{"duration": Infinity}', "Infinity is not JSON"),
        ('{"duration": -Infinity}', "-Infinity is not JSON"),
        ('{"duration": 1e308}', "between 0s and 365d"),
        ('{"duration": 1e999}', "between 0s and 365d"),  # the float parser's own infinity
        ('{"duration": "4000000d"}', "between 0s and 365d"),
        ('{"ends_at": "9999-12-31T00:00:00Z"}', "at most 365d"),
        ('{"duration": "1h", "comment": NaN}', "NaN is not JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than"),
        ('{"duration": "1h", "comment": ' + "[" * 40 + "]" * 40 + "}", "nested deeper than"),
        ('["duration", "1h"]', "expected a JSON object"),
        (b'{"duration": "1h", "comment": "\xff"}', "utf-8"),
    ],
    ids=["nan", "inf", "-inf", "1e308", "1e999", "4000000d", "year-9999", "nan-elsewhere", "deep", "deep-field",
         "array", "not-utf8"],
)
async def test_http_api_refuses_what_it_cannot_honour_and_stores_nothing(
    api: tuple[TestClient[Any, Any], AlertEngine], body: str, says: str
) -> None:
    """NaN, Infinity, 1e308 and 4000000d used to answer 500 *and* store an active silence that muted every
    alert and broke GET /api/silences for good; deep nesting answered 500."""
    http, engine = api
    status, answer = await post_raw(http, body)
    assert status == 400 and says in answer["error"], answer
    assert await engine.store.load_silences() == []
    resp = await http.get("/api/silences")
    assert resp.status == 200 and (await resp.json())["silences"] == []
    assert silenced_by(alert(), engine.silences, T0 + 1) is None


async def test_a_stored_record_that_cannot_be_read_is_skipped_logged_once_and_expirable(
    api: tuple[TestClient[Any, Any], AlertEngine], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    http, engine = api
    resp = await http.post("/api/silences", json={"integration": "acme", "duration": "1h"}, headers=AUTH)
    good = (await resp.json())["id"]
    damaged = {
        "nan": '{"id": "nan", "starts_at": 1800000000, "ends_at": NaN}',  # what the 500 used to leave behind
        "inf": '{"id": "inf", "starts_at": 1800000000, "ends_at": 1e999}',
        "huge": '{"id": "huge", "starts_at": 1800000000, "ends_at": 1e308}',
        "garbage": "not json at all",
        "list": "[1, 2]",
        "deep": "[" * 5000 + "]" * 5000,
        "missing": '{"id": "missing"}',
    }
    raw = redis.Redis.from_url(SHARED_REDIS)
    raw.hset(prefix + "silences", mapping=damaged)
    raw.close()
    for _ in range(3):  # the engine and the API read the store again and again: one warning per record
        resp = await http.get("/api/silences")
        assert resp.status == 200 and [s["id"] for s in (await resp.json())["silences"]] == [good]
        await engine.silence_book.reload()
    warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert sorted(r.getMessage().split("'")[1] for r in warnings) == sorted(damaged)
    assert [s.id for s in engine.silence_book.stored] == [good]
    for silence_id in damaged:
        resp = await http.delete(f"/api/silences/{silence_id}", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["active"] is False, silence_id
    raw = redis.Redis.from_url(SHARED_REDIS)
    assert set(raw.hkeys(prefix + "silences")) == {good.encode()}
    raw.close()
    assert (await http.delete(f"/api/silences/{good}", headers=AUTH)).status == 200


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
    st.sampled_from(["1h", "30m", "0s", "-1s", "365d", "366d", "*", "acme", "nosuch", "probe_down",
                     "2027-01-15T09:00:00+00:00", "2027-01-15T09:00:00", "9999-12-31T23:59:59Z"]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
FIELDS = st.sampled_from(["integration", "alert", "check", "duration", "ends_at", "comment", "created_by", "x"])
REQUESTS = st.one_of(
    JSON_VALUES,
    st.dictionaries(FIELDS, JSON_VALUES, max_size=5),  # near a valid request, to reach every validator
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=REQUESTS, raw=st.booleans())
async def test_any_json_body_is_2xx_or_4xx_and_the_state_stays_listable(
    api: tuple[TestClient[Any, Any], AlertEngine], request: Any, raw: bool
) -> None:
    http, _ = api
    body = json.dumps(request) if not raw else json.dumps(request, allow_nan=True).replace("0", "NaN", 1)
    status, answer = await post_raw(http, body)
    assert status in (201, 400), (status, answer)
    resp = await http.get("/api/silences")
    assert resp.status == 200
    for silence in (await resp.json())["silences"]:
        # One the loop below expired in an earlier example is still listed (for a day), ending when it began:
        # the fixture's clock stands still.
        lasts = silence["ends_at"] - silence["starts_at"]
        assert (lasts > 0 if silence["active"] else lasts >= 0) and lasts <= 365 * 86400, silence
        if silence["active"]:
            assert (await http.delete(f"/api/silences/{silence['id']}", headers=AUTH)).status == 200


def test_silence_command_lists_around_and_expires_a_record_it_cannot_read(
    tmp_path: Path, shared_redis: redis.asyncio.Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(write_config(tmp_path, prefix))
    raw = redis.Redis.from_url(SHARED_REDIS)
    raw.hset(prefix + "silences", "broken", '{"id": "broken", "starts_at": 0, "ends_at": NaN}')
    assert main(["silence", "list", "-c", path, "--all"]) == 0
    assert "no silences" in capsys.readouterr().out
    assert main(["silence", "expire", "-c", path, "broken"]) == 0
    assert "silence broken expired (its stored record could not be read: removed)" in capsys.readouterr().out
    assert raw.hkeys(prefix + "silences") == []
    raw.close()
