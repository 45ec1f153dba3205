"""Early evaluations judge only what changed (alerts/concerns.py): a wake for one integration's check does
not judge another's; a deadline judges its alert's check; and evaluations at the same moments give the
same alert states and notifications whether the early ones are incremental or full passes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_alert_engine import T0, Clock, Sink

from alerts.engine import AlertEngine
from alerts.model import AlertStatus, Notification
from alerts.rules import RULES, Condition, RuleInput
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config

INTEGRATIONS = ("acme", "beta", "gamma")
CHECKS = ("api", "login")


def config(*, for_: str = "0s", interval: str = "15s", flapping_window: str = "1h") -> Config:
    # probe_down only: its verdict moves with results alone (the windowed rules also move as time passes,
    # which only the next full pass judges, by design)
    rules = {"error_rate": {"enabled": False}, "latency": {"enabled": False},
             "probe_down": {"consecutive_failures": 2, "for": for_, "keep_firing_for": "0s"}}
    integrations = {
        name: {"checks": [{"name": c, "kind": "http", "url": f"https://{name}.test/{c}", "interval": "15s"}
                          for c in CHECKS], "alerts": rules}
        for name in INTEGRATIONS
    }
    return parse_config(yaml.safe_dump({
        "monitor": {"evaluation_interval": interval},
        "integrations": integrations,
        "alerting": {"group_wait": "10s", "group_interval": "30s", "flapping": {"window": flapping_window}},
    }), env={})


def engine(cfg: Config, clock: Clock, sink: Sink, *, autorun: bool = False) -> AlertEngine:
    return AlertEngine(cfg, metrics=Metrics(), redactor=Redactor(), sink=sink, clock=clock, autorun=autorun)


def result(integration: str, check: str, at: float, ok: bool) -> CheckResult:
    return CheckResult(integration=integration, check=check, kind="http", ok=ok,
                       error_class=None if ok else ErrorClass.HTTP_5XX, detail="", started_at=at, duration=0.1,
                       total_duration=0.1, status_code=200 if ok else 503)


class Judged:
    """The seam: probe_down wrapped, noting which checks of which integration each evaluation judged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.called = asyncio.Event()
        rule = RULES["probe_down"]

        def counting(inp: RuleInput) -> Iterable[Condition]:
            self.calls.append((inp.integration, tuple(c.name for c in inp.checks)))
            self.called.set()
            return rule(inp)

        monkeypatch.setitem(RULES, "probe_down", counting)

    def take(self) -> dict[str, tuple[str, ...]]:
        calls, self.calls = self.calls, []
        return dict(calls)


