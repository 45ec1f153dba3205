"""App lifecycle: components in order, result fan-out isolation, Redis services, reload, log redaction."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
import logging
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from daemon_support import (
    CANARY_HEADER,
    CANARY_QUERY,
    CANARY_URL,
    assert_no_canary,
    daemon_config,
    get,
    on_shared_redis,
    route_target,
    runs,
    samples,
    write,
)
from targets import Reply, Target, closed_port, tls_server_context
from waiting import until

from alerts.notifiers import PLUGINS
from checks.http import HttpCheckConfig
from integration_kit.results import CheckResult
from monitor import app as app_module
from monitor import job_sync
from monitor.app import App, secrets_of
from monitor.component import Services
from monitor.logs import setup_logging
from monitor.settings import load_config, parse_config


class Recording:
    """A component that records what the app did to it, in a log shared by all instances."""

    def __init__(self, name: str, log: list[str], *, fail_start: bool = False, fail_result: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.fail_result = fail_result
        self.results: list[CheckResult] = []
        self.configs: list[Any] = []
        self.services: Services | None = None

    def factory(self, services: Services) -> Recording:
        self.services = services
        self.log.append(f"build {self.name}")
        return self

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")

    def on_result(self, result: CheckResult) -> None:
        self.results.append(result)
        if self.fail_result:
            raise ValueError(f"bug in {self.name} handling {CANARY_HEADER}")

    def on_config(self, config: Any) -> None:
        self.configs.append(config)

    def status(self) -> dict[str, Any]:
        return {"results": len(self.results)}

    def ready(self) -> tuple[bool, str]:
        return True, ""


async def test_components_start_in_order_close_in_reverse_and_bad_ones_are_isolated(target: Target) -> None:
    route_target(target)
    events: list[str] = []
    first, faulty, last = Recording("first", events), Recording("faulty", events, fail_result=True), Recording(
        "last", events
    )
    app = App(parse_config(daemon_config(target), env={}), components=[first.factory, faulty.factory, last.factory])
    await app.start()
    try:
        assert first.services is not None and first.services.scheduler is app.scheduler
        assert first.services.redis is None  # no redis_url
        await until(lambda: len(last.results) >= 2, "results reach the last component")
        assert app.status_document()["components"]["last"]["results"] >= 2
    finally:
        await app.close()
    # The faulty component raised on every result; the one after it still got every one.
    assert len(last.results) == len(faulty.results) == len(first.results)
    assert events == [
        "build first", "start first", "build faulty", "start faulty", "build last", "start last",
        "close last", "close faulty", "close first",
    ]


async def test_failed_start_closes_what_was_started(target: Target) -> None:
    events: list[str] = []
    good, bad = Recording("good", events), Recording("bad", events, fail_start=True)
    app = App(parse_config(daemon_config(target), env={}), components=[good.factory, bad.factory])
    with pytest.raises(RuntimeError, match="bad cannot start"):
        await app.start()
    assert events == ["build good", "start good", "build bad", "close good"]
    assert not app.scheduler.running


async def test_redis_client_is_built_and_connected_when_configured(
    target: Target, prefix: str, shared_redis: redis.asyncio.Redis
) -> None:
    text = on_shared_redis(daemon_config(target), prefix)
    seen = Recording("redis-user", [])
    app = App(parse_config(text, env={}), components=[seen.factory])
    await app.start()
    try:
        assert seen.services is not None and seen.services.redis is not None
        key = f"im-test:{uuid.uuid4()}"
        await seen.services.redis.set(key, "1", ex=10)
        assert await seen.services.redis.get(key) == b"1"
        await seen.services.redis.delete(key)
        assert app.metrics.redis_up._value.get() == 1
        assert json.loads(json.dumps(app.status_document()))["monitor"]["redis"] == "configured"
    finally:
        await app.close()


async def test_unreachable_redis_is_logged_once_and_not_fatal(target: Target, log_stream: io.StringIO) -> None:
    password = "redis-pass-CANARY-31"
    text = daemon_config(target).replace(
        "monitor:\n", f"monitor:\n  redis_url: redis://:{password}@127.0.0.1:{closed_port()}/0\n", 1
    )
    app = App(parse_config(text, env={}), components=[])
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    try:
        assert app.services is not None and app.services.redis is not None  # kept: components retry later
        assert app.metrics.redis_up._value.get() == 0
        assert app.scheduler.running
        assert app.readiness() == (True, [])  # Redis down is its own metric and alert, not "unready"
        redis = app.status_document()["components"]["redis"]
        assert redis["up"] is False and "Connect" in redis["error"] and password not in json.dumps(redis)
    finally:
        await app.close()
    logs = log_stream.getvalue()
    assert logs.count("does not answer") == 1 and "checking every 5s" in logs
    assert password not in logs


async def test_no_redis_url_says_redis_features_are_off(target: Target, log_stream: io.StringIO) -> None:
    app = App(parse_config(daemon_config(target), env={}), components=[])
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    await app.close()
    expected = "Redis-backed features (quotas read from Redis, webhook freshness, durable alert state) are off"
    assert expected in log_stream.getvalue()


async def test_reload_applies_a_valid_file_and_keeps_the_old_config_on_a_broken_one(
    target: Target, tmp_path: Path, log_stream: io.StringIO
) -> None:
    route_target(target)
    path = write(tmp_path / "monitor.yaml", daemon_config(target))
    events: list[str] = []
    comp = Recording("watcher", events)
    app = App(load_config(path), config_path=path, components=[comp.factory])
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    try:
        url = app.server.url
        # 1. A valid new file: a check added, components told.
        added = daemon_config(target).replace(
            "alerting:", f"  extra:\n    checks:\n      - {{name: ping, kind: http, url: '{target.url('/ok')}', "
            "interval: 200ms}\nalerting:", 1
        )
        write(path, added)
        assert await app.reload() is True
        assert len(comp.configs) == 1 and "extra" in comp.configs[0].integrations
        await until(lambda: runs(app, "extra", "ping"), "a run of the added check extra/ping")
        # 2. A broken file: every problem logged, nothing changes, the gauge says 0.
        write(path, added.replace("interval: 200ms}", "interval: often, surprise: 1}"))
        assert await app.reload() is False
        assert "extra" in app.config.integrations and len(comp.configs) == 1
        _, _, body = await get(f"{url}/metrics")
        assert samples(body)[("integration_monitor_config_last_reload_successful", ())] == 0
        status = json.loads((await get(f"{url}/api/status"))[2])
        assert status["monitor"]["last_reload_successful"] is False
        assert "ping" in status["integrations"]["extra"]["checks"]
        logs = log_stream.getvalue()
        assert "config reload failed; the running config stays in effect" in logs
        assert "integrations.extra.checks[0].interval: expected a duration" in logs
        assert "integrations.extra.checks[0].surprise: unknown key" in logs
        # 3. Back to the original file: the extra check is gone from jobs, metrics and status.
        write(path, daemon_config(target))
        assert await app.reload() is True
        _, _, body = await get(f"{url}/metrics")
        s = samples(body)
        assert s[("integration_monitor_config_last_reload_successful", ())] == 1
        assert not any(dict(labels).get("integration") == "extra" for _, labels in s)
        assert app.status_store.get("extra", "ping") is None
    finally:
        await app.close()
    assert_no_canary(log_stream.getvalue(), "logs")


async def reload_gauge(app: App) -> float:
    _, _, body = await get(f"{app.server.url}/metrics")
    return samples(body)[("integration_monitor_config_last_reload_successful", ())]


async def test_reload_of_a_file_that_is_not_utf8_fails_visibly(
    target: Target, tmp_path: Path, log_stream: io.StringIO
) -> None:
    """Finding 7: a non-UTF-8 file was reported as a successful reload (the exception was lost in a task)."""
    route_target(target)
    path = write(tmp_path / "monitor.yaml", daemon_config(target))
    app = App(load_config(path), config_path=path, components=[])
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    try:
        path.write_bytes(daemon_config(target).encode().replace(b"name: broken", b"name: br\xf6ken"))
        assert await app.reload() is False
        assert await reload_gauge(app) == 0 and app.last_reload_ok is False
        assert "broken" in app.config.integrations["shop"].checks[1].name
    finally:
        await app.close()
    logs = log_stream.getvalue()
    assert "config reload failed; the running config stays in effect" in logs and "not UTF-8 text: byte 0xf6" in logs


async def test_reload_that_fails_while_being_applied_restores_the_old_config_everywhere(
    target: Target, tmp_path: Path, log_stream: io.StringIO
) -> None:
    """Finding 7: a config that validates but fails while being applied must not count as reloaded, and
    what already switched (scheduler, earlier components) goes back to the old config."""

    class Picky(Recording):
        def on_config(self, config: Any) -> None:
            super().on_config(config)
            if "extra" in config.integrations:
                raise RuntimeError(f"cannot watch extra with {CANARY_HEADER}")

    route_target(target)
    path = write(tmp_path / "monitor.yaml", daemon_config(target))
    events: list[str] = []
    first, picky = Recording("first", events), Picky("picky", events)
    app = App(load_config(path), config_path=path, components=[first.factory, picky.factory])
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    old = app.config
    try:
        write(path, daemon_config(target).replace(
            "alerting:", f"  extra:\n    checks:\n      - {{name: ping, kind: http, url: '{target.url('/ok')}'}}\n"
            "alerting:", 1))
        assert await app.reload() is False
        assert await reload_gauge(app) == 0
        assert app.config is old and app.scheduler.check_status("extra", "ping") is None
        assert [c is old for c in first.configs] == [False, True]  # switched, then switched back
        assert [c is old for c in picky.configs] == [False, True]
    finally:
        await app.close()
    logs = log_stream.getvalue()
    assert "config reload failed while applying the new config; the previous config was restored" in logs
    assert "cannot watch extra with [REDACTED]" in logs
    assert_no_canary(logs, "logs")


async def test_reload_whose_notifiers_cannot_be_built_fails_and_keeps_the_old_ones(
    target: Target, tmp_path: Path, log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notifiers used to be rebuilt in a background task after the reload had reported success."""
    def console_unless_told(config: Any, context: Any) -> Any:
        if config.stream == "stderr":
            raise RuntimeError("this notifier cannot be built")
        return console_plugin.factory(config, context)

    console_plugin = PLUGINS["console"]
    monkeypatch.setitem(PLUGINS, "console", dataclasses.replace(console_plugin, factory=console_unless_told))
    route_target(target)
    path = write(tmp_path / "monitor.yaml", daemon_config(target).replace("alerting:", "alerting:\n  console: {}", 1))
    app = App(load_config(path), config_path=path)
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    old = app.config
    try:
        write(path, daemon_config(target).replace("alerting:", "alerting:\n  console: {stream: stderr}", 1))
        assert await app.reload() is False
        assert await reload_gauge(app) == 0 and app.config is old
    finally:
        await app.close()
    assert "config reload failed while applying the new config" in log_stream.getvalue()


