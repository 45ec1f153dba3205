"""The daemon's HTTP endpoints, with the real HTTP probe against a real local target."""

from __future__ import annotations

import gzip
import importlib.util
import json
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from daemon_support import CANARY_HEADER, assert_no_canary, daemon_config, get, route_target, runs, samples
from needs import missing
from prometheus_client import generate_latest
from targets import Target
from waiting import until

from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor import server
from monitor.app import App
from monitor.component import Services
from monitor.metrics import Metrics
from monitor.recorder import Recorder
from monitor.settings import parse_config

IC_OK = (("check", "ok"), ("integration", "shop"))
IC_BROKEN = (("check", "broken"), ("integration", "shop"))


@pytest.fixture
async def daemon(target: Target) -> AsyncIterator[App]:
    route_target(target)
    app = App(parse_config(daemon_config(target), env={}), components=[])
    await app.start()
    try:
        await until(lambda: {c: runs(app, "shop", c) for c in ("ok", "broken")}, "two runs of each check",
                    holds=lambda seen: min(seen.values()) >= 2)
        yield app
    finally:
        await app.close()


async def test_metrics_scrape_has_probe_families_with_labels(daemon: App) -> None:
    status, content_type, body = await get(f"{daemon.server.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert_no_canary(body, "/metrics")
    s = samples(body)
    assert s[("integration_probe_success", IC_OK)] == 1
    assert s[("integration_probe_success", IC_BROKEN)] == 0
    assert s[("integration_probe_runs_total", (*IC_OK, ("outcome", "success")))] >= 2
    assert s[("integration_probe_runs_total", (*IC_BROKEN, ("outcome", "failure")))] >= 2
    assert s[("integration_probe_errors_total", (("check", "broken"), ("error_class", "http_5xx"),
                                                  ("integration", "shop")))] >= 2
    assert s[("integration_probe_retries_total", IC_BROKEN)] >= 2  # 2 attempts per run
    assert s[("integration_probe_retries_total", IC_OK)] == 0
    assert s[("integration_probe_http_status_code", IC_OK)] == 200
    assert s[("integration_probe_http_status_code", IC_BROKEN)] == 500
    assert s[("integration_probe_duration_seconds_count", IC_OK)] >= 2
    assert s[("integration_probe_duration_seconds_bucket", (*IC_OK, ("le", "+Inf")))] >= 2
    phases = {dict(labels)["phase"] for (name, labels) in s if name == "integration_probe_phase_seconds"}
    assert {"connect", "ttfb", "transfer"} <= phases
    assert s[("integration_monitor_scheduler_lag_seconds_count", ())] >= 4
    assert s[("integration_monitor_config_last_reload_successful", ())] == 1
    assert ("integration_monitor_build_info", (("version", daemon_version()),)) in s
    # No TLS on this target: no expiry series at all (0 would read as "expired in 1970").
    assert not any(name == "integration_probe_tls_cert_expiry_timestamp_seconds" for name, _ in s)


def daemon_version() -> str:
    from monitor import __version__

    return __version__


async def test_metrics_honours_openmetrics_accept(daemon: App) -> None:
    status, content_type, body = await get(
        f"{daemon.server.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


@pytest.mark.parametrize("codec", ["speed extra", "zlib"])
async def test_metrics_gzip_only_when_the_scraper_accepts_it(
    daemon: App, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prometheus sends ``Accept-Encoding: gzip``: the page comes compressed, and decompresses to the page
    a scraper without gzip gets (same series: values move between two scrapes, and a run in between may
    only add series, e.g. a new phase). By ISA-L with the speed extra installed (as here), by zlib without."""
    if codec == "zlib":
        monkeypatch.setattr(server, "gzip_codec", zlib)
    else:
        if importlib.util.find_spec("isal") is None:
            missing("isal not installed (the speed extra: pip install -e '.[speed]')")
        assert server.gzip_codec.__name__ == "isal.isal_zlib", "the speed extra compresses with ISA-L"
    url = f"{daemon.server.url}/metrics"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        bodies = {}
        for encoding in ("gzip", "identity"):
            async with session.get(url, headers={"Accept-Encoding": encoding}) as resp:
                assert resp.status == 200
                assert resp.headers.get("Content-Encoding") == (encoding if encoding == "gzip" else None)
                assert "Accept-Encoding" in resp.headers["Vary"]
                bodies[encoding] = await resp.read()
    page = gzip.decompress(bodies["gzip"]).decode()
    assert len(bodies["gzip"]) < len(page) / 3
    series = samples(page).keys()
    assert ("integration_probe_success", IC_OK) in series
    assert series <= samples(bodies["identity"].decode()).keys()


async def test_api_status_shows_last_result_and_redacted_failure(daemon: App) -> None:
    status, content_type, body = await get(f"{daemon.server.url}/api/status")
    assert status == 200 and content_type.startswith("application/json")
    assert_no_canary(body, "/api/status")
    doc = json.loads(body)
    assert doc["monitor"]["redis"] == "off" and doc["monitor"]["last_reload_successful"] is True
    shop = doc["integrations"]["shop"]
    assert shop["runbook_url"] == "https://wiki.example.com/runbooks/shop" and shop["interval_factor"] == 1.0
    ok, broken = shop["checks"]["ok"], shop["checks"]["broken"]
    assert ok["ok"] is True and ok["error_class"] is None and ok["status_code"] == 200
    assert ok["last_success_at"] is not None and ok["consecutive_failures"] == 0 and ok["last_failure"] is None
    assert {"connect", "ttfb"} <= set(ok["phases"])
    assert ok["schedule"]["interval_seconds"] == 0.2
    assert broken["ok"] is False and broken["error_class"] == "http_5xx" and broken["status_code"] == 500
    assert broken["attempts"] == 2 and broken["attempt_classes"] == ["http_5xx", "http_5xx"]
    assert broken["consecutive_failures"] >= 2 and broken["last_success_at"] is None
    failure = broken["last_failure"]
    assert failure["error_class"] == "http_5xx" and failure["detail"]
    assert failure["request"]["method"] == "GET"
    assert failure["request"]["headers"]["Authorization"] == "[REDACTED]"
    assert "token=%5BREDACTED%5D" in failure["request"]["url"] or "token=[REDACTED]" in failure["request"]["url"]
    assert "internal error" in failure["response_excerpt"] and "[REDACTED]" in failure["response_excerpt"]


async def test_health_and_readiness(daemon: App) -> None:
    assert (await get(f"{daemon.server.url}/healthz"))[0] == 200
    status, _, body = await get(f"{daemon.server.url}/readyz")
    assert status == 200 and json.loads(body)["reasons"] == []


class Probe:
    """A component that is not ready, reports status with a secret in it, and serves a route."""

    name = "probe-component"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.seen = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def on_result(self, result: CheckResult) -> None:
        self.seen += 1

    def on_config(self, config: Any) -> None: ...

    def status(self) -> dict[str, Any]:
        return {"seen": self.seen, "oops": f"leaked {CANARY_HEADER}"}

    def ready(self) -> tuple[bool, str]:
        return False, "waiting for the first Redis read"

    def routes(self) -> Iterable[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            return web.json_response({"hello": self.name})

        return [web.get("/api/hello", hello)]


async def test_components_status_readiness_and_routes(target: Target) -> None:
    route_target(target)
    app = App(parse_config(daemon_config(target), env={}), components=[Probe])
    await app.start()
    try:
        status, _, body = await get(f"{app.server.url}/readyz")
        assert status == 503
        assert json.loads(body)["reasons"] == ["probe-component: waiting for the first Redis read"]
        await until(lambda: runs(app, "shop", "ok"), "a run of shop/ok")
        status, _, body = await get(f"{app.server.url}/api/status")
        assert_no_canary(body, "/api/status components")
        assert json.loads(body)["components"]["probe-component"]["seen"] >= 1
        assert (await get(f"{app.server.url}/api/hello"))[2] == '{"hello": "probe-component"}'
    finally:
        await app.close()
    assert app.health() == (False, "scheduler is not running")


def test_fast_text_exposition_matches_prometheus_client() -> None:
    """The /metrics fast path renders exactly the samples prometheus-client renders from the collector."""
    metrics = Metrics()
    recorder = Recorder(metrics, Redactor())
    for i, (ok, error_class, duration) in enumerate(
        [(True, None, 0.003), (False, ErrorClass.HTTP_5XX, 0.7), (False, ErrorClass.TIMEOUT, 99.0), (True, None, 0.05)]
    ):
        recorder.record(CheckResult(
            integration="shop", check=f"c{i % 2}", kind="http", ok=ok, error_class=error_class, detail="",
            started_at=time.time(), duration=duration, total_duration=duration, attempts=1 + i,
            status_code=None if error_class == ErrorClass.TIMEOUT else 200 + i,
            phases={"connect": 0.001 * i, "ttfb": 0.002, "bogus": 1.0}, tls_expiry=1.9e9 if i == 3 else None,
        ))
    recorder.record(CheckResult(
        integration="other.api", check="gone", kind="http", ok=True, error_class=None, detail="",
        started_at=time.time(), duration=0.2, total_duration=0.2,
    ))
    recorder.forget("other.api", "gone")
    fast = metrics.render_text().decode()
    reference = generate_latest(metrics.registry).decode()
    assert samples(fast) == samples(reference)
    s = samples(fast)
    c0, c1 = (("check", "c0"), ("integration", "shop")), (("check", "c1"), ("integration", "shop"))
    assert s[("integration_probe_duration_seconds_bucket", (*c0, ("le", "+Inf")))] == 2
    assert s[("integration_probe_duration_seconds_bucket", (*c0, ("le", "0.005")))] == 1
    assert s[("integration_probe_errors_total", (c1[0], ("error_class", "http_5xx"), c1[1]))] == 1
    assert s[("integration_probe_retries_total", c1)] == 1 + 3  # attempts 2 and 4
    assert s[("integration_probe_tls_cert_expiry_timestamp_seconds", c1)] == 1.9e9
    assert not any(dict(labels).get("phase") == "bogus" for _, labels in s)
    assert not any(dict(labels).get("integration") == "other.api" for _, labels in s)
    # Every family once, with HELP and TYPE, even the probe ones rendered by the fast path.
    assert fast.count("# TYPE integration_probe_success gauge") == 1
    assert fast.count("# TYPE integration_monitor_scheduler_lag_seconds histogram") == 1
