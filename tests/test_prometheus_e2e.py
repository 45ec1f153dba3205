"""End to end with real components: the demo, scraped every second by a real Prometheus, and every PromQL
expression of the Grafana dashboard and of deploy/prometheus/rules run against Prometheus' HTTP API.

Each expression must parse (Prometheus answers 400 otherwise), the rule files must load, and every panel
expected to show data in the demo must return a non-empty result: a renamed metric or label shows up
here as an empty panel. Every label a panel's legend names must be on its query's series (else its lines
have no names). The demo gets its own redis-server (its keys would clash with another demo's on the
shared one) so the quota and webhook panels have data too.

Then three daemons (real processes, a private redis-server) behind one Prometheus with the shipped rules:
aggregated by check, every figure comes once (from the integration's owner), not three times, and when
the owner of a failing integration is SIGKILLed the probe-down alerts fire through the handover without a
gap, and nothing else fires.

Needs the `prometheus` and `redis-server` binaries (Debian packages `prometheus`, `redis-server`):
fails without them under CI, skips visibly otherwise.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from needs import free_port, missing, need_binary
from waiting import NO_ANSWER, until, until_blocking

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_JSON = ROOT / "grafana" / "dashboards" / "integration-monitor.json"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "integration-monitor.rules.yml"

# What Grafana substitutes in the queries. $__rate_interval is at least 4 scrape intervals in Grafana.
VARIABLES = {
    "$__rate_interval": "15s",
    "$__range": "5m",
    "$integration": ".*",
    "$check": ".*",
}

# Panels (by title) that legitimately show nothing in the demo, with the reason. Keep this list short:
# everything else must have data.
EMPTY_IN_DEMO: dict[str, str] = {
    "Calls not recorded / not limited (1h)": "only when a service's Redis fails (its limiter lets calls through)"
    " or is down longer than the service keeps counts",
}

DATA_DEADLINE = 150.0  # seconds to wait for every expected panel to have data

# The probe rules' error-rate alerts (deploy/prometheus/rules): a check whose every run fails fires them all.
ERROR_RATE_ALERTS = {"IntegrationErrorRateHigh", "IntegrationErrorBudgetBurnFast", "IntegrationErrorBudgetBurnSlow",
                     "IntegrationErrorBudgetBurnTicket"}


def running(proc: subprocess.Popen[bytes], look: Callable[[], T]) -> Callable[[], T]:
    """``look``, for a wait on ``proc``: a process that exited fails the wait at once."""

    def checked() -> T:
        assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode}"
        return look()

    return checked


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Everything the test starts; stopped (SIGTERM, then SIGKILL) in reverse order whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        stop(proc)


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every panel target."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            out += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return out


def legend_labels() -> list[tuple[str, str, set[str]]]:
    """(panel title, expression, the labels its legend names) for every panel target whose legend names one:
    a label the query's series lack shows as an empty name in every line of the panel."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                if labels:
                    out.append((inner["title"], target["expr"], labels))
    return out


def rule_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> tuple[int, dict[str, Any]]:
        status, body = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return status, json.loads(body)

    def result(self, expr: str) -> list[Any]:
        status, doc = self.query(expr)
        assert status == 200 and doc["status"] == "success", f"{expr}: {doc.get('error')}"
        return list(doc["data"]["result"]) if doc["data"]["resultType"] in ("vector", "matrix") else [doc["data"]]


