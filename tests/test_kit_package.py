"""What integration services install: the ``integration-kit`` distribution (kit/pyproject.toml, built
from the same integration_kit/ sources), built into a wheel and installed into a fresh venv with only
its declared dependencies (from the package index). There, every module but the requests adapter
imports, the adapter says it needs the ``requests`` extra, nothing of the daemon is installed, and a
service's calls through the installed kit come back through the monitor's traffic reader exactly.

Needs the package index (pip); without it the test fails under CI and skips elsewhere."""

from __future__ import annotations

import asyncio
import shutil
import sys
import textwrap
from pathlib import Path

import redis.asyncio
import yaml
from needs import missing
from redis_servers import SHARED_REDIS

from integration_kit.redact import Redactor
from monitor.component import Services
from monitor.metrics import Metrics
from monitor.settings import parse_config
from monitor.traffic.service import TrafficService

ROOT = Path(__file__).resolve().parent.parent
DAEMON_ONLY = ("pydantic", "prometheus-client", "apscheduler", "slack-sdk", "pyyaml", "requests")

SERVICE = textwrap.dedent(
    """
    import asyncio, importlib, pkgutil, sys
    import aiohttp
    from aiohttp import web
    import redis.asyncio
    import integration_kit
    from integration_kit.calls import CallError
    from integration_kit.client import Integration

    for module in pkgutil.walk_packages(integration_kit.__path__, "integration_kit."):
        if module.name == "integration_kit.requests_adapter":
            try:
                importlib.import_module(module.name)
            except ModuleNotFoundError as exc:
                print("adapter needs:", exc.name)
            continue
        importlib.import_module(module.name)

    async def main():
        app = web.Application()
        app.router.add_get("/ok", lambda r: web.json_response({"id": 1}))
        app.router.add_get("/bad", lambda r: web.Response(status=422))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        client = redis.asyncio.Redis.from_url(sys.argv[1])
        kit = Integration("shipped", redis=client, key_prefix=sys.argv[2])
        async with kit, aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
            for path in ["/ok"] * 5 + ["/bad"] * 2:
                try:
                    async with http.get(base + path) as resp:
                        await resp.json()
                except CallError as exc:
                    print("error:", exc.error_class)
        await client.aclose()
        await runner.cleanup()

    asyncio.run(main())
    """
)


async def run(*argv: str | Path, within: float = 600.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*map(str, argv), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(within):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_the_shipped_kit_installs_with_only_its_dependencies_and_works(
    tmp_path: Path, shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    python = await kit_venv(tmp_path)
    code, listing = await run(python, "-m", "pip", "list", "--format=freeze")
    installed = {line.split("==")[0].lower() for line in listing.split()}
    assert {"integration-kit", "aiohttp", "redis"} <= installed
    assert not installed & set(DAEMON_ONLY), installed

    service, metrics = traffic_reader(shared_redis, prefix)
    assert await service.read_once()  # the baseline, before the service runs
    code, out = await run(python, "-c", SERVICE, SHARED_REDIS, prefix, within=120)
    assert code == 0, out
    assert "adapter needs: requests" in out
    assert out.count("error: http_4xx") == 2
    assert await service.read_once()
    sample = metrics.registry.get_sample_value
    assert sample("integration_traffic_requests_total", {"integration": "shipped", "error_class": "ok"}) == 5
    assert sample("integration_traffic_requests_total", {"integration": "shipped", "error_class": "http_4xx"}) == 2


SYNC_SERVICE = textwrap.dedent(
    """
    import requests, urllib3
    from integration_kit.calls import CallError
    from integration_kit.requests_adapter import KitAdapter
    from integration_kit.sync_client import SyncIntegration

    print("urllib3", urllib3.__version__)
    kit = SyncIntegration("vendor", timeout=5.0)
    session = requests.Session()
    session.mount("http://", KitAdapter(kit))
    with kit:
        for url in ("http://127.0.0.1:1/refused", "http://vendor.invalid/unresolvable"):
            try:
                session.get(url)
            except CallError as exc:
                print("error:", exc.error_class)
    """
)


async def test_the_requests_adapter_classifies_on_urllib3_1_26_which_requests_still_allows(tmp_path: Path) -> None:
    """requests >= 2.31 (the extra's floor) runs on urllib3 1.26 as well as 2.x; services pinned to 1.26
    are common. The adapter once named urllib3 2's NameResolutionError and raised AttributeError there
    on every failed connection instead of a CallError."""
    python = await kit_venv(tmp_path, "[requests]", "urllib3<2")
    code, out = await run(python, "-c", SYNC_SERVICE, within=120)
    assert code == 0, out
    assert "urllib3 1.26." in out, out
    assert "error: connect" in out, out
    assert "error: dns" in out, out


async def kit_venv(tmp_path: Path, extras: str = "", *pins: str) -> Path:
    """A fresh venv with the kit's wheel (and ``extras``) installed from the package index, plus ``pins``."""
    source = tmp_path / "kit"
    shutil.copytree(ROOT / "kit", source, symlinks=False)  # the link resolved: the sources themselves
    code, out = await run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", source, "-w", tmp_path / "dist")
    if code != 0:
        missing(f"could not build the kit's wheel (package index reachable?): {out[-1500:]}")
    [wheel] = (tmp_path / "dist").glob("integration_kit-*.whl")
    venv = tmp_path / "venv"
    code, out = await run(sys.executable, "-m", "venv", venv)
    assert code == 0, out
    python = venv / "bin" / "python"
    code, out = await run(python, "-m", "pip", "install", "-q", f"{wheel}{extras}", *pins)
    if code != 0:
        missing(f"could not install the kit's dependencies from the package index: {out[-1500:]}")
    return python


def traffic_reader(client: redis.asyncio.Redis, prefix: str) -> tuple[TrafficService, Metrics]:
    config = parse_config(yaml.safe_dump({"integrations": {"shipped": {"traffic": {"key_prefix": prefix}}}}))
    metrics = Metrics()
    return TrafficService(Services(metrics=metrics, redactor=Redactor(), redis=client, config=config)), metrics
