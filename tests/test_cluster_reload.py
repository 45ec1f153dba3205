"""A config reload in a cluster (the default whenever ``monitor.redis_url`` is set, one replica or more): what
the new config no longer has goes, as it does for a daemon alone (tests/test_app.py). A removed check's or
integration's series leave /metrics and its status leaves /api/status."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import redis.asyncio
from daemon_support import daemon_config, get, on_shared_redis, route_target, runs, samples, write
from targets import Target
from waiting import until

from alerts.model import AlertStatus
from alerts.store import AlertStore
from monitor.app import App
from monitor.cluster.placement import Change
from monitor.logs import setup_logging
from monitor.settings import load_config


def checks_in(body: str) -> set[tuple[str, str]]:
    """(integration, check) of every sample on a /metrics page that has both labels."""
    out = set()
    for _, labels in samples(body):
        found = dict(labels)
        if "integration" in found and "check" in found:
            out.add((found["integration"], found["check"]))
    return out


async def test_a_check_a_reload_removes_leaves_metrics_and_status(
    target: Target, tmp_path: Path, prefix: str, shared_redis: redis.asyncio.Redis
) -> None:
    route_target(target)
    path = write(tmp_path / "monitor.yaml", on_shared_redis(daemon_config(target), prefix))
    app = App(load_config(path), config_path=path, components=[])
    await app.start()
    try:
        assert app.cluster is not None and app.cluster.cluster is not None  # clustered, as with any redis_url
        await until(lambda: {c: runs(app, "shop", c) for c in ("ok", "broken")}, "both checks recorded",
                    holds=lambda seen: min(seen.values()) >= 1)
        assert {("shop", "ok"), ("shop", "broken")} <= checks_in((await get(f"{app.server.url}/metrics"))[2])
        without_broken = daemon_config(target).split("      - name: broken")[0] + "\n"
        write(path, on_shared_redis(without_broken, prefix))
        assert await app.reload() is True
        assert [c.name for c in app.config.integrations["shop"].checks] == ["ok"]
        await until(lambda: runs(app, "shop", "ok"), "3 runs of shop/ok after the reload", holds=lambda n: n >= 3)
        assert ("shop", "broken") not in checks_in((await get(f"{app.server.url}/metrics"))[2])
        assert app.status_store.get("shop", "broken") is None
    finally:
        await app.close()


GONE = """  gone:
    checks:
      - {{name: down, kind: http, url: '{url}', interval: 200ms, timeout: 2s}}
    alerts: {{probe_down: {{consecutive_failures: 2, keep_firing_for: 0s}}}}
