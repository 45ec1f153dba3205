"""A /metrics scrape being written goes before the alert evaluation's slices (monitor/scrape_priority.py):
through the daemon's real HTTP server and its real alert engine (the shared Redis), and within the limit
that keeps a stalled scrape from holding the evaluation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest
import redis.asyncio
from redis_servers import SHARED_REDIS
from targets import Target
from waiting import until

from alerts import engine as alert_engine
from alerts.engine import AlertEngine
from integration_kit.redact import Redactor
from monitor.app import App
from monitor.metrics import Metrics
from monitor.scrape_priority import ScrapePriority
from monitor.server import HttpServer
from monitor.settings import parse_config
from monitor.wiring import alerts


class Logged(Metrics):
    """Notes each piece of the page as the server takes it; one piece per part (many pieces)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def exposition(self, accept: str = "", **budgets: float) -> tuple[str, Iterator[bytes]]:
        content_type, pieces = super().exposition(accept, piece_bytes=1)

        def logged() -> Iterator[bytes]:
            for piece in pieces:
                self.log.append("piece")
                yield piece

        return content_type, logged()


class Monitored:  # what the HTTP server asks of the app (monitor.server.Monitored), no more
    redactor = Redactor(())

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def api_token(self) -> None:
        return None


async def test_no_evaluation_slice_runs_between_the_pieces_of_a_scrape() -> None:
    log: list[str] = []
    metrics = Logged(log)
    for i in range(300):
        metrics.probes.series(f"vendor{i // 10}", f"c{i}").runs_ok = 1
    server = HttpServer(Monitored(metrics), "127.0.0.1", 0)  # type: ignore[arg-type]
    await server.start()

    async def evaluation() -> None:  # slices handing the loop back as the daemon's engine does
        while True:
            await metrics.scrape_priority.hand_back()
            log.append("slice")

    slices = asyncio.create_task(evaluation())
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
            page = await resp.read()
        await until(lambda: log[-1], "a slice once the page is written", holds=lambda entry: entry == "slice")
    finally:
        slices.cancel()
        await server.close()
    assert page.count(b"integration_probe_runs_total{") == 600
    first, last = log.index("piece"), len(log) - 1 - log[::-1].index("piece")
    assert log.count("piece") > 10 and "slice" in log[:first] and "slice" in log[last:]
    assert "slice" not in log[first:last], f"{log[first:last].count('slice')} slices ran between the pieces"


async def test_the_daemons_alert_evaluation_waits_while_metrics_are_written(
    target: Target, shared_redis: redis.asyncio.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alert_engine, "SLICE_SECONDS", 0.0)  # hand the loop back before each integration
    config = parse_config(json.dumps({
        # A cluster of its own (its keys under the test's prefix): with the default prefix, a daemon of another
        # test or suite on the shared Redis is a peer that can own all four integrations, and this engine,
        # judging none, never hands the loop back.
        "monitor": {"listen": "127.0.0.1:0", "redis_url": SHARED_REDIS, "evaluation_interval": "1h",
                    "cluster": {"key_prefix": f"{prefix}cluster:"}},
        "integrations": {f"vendor{i}": {"checks": [
            {"name": "api", "kind": "http", "url": target.url("/api"), "interval": "1h", "timeout": "2s"}]}
            for i in range(4)},
        "alerting": {"key_prefix": prefix},
    }))
    app = App(config, components=[alerts])
    await app.start()
    try:
        engine = next(c for c in app.components if isinstance(c, AlertEngine))
        app.metrics.scrape_priority.limit = 600.0
        with app.metrics.scrape_priority.writing():
            evaluation = asyncio.create_task(engine.evaluate())
            await asyncio.wait({evaluation}, timeout=3.0)  # an evaluation of 4 checks takes milliseconds
            held = not evaluation.done()
            owned = [i for i in engine.config.integrations if engine.voice.integration(i)]
        async with asyncio.timeout(30):
            await evaluation
    finally:
        await app.close()
    assert owned, "this replica owned none of the integrations: nothing to evaluate"
    assert held, "the evaluation ran while /metrics was being written"


async def test_a_scrape_holds_the_evaluation_no_longer_than_its_limit() -> None:
    """A stalled scrape (a client that stopped reading) waits for the socket, not for the loop: past the
    limit, the evaluation goes on while it is still being written."""
    priority = ScrapePriority(limit=0.05)
    async with asyncio.timeout(30):
        await priority.hand_back()  # nothing written: one turn
        with priority.writing():
            await priority.hand_back()
            with priority.writing():  # a second scrape has its own limit
                await priority.hand_back()
