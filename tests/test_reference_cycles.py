"""What the daemon does over and over leaves nothing in reference cycles: each probe run and each full alert
evaluation is freed by reference counting as it ends. Garbage in a cycle waits for the cycle collector,
whose young collections then walk it on the event loop (at 10,000 checks, a probe run's four objects made
most of the ~12,000 each young collection freed, bench/README.md)."""

from __future__ import annotations

import collections
import gc
import types
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import yaml
from targets import Reply, Target
from test_alert_engine import Sink

from alerts.engine import AlertEngine
from checks.base import ProbeContext
from checks.http import HttpCheckConfig, make_session, probe
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config


@contextmanager
def cycles_kept() -> Iterator[list[object]]:
    """The collector off (what was garbage before, collected first); at the end, every object that only the
    collector could free is in the list (``gc.DEBUG_SAVEALL``)."""
    found: list[object] = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


OURS = ("alerts", "checks", "integration_kit", "monitor")


def ours(objects: list[object]) -> list[object]:
    """The product's objects among ``objects`` (and methods bound to them). The event loop's own are left
    out: asyncio's selector transports, closed, sit in cycles of their own (the daemon runs uvloop)."""
    def of_ours(o: object) -> bool:
        if isinstance(o, types.MethodType):
            o = o.__self__
        return type(o).__module__.split(".")[0] in OURS
    return [o for o in objects if of_ours(o)]


def described(objects: list[object]) -> str:
    return ", ".join(f"{n} {name}" for name, n in collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in objects).most_common(12))


async def repeated(times: int, work: Callable[[], Awaitable[object]]) -> None:
    for _ in range(times):
        await work()


async def test_a_probe_run_leaves_nothing_in_cycles(target: Target) -> None:
    denied = target.route("/denied", Reply(status=401, json={"error": "no"}))
    checks = [HttpCheckConfig.model_validate({"name": "ok", "kind": "http", "url": target.url("/ok"),
                                              "expect": {"json": {"$.data.id": {"type": "string"}}}}),
              HttpCheckConfig.model_validate({"name": "denied", "kind": "http", "url": denied})]
    async with make_session(limit=0) as session:
        ctx = ProbeContext(integration="acme", redactor=Redactor(), session=session)

        async def both() -> None:
            for check in checks:
                await probe(check, ctx)
        await both()  # the session's and the server's first-time objects
        with cycles_kept() as found:
            await repeated(20, both)
    assert not ours(found), described(ours(found))


def engine_config(integrations: int, checks: int) -> Config:
    return parse_config(yaml.safe_dump({
        "integrations": {f"vendor{i}": {
            "checks": [{"name": f"c{j}", "kind": "http", "url": "https://x.test/", "interval": "60s",
                        "expect": {"max_latency": "1s"}} for j in range(checks)],
        } for i in range(integrations)},
        "alerting": {"group_wait": "0s", "group_interval": "0s"},
    }), env={})


async def test_a_full_evaluation_leaves_nothing_in_cycles() -> None:
    """Every rule judging every check, alerts firing and resolving, their notifications handed on."""
    cfg = engine_config(3, 40)
    engine = AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), sink=Sink(), autorun=False)
    now = 1_800_000_000.0

    def runs(at: float, round_: int) -> None:
        for i, (integration, check) in enumerate(cfg.iter_checks()):
            failing = i % 10 == 0 or (i % 10 == 1 and round_ % 2 == 1)  # some fail, some flap
            engine.on_result(CheckResult(
                integration=integration, check=check.name, kind="http", ok=not failing,
                error_class=ErrorClass.HTTP_5XX if failing else None, detail="http_status: 503" if failing else "",
                started_at=at, duration=0.01 if i % 3 else 2.0, total_duration=0.01,
                status_code=503 if failing else 200))

    for k in range(120):
        runs(now - (120 - k) * 60, 0)
    await engine.start()
    for round_ in range(1, 4):  # alerts fire, then state and notification log as they stay
        runs(now, round_)
        await engine.evaluate(now)
        now += 60
    for round_ in range(4, 7):
        runs(now, round_)
        with cycles_kept() as found:
            handed = await engine.evaluate(now)
        assert not found, described(found)
        now += 60
    assert handed, "no notification in the passes measured"
    await engine.close()