"""


async def test_a_firing_alert_of_an_integration_a_reload_removes_resolves(
    target: Target, tmp_path: Path, prefix: str, shared_redis: redis.asyncio.Redis, log_stream: io.StringIO
) -> None:
    """Its owner resolves it (and tells the resolve), as a daemon alone does: no replica owned an integration
    the config no longer had, so nobody judged its alert again and it stayed firing, in Redis too."""
    route_target(target)
    base = re.sub(r"  slack: .*\n", "  console: {stream: log}\n  group_wait: 0s\n", daemon_config(target))
    with_gone = base.replace("alerting:", GONE.format(url=target.url("/broken")) + "alerting:", 1)
    fast = "  evaluation_interval: 1s\n"
    path = write(tmp_path / "monitor.yaml", on_shared_redis(with_gone, prefix, fast))
    app = App(load_config(path), config_path=path)
    setup_logging(app.redactor, stream=log_stream)
    await app.start()
    try:
        engine = next(c for c in app.components if c.name == "alerts")
        key = "gone/probe_down/down/critical"
        await until(lambda: (s := engine.states.get(key)) and s.status, "the alert of gone/down firing",
                    holds=lambda status: status is AlertStatus.FIRING)
        write(path, on_shared_redis(base, prefix, fast))
        assert await app.reload() is True
        await until(lambda: engine.states[key].status, "the alert of the removed integration resolved",
                    holds=lambda status: status is AlertStatus.RESOLVED)
        await until(lambda: "Resolved — gone: gone/down" in log_stream.getvalue(), "the resolve told")
        await app.close()  # persists what it holds: the resolve must be in Redis, fenced by the owner's token
        stored = await AlertStore(shared_redis, f"{prefix}alerts:").load_states()
        assert stored[key].status is AlertStatus.RESOLVED
    finally:
        await app.close()


async def test_a_check_reloads_turn_off_then_on_again_runs_again(
    target: Target, tmp_path: Path, prefix: str, shared_redis: redis.asyncio.Redis
) -> None:
    """The cluster hears of a reload first and asks the scheduler to follow the share (a task); the scheduler then
    applies the new config at once. The task, begun with the config as it was when asked, was the last sync and
    dropped the check the reload had just turned on again: it never ran again."""
    route_target(target)
    on = daemon_config(target)
    off = on.replace("      - name: broken\n", "      - name: broken\n        enabled: false\n", 1)
    path = write(tmp_path / "monitor.yaml", on_shared_redis(on, prefix))
    app = App(load_config(path), config_path=path, components=[])
    await app.start()
    try:
        await until(lambda: runs(app, "shop", "broken"), "shop/broken run", holds=lambda n: n >= 1)
        write(path, on_shared_redis(off, prefix))
        assert await app.reload() is True
        assert app.status_store.get("shop", "broken") is None  # turned off: gone
        write(path, on_shared_redis(on, prefix))
        assert await app.reload() is True
        await until(lambda: runs(app, "shop", "broken"), "shop/broken running again after it was turned on",
                    holds=lambda n: n >= 2)
        assert app.scheduler.check_status("shop", "broken") is not None
    finally:
        await app.close()


async def test_a_reload_that_changes_the_checks_keeps_the_replicas_share_and_integrations(
    target: Target, tmp_path: Path, prefix: str, shared_redis: redis.asyncio.Redis
) -> None:
    """A reload that changes what decides placement (a check's URL here) changes the replica's fleet at once;
    Redis hears of it at the next heartbeat. Its own record as last read still had the old fleet, so the view
    it made at that heartbeat left itself out: alone, it dropped its share and its integrations (their series,
    alert ownership, failed-run counts) and took them back a heartbeat later (seen once in the logs of
    tests/test_cluster_streaks.py: "members a → -")."""
    route_target(target)
    fast = f"cluster: {{key_prefix: '{prefix}cluster:', heartbeat: 100ms, ttl: 1s}}"

    def text(config: str) -> str:
        return on_shared_redis(config, prefix).replace(f"cluster: {{key_prefix: '{prefix}cluster:'}}", fast, 1)

    path = write(tmp_path / "monitor.yaml", text(daemon_config(target)))
    app = App(load_config(path), config_path=path, components=[])
    await app.start()
    try:
        assert app.cluster is not None and app.cluster.cluster is not None
        cluster = app.cluster.cluster
        await until(lambda: cluster.owns("shop"), "the replica to own shop")
        changes: list[Change] = []
        cluster.on_change(changes.append)
        before = cluster.fleet
        write(path, text(daemon_config(target).replace("/ok\"", "/ok?v=2\"", 1)))
        assert await app.reload() is True
        assert cluster.fleet != before  # the check moved: what decides placement changed

        async def fleet_in_redis() -> str:
            record = await shared_redis.hget(f"{prefix}cluster:member-info", cluster.me)
            return str(json.loads(record or "{}").get("fleet"))

        # The heartbeat that writes the new fleet comes after the view that left the replica out.
        await until(fleet_in_redis, "the new fleet in the replica's record", holds=lambda f: f == cluster.fleet)
        assert [c for c in changes if c.integrations_lost or c.checks_lost] == []
        assert cluster.owns("shop")
    finally:
        await app.close()