def start_stack(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> tuple[Prometheus, subprocess.Popen[bytes]]:
    prometheus_bin = need_binary("prometheus", "Debian package `prometheus`")
    redis_bin = need_binary("redis-server", "Debian package `redis-server`")

    redis_port = free_port()
    redis = subprocess.Popen(
        [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    processes.append(redis)

    monitor_port = free_port()
    with (tmp_path / "demo.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        demo = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "demo", "--listen", f"127.0.0.1:{monitor_port}"],
            env={**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"},
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    processes.append(demo)
    until_blocking(running(demo, lambda: get(f"http://127.0.0.1:{monitor_port}/healthz")[0]), "the demo's /healthz",
                   holds=lambda status: status == 200, ignoring=(OSError,))

    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "integration-monitor",
            "static_configs": [{"targets": [f"127.0.0.1:{monitor_port}"]}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path,
        )
    processes.append(prom)
    url = f"http://127.0.0.1:{prom_port}"
    until_blocking(running(prom, lambda: get(f"{url}/-/ready")[0]), "Prometheus's /-/ready",
                   holds=lambda status: status == 200, within=60, ignoring=(OSError,))
    return Prometheus(url), demo


def test_every_dashboard_and_rule_expression_against_real_prometheus(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    prom, demo = start_stack(tmp_path, processes)
    panels = dashboard_queries()
    rules = rule_queries()
    assert len(panels) > 30 and len(rules) > 20

    # Every expression parses (an instant query answers 400 bad_data otherwise), data or not.
    for name, expr in panels + rules:
        status, doc = prom.query(substitute(expr))
        assert status == 200 and doc["status"] == "success", f"{name}: {expr}\n→ {doc.get('error')}"

    # Scraping works: the monitor's own series arrive, with the labels the dashboard filters on.
    until_blocking(running(demo, lambda: prom.result('up{job="integration-monitor"} == 1')), "the first scrape",
                   ignoring=(OSError,))

    # Every expected panel query returns data (bounded wait: rates need a few scrapes, and some demo
    # misbehaviours, quota growth and webhooks need a few probe intervals).
    titles = {title for title, _ in panels}
    assert set(EMPTY_IN_DEMO) <= titles, f"EMPTY_IN_DEMO names panels that do not exist: {set(EMPTY_IN_DEMO) - titles}"
    empty = [(title, expr) for title, expr in panels if title not in EMPTY_IN_DEMO]
    started = time.monotonic()

    def still_empty() -> list[tuple[str, str]]:
        nonlocal empty
        assert demo.poll() is None, f"demo exited: {(tmp_path / 'demo.log').read_text()[-3000:]}"
        still = [(title, expr) for title, expr in empty if not prom.result(substitute(expr))]
        for title, _ in set(empty) - set(still):
            print(f"data after {time.monotonic() - started:5.1f}s: {title}")
        empty = still
        return still

    try:
        until_blocking(still_empty, "data in every expected panel", holds=lambda still: not still,
                       within=DATA_DEADLINE, every=2)
    except AssertionError as failure:
        present = sorted(s["metric"]["__name__"] for s in prom.result('count by (__name__) ({__name__=~".+"})'))
        raise AssertionError(
            f"{failure}\npanels without data in the demo:\n" + "\n".join(f"  {t}: {e}" for t, e in empty)
            + "\nseries names Prometheus has: " + ", ".join(present)
        ) from None

    # Every label a legend names is on the series its query returns.
    unnamed = [
        (title, sorted(labels - set(series["metric"])), series["metric"])
        for title, expr, labels in legend_labels() if title not in EMPTY_IN_DEMO
        for series in prom.result(substitute(expr)) if not labels <= set(series["metric"])
    ]
    assert not unnamed, "legends naming labels their series lack:\n" + "\n".join(map(str, unnamed))

    # The rule files loaded and their rules evaluate without errors.
    status, body = get(f"{prom.url}/api/v1/rules")
    groups = json.loads(body)["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {name for name, _ in rules}
    errors = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not errors, errors

    # The daemon stops cleanly on SIGTERM (what Kubernetes and `docker stop` send).
    assert stop(demo, timeout=20) == 0, (tmp_path / "demo.log").read_text()[-3000:]


# ---- three replicas behind one Prometheus ---------------------------------------------------------

HEARTBEAT, TTL = 0.3, 2.0


def fleet_config(target: Any, redis_url: str) -> str:
    """Two integrations of two checks at 1 s: ``down`` answers 503 (its probe-down alert fires), ``up`` 200."""
    integrations = {
        name: {"checks": [{"name": f"c{i}", "kind": "http", "url": target.url(f"/{name}/c{i}"), "interval": "1s",
                           "timeout": "1s"} for i in range(2)]}
        for name in ("down", "up")
    }
    return json.dumps({
        "monitor": {"redis_url": redis_url, "shutdown_grace": "5s",
                    "cluster": {"heartbeat": f"{int(HEARTBEAT * 1000)}ms", "ttl": f"{TTL:g}s"}},
        "integrations": integrations,
    })


def start_prometheus(tmp_path: Path, targets: list[str], processes: list[subprocess.Popen[bytes]]) -> Prometheus:
    prometheus_bin = need_binary("prometheus", "Debian package `prometheus`")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "integration-monitor", "static_configs": [{"targets": targets}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("wb") as log:
        processes.append(subprocess.Popen(
            [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path,
        ))
    return Prometheus(f"http://127.0.0.1:{port}")


async def test_three_replicas_behind_one_prometheus_count_each_check_once_and_a_handover_moves_no_alert(
    request: pytest.FixtureRequest, tmp_path: Path, target: Any, own_redis: Any,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    import asyncio

    from fleet import EXE, Fleet
    from targets import Reply

    if not EXE.exists():
        missing(f"console script {EXE} not installed (pip install -e .)")
    for i in range(2):
        target.route(f"/down/c{i}", Reply(status=503, body="upstream unavailable"))
        target.route(f"/up/c{i}", Reply(json={"ok": True}))
    await own_redis.start()
    config = tmp_path / "monitor.yaml"
    config.write_text(fleet_config(target, own_redis.url))
    fleet = Fleet(config=config, logs=tmp_path)
    request.node.process_logs = fleet.log_tail
    try:
        await asyncio.gather(*(fleet.start(name) for name in ("r0", "r1", "r2")))
        await fleet.settled({"r0", "r1", "r2"})
        prom = start_prometheus(tmp_path, [f"127.0.0.1:{r.port}" for r in fleet.replicas.values()], processes)

        async def result(expr: str) -> list[Any]:
            try:
                return await asyncio.to_thread(prom.result, expr)
            except (OSError, urllib.error.URLError):
                return []  # not up yet

        firing = 'ALERTS{alertname="IntegrationProbeDown", alertstate="firing"}'

        async def firing_checks() -> set[str]:
            return {s["metric"]["check"] for s in await result(firing)}

        await until(firing_checks, "IntegrationProbeDown firing for down/c0 and down/c1",
                    holds=lambda checks: checks == {"c0", "c1"}, within=60, ignoring=NO_ANSWER)
        fired_ms = round(time.time() * 1000)  # Prometheus takes query times to the millisecond

        # Aggregated by check, every figure comes once — from the integration's owner — not three times.
        # (Waited for: on a loaded machine a scrape may time out, and its target's series lapse for a moment.)
        once = [("down", "c0", "1"), ("down", "c1", "1"), ("up", "c0", "1"), ("up", "c1", "1")]

        async def series_per_check() -> list[tuple[str, str, str]]:
            rows = await result("count by (integration, check) (integration_probe_success)")
            return sorted((s["metric"]["integration"], s["metric"]["check"], s["value"][1]) for s in rows)

        await until(series_per_check, f"each check's series from one replica: {once}", holds=lambda rows: rows == once,
                    ignoring=NO_ANSWER)

        async def rates() -> list[float]:
            rows = await result("sum by (integration, check) (rate(integration_probe_runs_total[5s]))")
            return [float(s["value"][1]) for s in rows]

        def one_run_a_second(rates: list[float]) -> bool:  # not three
            return len(rates) == 4 and all(0.5 <= rate <= 1.5 for rate in rates)

        await until(rates, "1 run/s per check across the replicas", holds=one_run_a_second,
                    ignoring=NO_ANSWER)
        members = await result("integration_monitor_cluster_members")
        assert sorted(s["value"][1] for s in members) == ["3", "3", "3"]

        # The owner of `down` dies: its series stop, the new owner's start; the alerts stay as they were.
        owner = (await fleet.running()[0].status())["integrations"]["down"]["owner"]
        await fleet.kill(owner)
        await fleet.settled({"r0", "r1", "r2"} - {owner}, within=TTL + 10)

        async def exported_by_new_owner() -> bool:
            rows = await result('integration_probe_consecutive_failures{integration="down"}')
            return len(rows) == 2 and all(not s["metric"]["instance"].endswith(
                f":{fleet.replicas[owner].port}") for s in rows)

        await until(exported_by_new_owner, "down's series from its new owner", ignoring=NO_ANSWER)
        await asyncio.sleep(5)  # the window after the handover: five rule evaluations (1 s) that must all fire
        end_ms = round(time.time() * 1000)
        query = "/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": 'ALERTS{alertstate="firing"}', "start": f"{fired_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}",
             "step": "1"})
        status, body = await asyncio.to_thread(get, prom.url + query)
        assert status == 200, body
        series = json.loads(body)["data"]["result"]
        # query_range steps: start, start + 1 s, … up to end. (Counted from the float seconds sent, a span
        # like 8.9996 s that Prometheus rounds to 9.000 s gave one step less than it answered.)
        steps = (end_ms - fired_ms) // 1000 + 1
        seen = {(s["metric"]["alertname"], s["metric"].get("integration"), s["metric"].get("check")): s["values"]
                for s in series}
        # Firing at every step of the window, the handover included.
        down = {key: len(values) for key, values in seen.items() if key[0] == "IntegrationProbeDown"}
        assert down == {("IntegrationProbeDown", "down", "c0"): steps, ("IntegrationProbeDown", "down", "c1"): steps}
        # Every run of `down` fails, so its error-rate rules fire too once a recording-rule evaluation (every
        # 30 s, at a phase of the wall clock) has seen ten runs: in this window or not, by the clock. Nothing
        # else fires, and what fires keeps firing to the window's end: the handover stops no alert.
        last = max(float(at) for values in seen.values() for at, _ in values)
        for key, values in seen.items():
            if key[0] == "IntegrationProbeDown":
                continue
            assert key[1] == "down" and key[0] in ERROR_RATE_ALERTS, key
            times = [float(at) for at, _ in values]
            assert abs(times[-1] - last) < 1e-3 and all(abs(b - a - 1) < 1e-3 for a, b in itertools.pairwise(times)), \
                (key, times, last)
        await until(series_per_check, f"each check's series from one replica after the handover: {once}",
                    holds=lambda rows: rows == once, ignoring=NO_ANSWER)
    finally:
        await fleet.close()