async def test_a_wake_for_one_check_judges_that_check_only(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, sink = Clock(), Sink()
    eng = engine(config(), clock, sink)
    judged = Judged(monkeypatch)
    for name in INTEGRATIONS:
        for check in CHECKS:
            eng.on_result(result(name, check, clock.now, True))
    await eng.evaluate()
    assert judged.take() == {name: CHECKS for name in INTEGRATIONS}  # a full pass: everything

    clock.now += 5
    eng.on_result(result("acme", "login", clock.now, False))
    await eng.evaluate(full=False)
    assert judged.take() == {"acme": ("login",)}  # beta and gamma not even looked at
    await eng.evaluate(full=False)
    assert judged.take() == {}  # nothing new since

    clock.now += 5
    eng.on_result(result("acme", "login", clock.now, False))  # the second failure in a row: probe_down fires
    eng.on_result(result("beta", "api", clock.now, True))
    await eng.evaluate(full=False)
    assert judged.take() == {"acme": ("login",), "beta": ("api",)}
    assert eng.states["acme/probe_down/login/critical"].status is AlertStatus.FIRING
    await eng.evaluate()
    assert judged.take() == {name: CHECKS for name in INTEGRATIONS}


async def test_a_deadline_judges_its_alert(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, sink = Clock(), Sink()
    eng = engine(config(for_="30s"), clock, sink)
    judged = Judged(monkeypatch)
    await eng.evaluate()
    for _ in range(2):
        clock.now += 5
        eng.on_result(result("beta", "api", clock.now, False))
    await eng.evaluate(full=False)
    key = "beta/probe_down/api/critical"
    assert eng.states[key].status is AlertStatus.PENDING and eng.next_due == clock.now + 30
    judged.take()
    clock.now += 30
    await eng.evaluate(full=False)  # no new result: the deadline alone brings beta/api in
    assert judged.take() == {"beta": ("api",)}
    assert eng.states[key].status is AlertStatus.FIRING


async def test_the_loop_wakes_for_a_new_failure_and_judges_only_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real evaluation loop (a real clock): a full pass at start, then a check starting to fail wakes it
    long before the next interval, and that evaluation judges the failing check alone."""
    sink = Sink()
    eng = AlertEngine(config(interval="10m"), metrics=Metrics(), redactor=Redactor(), sink=sink)
    judged = Judged(monkeypatch)
    for name in INTEGRATIONS:
        for check in CHECKS:
            eng.on_result(result(name, check, T0, True))
    await eng.start()
    try:
        async with asyncio.timeout(10):
            while len(judged.calls) < len(INTEGRATIONS):
                judged.called.clear()
                await judged.called.wait()
        assert judged.take() == {name: CHECKS for name in INTEGRATIONS}
        judged.called.clear()
        eng.on_result(result("gamma", "api", T0 + 1, False))
        async with asyncio.timeout(10):  # WAKE_GAP (1 s) after the first pass
            await judged.called.wait()
        # A window for judgements the wake must not make (of the other integrations): they would come in the
        # same pass, on loop turns the loop runs before this timer however loaded the machine.
        await asyncio.sleep(0.1)
        assert judged.take() == {"gamma": ("api",)}
    finally:
        await eng.close()


def _states(eng: AlertEngine) -> dict[str, tuple[Any, ...]]:
    return {k: (s.status, s.pending_since, s.firing_since, s.resolved_at, s.transitions, s.flapping)
            for k, s in eng.states.items()}


def _told(notifications: list[Notification]) -> list[tuple[Any, ...]]:
    return [(n.group_key, n.created_at, n.incident, tuple((a.key, a.status, a.flapping) for a in n.alerts))
            for n in notifications]


_STEP = st.tuples(
    st.integers(min_value=1, max_value=40),  # seconds on
    st.lists(st.tuples(st.sampled_from(INTEGRATIONS), st.sampled_from(CHECKS), st.booleans()), max_size=4),
    st.booleans(),  # a full pass (else an early evaluation)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEP, min_size=1, max_size=25), for_=st.sampled_from(["0s", "20s"]))
def test_early_evaluations_judge_as_full_passes_would(steps: list[Any], for_: str) -> None:
    """Two engines get the same results at the same moments and evaluate at the same moments: one with
    early evaluations incremental, one with every evaluation a full pass. After every evaluation their
    alert states and the notifications handed out are the same."""

    async def run() -> None:
        cfg = config(for_=for_, flapping_window="1d")  # no transition ages out of the window meanwhile
        clocks = Clock(), Clock()
        sinks = Sink(), Sink()
        early, full = (engine(cfg, clock, sink) for clock, sink in zip(clocks, sinks, strict=True))
        for eng in (early, full):
            await eng.start()
        for seconds, results, full_pass in steps:
            for clock in clocks:
                clock.now += seconds
            for integration, check, ok in results:
                for eng, clock in zip((early, full), clocks, strict=True):
                    eng.on_result(result(integration, check, clock.now, ok))
            await early.evaluate(full=full_pass)
            await full.evaluate()
            assert _states(early) == _states(full)
            assert _told(sinks[0].got) == _told(sinks[1].got)
            assert early.next_due == full.next_due
        for eng in (early, full):
            await eng.close()

    asyncio.run(run())