async def test_reload_never_reports_success_when_reading_raises(
    target: Target, tmp_path: Path, log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    route_target(target)
    path = write(tmp_path / "monitor.yaml", daemon_config(target))
    app = App(load_config(path), config_path=path, components=[])
    setup_logging(app.redactor, stream=log_stream)

    def broken_loader(path: Path) -> None:
        raise RuntimeError("a bug in the loader")

    monkeypatch.setattr(app_module, "load_config", broken_loader)
    await app.start()
    try:
        assert await app.reload() is False and await reload_gauge(app) == 0
    finally:
        await app.close()
    assert "config reload failed while reading the file" in log_stream.getvalue()


def test_secrets_of_covers_headers_query_inline_url_and_config_secrets(target: Target) -> None:
    secrets = secrets_of(parse_config(daemon_config(target), env={}))
    for canary in (f"Bearer {CANARY_HEADER}", CANARY_QUERY, CANARY_URL):
        assert canary in secrets


def test_an_http_check_names_its_url_query_credentials_itself() -> None:
    """secrets_of takes a check URL's credentials from the check's own list (one parse of each URL: at
    50,000 checks the extra ones cost ~0.9 s of the start), so that list must hold them."""
    check = HttpCheckConfig(name="c", kind="http", url="http://127.0.0.1:9/x?api_key=query-canary-77&page=2")
    assert "query-canary-77" in check.secret_values() and "2" not in check.secret_values()


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_logs_never_contain_a_secret(target: Target, log_stream: io.StringIO, fmt: str) -> None:
    route_target(target)
    events: list[str] = []
    faulty = Recording("faulty", events, fail_result=True)  # its exception message holds a secret
    app = App(parse_config(daemon_config(target), env={}), components=[faulty.factory])
    setup_logging(app.redactor, fmt=fmt, level="DEBUG", stream=log_stream)
    log = logging.getLogger("tests.app")
    await app.start()
    try:
        await until(lambda: len(faulty.results), "2 results at the faulty component", holds=lambda n: n >= 2)
        # Whatever a caller passes: message args, extra fields, exception text, tracebacks.
        log.warning("token in args: %s / %s", CANARY_HEADER, f"https://x.test/?token={CANARY_URL}")
        log.info("token in extra", extra={"request_url": f"https://x.test/?api_key={CANARY_QUERY}"})
        try:
            raise RuntimeError(f"failed calling with {CANARY_QUERY}")
        except RuntimeError:
            log.exception("wrapped %s", CANARY_HEADER)
    finally:
        await app.close()
    out = log_stream.getvalue()
    assert "bug in faulty handling [REDACTED]" in out  # the component's traceback was logged, redacted
    assert "token in args: [REDACTED]" in out and "failed calling with [REDACTED]" in out
    assert_no_canary(out, f"{fmt} logs")
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        assert any(line.get("request_url", "").endswith("[REDACTED]") for line in lines)


async def test_reload_adding_a_longer_window_keeps_the_alert_statistics(
    target: Target, tmp_path: Path, log_stream: io.StringIO
) -> None:
    """Issue 13, finding 4: the statistics' buckets kept the width chosen at start, so a window a reload
    made longer was judged on a silently truncated history (the merge itself: tests/test_alert_rules.py)."""
    route_target(target)
    path = write(tmp_path / "monitor.yaml", daemon_config(target))
    app = App(load_config(path), config_path=path)
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    try:
        engine = next(c for c in app.components if c.name == "alerts")
        stats = engine.stats  # type: ignore[attr-defined]
        await until(lambda: stats.check("shop", "broken") is not None, "a run recorded")
        width = stats.bucket_seconds
        week = "    alerts: {error_rate: {windows: [{long: 7d, short: 6h, factor: 1}]}}\n"
        write(path, daemon_config(target, extra=week))
        assert await app.reload() is True
        assert stats.bucket_seconds == 7 * 86400 / 480 > width  # the buckets reach back a week now
    finally:
        await app.close()
    assert "a longer window is configured; history kept in buckets" in log_stream.getvalue()


def shop_api(url: str, *, interval: str, timeout: str) -> str:
    """A daemon's config with one check, shop/api, at ``url`` (certificates not verified)."""
    return f"""
monitor: {{listen: "127.0.0.1:0", jitter: 0, shutdown_grace: 2s}}
integrations:
  shop:
    checks:
      - {{name: api, kind: http, url: "{url}", verify_tls: false, interval: {interval}, timeout: {timeout}}}
"""


async def test_reload_that_points_a_check_elsewhere_drops_what_its_old_endpoint_told(
    target: Target, tmp_path: Path
) -> None:
    """A reload that sends a check's requests to another endpoint: the old endpoint's certificate expiry
    left /api/status and the TLS gauge only when a run met another certificate — never, once the check
    speaks plain HTTP (a run that meets no certificate keeps the last one) — while the alert about it
    resolved at the reload. Dropped at the reload, with the other last values of the old endpoint that a
    run may leave in place (status code, phases); the check's history (runs, the histogram) stays."""
    labels = {"integration": "shop", "check": "api"}

    def config(url: str) -> str:
        return shop_api(url, interval="200ms", timeout="2s")

    def gauge(name: str, **more: str) -> float | None:
        return app.metrics.registry.get_sample_value(f"integration_probe_{name}", {**labels, **more})

    expires = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    context, _ca = tls_server_context(not_after=expires)
    async with Target(ssl_context=context) as tls:
        tls.route("/ok", Reply(json={"ok": True}))
        target.route("/plain", Reply(json={"ok": True}))
        path = write(tmp_path / "monitor.yaml", config(tls.url("/ok")))
        app = App(load_config(path), config_path=path)
        await app.start()
        try:
            status = app.status_store.entry("shop", "api")
            await until(lambda: status.runs >= 1, "a run against the HTTPS endpoint")
            assert status.tls_expiry == gauge("tls_cert_expiry_timestamp_seconds") == expires.timestamp()
            assert gauge("http_status_code") == 200 and gauge("phase_seconds", phase="tls") is not None
            moved = load_config(write(path, config(target.url("/plain"))))
            # Between two runs (one still in flight when the reload lands is not recorded: the next test).
            await until(lambda: app.scheduler.status()["in_flight"] == 0, "no run in flight")
            app.apply_config(moved)
            assert status.as_dict()["tls_cert_expiry"] is None
            assert gauge("tls_cert_expiry_timestamp_seconds") is None and gauge("http_status_code") is None
            assert gauge("phase_seconds", phase="tls") is None
            assert gauge("runs_total", outcome="success") == status.runs  # (the check's history stays)
            ran = status.runs
            await until(lambda: status.runs >= ran + 2, "runs against the plain HTTP endpoint")
            assert status.as_dict()["tls_cert_expiry"] is None and gauge("tls_cert_expiry_timestamp_seconds") is None
            assert gauge("http_status_code") == 200 and gauge("phase_seconds", phase="tls") is None
        finally:
            await app.close()


async def test_the_status_code_and_phase_gauges_are_the_last_runs(target: Target) -> None:
    """As /api/status shows them: a run refused before any response has no status code and only its connect
    phase (the gauges kept the 200 and the ttfb of the run before it)."""
    labels = {"integration": "shop", "check": "api"}
    target.route("/flip", Reply(json={"ok": True}), Reply(close_before_response=True))
    app = App(parse_config(shop_api(target.url("/flip"), interval="200ms", timeout="2s"), env={}))

    def gauge(name: str, **more: str) -> float | None:
        return app.metrics.registry.get_sample_value(f"integration_probe_{name}", {**labels, **more})

    await app.start()
    try:
        status = app.status_store.entry("shop", "api")
        await until(lambda: status.runs >= 2, "a run answered, then one refused")
        shown = status.as_dict()
        assert shown["error_class"] == "connect" and shown["status_code"] is None, shown
        assert gauge("http_status_code") is None
        assert gauge("phase_seconds", phase="ttfb") is None and gauge("phase_seconds", phase="transfer") is None
        assert gauge("phase_seconds", phase="connect") == shown["phases"]["connect"]
    finally:
        await app.close()


async def test_a_run_in_flight_across_a_reload_that_points_its_check_elsewhere_is_not_recorded(
    target: Target, tmp_path: Path
) -> None:
    """A run that started against the old endpoint and ends after the reload pointed the check elsewhere:
    recording it brought back what the reload dropped (the old certificate's expiry, its status code)."""
    labels = {"integration": "shop", "check": "api"}

    def config(url: str) -> str:
        return shop_api(url, interval="1h", timeout="30s")

    context, _ca = tls_server_context(not_after=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    answer = asyncio.Event()
    async with Target(ssl_context=context) as tls:
        tls.route("/slow", Reply(json={"ok": True}, hold=answer))
        target.route("/plain", Reply(json={"ok": True}))
        path = write(tmp_path / "monitor.yaml", config(tls.url("/slow")))
        app = App(load_config(path), config_path=path)
        await app.start()
        try:
            await until(lambda: len(tls.hits("/slow")) == 1, "the first run at the HTTPS endpoint")
            app.apply_config(load_config(write(path, config(target.url("/plain")))))
            answer.set()
            await until(lambda: tls.answered("/slow") == 1 and app.scheduler.status()["in_flight"] == 0,
                        "the run in flight ended")
            status = app.status_store.get("shop", "api")
            assert status is None or (status.runs == 0 and status.tls_expiry is None), status
            for name in ("tls_cert_expiry_timestamp_seconds", "http_status_code"):
                assert app.metrics.registry.get_sample_value(f"integration_probe_{name}", labels) is None, name
        finally:
            await app.close()


async def test_probe_duration_buckets_from_config_and_a_change_waits_for_a_restart(
    target: Target, tmp_path: Path, log_stream: io.StringIO
) -> None:
    """monitor.probe_duration_buckets sets each check's histogram bounds; a reload that changes them says it
    takes a restart (the series already counted per bucket cannot be re-bucketed) and keeps the old ones."""
    route_target(target)
    coarse = daemon_config(target).replace("  jitter: 0\n", "  jitter: 0\n  probe_duration_buckets: [1s]\n", 1)
    path = write(tmp_path / "monitor.yaml", coarse)
    app = App(load_config(path), config_path=path, components=[])
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    try:
        await until(lambda: runs(app, "shop", "ok"), "a run of shop/ok")
        write(path, coarse.replace("[1s]", "[100ms, 1s]"))
        assert await app.reload() is True
        _, _, body = await get(f"{app.server.url}/metrics")
        le = {dict(labels)["le"] for name, labels in samples(body)
              if name == "integration_probe_duration_seconds_bucket" and dict(labels)["check"] == "ok"}
        assert le == {"1.0", "+Inf"}
    finally:
        await app.close()
    assert "monitor.probe_duration_buckets changed: takes effect after a restart" in log_stream.getvalue()


async def test_a_start_adds_the_jobs_while_the_loop_keeps_turning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a job per check takes seconds at 50,000 checks: in one go, it held the event loop all that
    time, and a replica's heartbeats with it (its lease ran out while it started: bench/README.md). The
    start adds them JOBS_A_TURN at a time, the loop turning in between; every check then runs."""
    monkeypatch.setattr(job_sync, "JOBS_A_TURN", 5)
    checks = "\n".join(f"      - {{name: c{n}, kind: http, url: 'http://127.0.0.1:9/', interval: 1h, timeout: 1s}}"
                       for n in range(30))
    app = App(parse_config(f"integrations:\n  shop:\n    checks:\n{checks}\n", env={}), components=[])
    turns = 0

    async def turning() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    added_at: list[int] = []  # the loop's turn at each job added
    add_job = app.scheduler._aps.add_job

    def counted(*args: Any, **kwargs: Any) -> Any:
        added_at.append(turns)
        return add_job(*args, **kwargs)

    monkeypatch.setattr(app.scheduler._aps, "add_job", counted)
    ticker = asyncio.get_running_loop().create_task(turning())
    try:
        await app.start()
        try:
            await until(lambda: len(app.status_store.by_integration().get("shop", {})) == 30, "every check ran")
        finally:
            await app.close()
    finally:
        ticker.cancel()
    assert len(added_at) == 30
    assert max(Counter(added_at).values()) <= 5
