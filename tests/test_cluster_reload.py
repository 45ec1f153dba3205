"""A config reload in a cluster (the default whenever ``monitor.redis_url`` is set, one replica or more): what
the new config no longer has goes, as it does for a daemon alone (tests/test_app.py). A removed check's or
integration's series leave /metrics and its status leaves /api/status."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio
from daemon_support import daemon_config, get, on_shared_redis, route_target, samples, until, write
from targets import Target

from monitor.app import App
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
        await until(lambda: all((s := app.status_store.get("shop", c)) is not None and s.runs >= 1
                                for c in ("ok", "broken")), what="both checks recorded")
        assert {("shop", "ok"), ("shop", "broken")} <= checks_in((await get(f"{app.server.url}/metrics"))[2])
        without_broken = daemon_config(target).split("      - name: broken")[0] + "\n"
        write(path, on_shared_redis(without_broken, prefix))
        assert await app.reload() is True
        assert [c.name for c in app.config.integrations["shop"].checks] == ["ok"]
        await until(lambda: (s := app.status_store.get("shop", "ok")) is not None and s.runs >= 3,
                    what="runs after the reload")
        assert ("shop", "broken") not in checks_in((await get(f"{app.server.url}/metrics"))[2])
        assert app.status_store.get("shop", "broken") is None
    finally:
        await app.close()
