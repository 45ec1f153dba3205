"""What a full pass remembers from the last one gives what making everything anew gives.

A firing alert is judged the same pass after pass, and what it costs a pass is kept where it is made:
a window's error classes (``CheckStats._classified``, until a run is added), the error-rate rule's
condition of a tier that fires (``error_rate._firing``), the alert's content (``Stepper._content``), what a
notification tells of it (``routing.Outgoing``), its stored text (``codec.state_to_json`` with the store's
texts) — those four in a ``LastMade`` of the engine, its stepper, its flusher and its store — and its gauges
(``FiringGauges``, set only when their value changes: checked against the states); the latency rule's
quantile sorts the window's latencies found by bisecting (``CheckStats.latency_quantile``).

Two engines get the same results at the same moments (failures of several classes and details, slow runs,
runs reported out of order and a day late, secrets rotated, reloads, restarts from the stored state) and
evaluate at the same moments, one with every memo off and the quantile walked as before: after every
evaluation their alert states (content included), the notifications handed out, the next deadline, the
stored texts and the gauges are the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_alert_engine import Clock, Sink

from alerts import stats
from alerts.codec import alert_to_dict, state_to_json
from alerts.engine import AlertEngine
from alerts.memo import LastMade
from alerts.model import Alert, AlertStatus, Severity
from alerts.routing import inhibited_by
from alerts.state import AlertState
from alerts.stats import CheckStats
from alerts.store import AlertStore
from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult, RequestSummary
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config

INTEGRATIONS = ("acme", "beta")
CHECKS = ("api", "login")
CLASSES = [None, None, None, ErrorClass.HTTP_5XX, ErrorClass.TIMEOUT, ErrorClass.AUTH]
SECRET = "s3cr3t-token-value"


def config(variant: int) -> Config:
    """Tiers short enough to fire and clear within the steps below; ``variant`` 1: a reload that changes
    the texts (SLO, runbook) and a timing."""
    rules = f"""
        error_rate:
          slo: {0.99 if variant == 0 else 0.95}
          min_samples: 3
          min_short_samples: 1
          keep_firing_for: {"30s" if variant == 0 else "10s"}
          windows:
            - {{long: 2m, short: 30s, factor: 20, severity: critical}}
            - {{long: 10m, short: 2m, factor: 5, severity: warning}}
            - {{long: 1h, short: 5m, factor: 2, severity: warning}}
        latency: {{window: 1m, min_samples: 2, threshold: 1s, keep_firing_for: 20s}}
        probe_down: {{consecutive_failures: 2, keep_firing_for: 15s}}"""
    checks = "".join(f"\n        - {{name: {c}, kind: http, url: 'https://x.test/{c}', interval: 15s}}" for c in CHECKS)
    runbook = "\n      runbook_url: https://runbooks.test/" if variant == 1 else ""
    integrations = "".join(f"\n    {name}:{runbook}\n      checks:{checks}\n      alerts:{rules}"
                           for name in INTEGRATIONS)
    return parse_config(f"""
monitor: {{evaluation_interval: 15s}}
alerting: {{group_wait: 10s, group_interval: 30s, flapping: {{window: 1h}}}}
integrations:{integrations}
""", env={})


def result(integration: str, check: str, at: float, error: ErrorClass | None, detail: int,
           latency: float) -> CheckResult:
    request = RequestSummary(method="GET", url=f"https://{integration}.test/{check}")
    status = None if error is ErrorClass.TIMEOUT else 200 if error is None else 500 + min(detail, 1)
    return CheckResult(integration=integration, check=check, kind="http", ok=error is None, error_class=error,
                       detail="" if error is None else f"{error}: failure {min(detail, 1)}", started_at=at,
                       duration=latency, total_duration=latency,
                       status_code=status,
                       request=None if error is None else request,
                       response_excerpt=None if error is None else f"body {detail} {SECRET if detail == 2 else ''}")


# -- the engine without its memos (as before them) --------------------------------------------------------------

def _quantile_walked(self: CheckStats, now: float, seconds: float, q: float) -> tuple[float | None, int]:
    ats, latencies = self._at, self._latency
    values = sorted(latency for i in self._raw_since(now - seconds)
                    if (latency := latencies[i]) != stats._NO_LATENCY and ats[i] <= now)
    if not values:
        return None, 0
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1] / 1e6, len(values)


def without_memos(patched: pytest.MonkeyPatch) -> None:
    patched.setattr(LastMade, "get", lambda self, key, inputs: None)  # every value made anew
    patched.setattr(CheckStats, "_classified", lambda self: {})
    patched.setattr(CheckStats, "latency_quantile", _quantile_walked)


def _gauges(metrics: Metrics) -> dict[tuple[str, ...], tuple[float, float]]:
    """The labels exported → (integration_alert_firing, integration_alert_inhibited)."""
    values: dict[str, dict[tuple[str, ...], float]] = {}
    for gauge in (metrics.alert_firing, metrics.alert_inhibited):
        for family in gauge.collect():
            for sample in family.samples:
                labels = (sample.labels["integration"], sample.labels["alert"], sample.labels["severity"])
                values.setdefault(family.name, {})[labels] = sample.value
    firing, inhibited = values.get("integration_alert_firing", {}), values.get("integration_alert_inhibited", {})
    return {labels: (value, inhibited[labels]) for labels, value in firing.items()}


def _gauges_of(states: dict[str, AlertState]) -> dict[tuple[str, ...], tuple[float, float]]:
    """What the gauges say of these states: per labels with an alert firing, 1 and whether every alert
    firing under them is inhibited (the labels exported before and not firing now: 0 and 0)."""
    inhibitions = inhibited_by(states)
    under: dict[tuple[str, ...], list[bool]] = {}
    for key, state in states.items():
        if state.status is AlertStatus.FIRING and state.alert is not None:
            labels = (state.alert.integration, state.alert.alert, str(state.alert.severity))
            under.setdefault(labels, []).append(key in inhibitions)
    return {labels: (1.0, float(all(inhibited))) for labels, inhibited in under.items()}


_RESULT = st.tuples(
    st.sampled_from(INTEGRATIONS), st.sampled_from(CHECKS), st.sampled_from(CLASSES),
    st.sampled_from([0, 1, 1, 2]),  # the failure's detail and status (0 or 1), its response (2: with the secret)
    st.sampled_from([0.1, 0.1, 3.0]),  # latency
    st.sampled_from([0.0, 0.0, 0.0, 0.0, -20.0, -86400.0]),  # started this long before now: late, a day late
)
_STEP = st.tuples(
    st.sampled_from([15, 15, 15, 5, 40]) | st.integers(min_value=1, max_value=300),  # seconds on
    st.lists(_RESULT, max_size=4),
    # every check a run of this class and detail (a steady cadence: windows that keep their counts while
    # the last failure changes), or not
    st.none() | st.tuples(st.sampled_from(CLASSES), st.sampled_from([0, 1, 2])),
    st.booleans(),  # a full pass (else an early evaluation)
    st.sampled_from([None] * 12 + ["reload 0", "reload 1", "restart", "rotate"]),  # before the evaluation
    st.sampled_from([1, 1, 1, 4, 12]),  # times over (the same runs again at the same cadence: alerts that
    # keep firing on the same counts)
)


class Pair:
    """Two engines fed and evaluated alike, the second with every memo off."""

    def __init__(self) -> None:
        self.clocks, self.sinks = (Clock(), Clock()), (Sink(), Sink())
        self.stores = (AlertStore(None), AlertStore(None))
        self.redactors = (Redactor(), Redactor())
        self.metrics = (Metrics(), Metrics())
        self.cfg = config(0)
        self.engines = [self._engine(0), self._engine(1)]

    def _engine(self, n: int) -> AlertEngine:
        return AlertEngine(self.cfg, metrics=self.metrics[n], redactor=self.redactors[n], sink=self.sinks[n],
                           clock=self.clocks[n], store=self.stores[n], autorun=False)

    async def start(self) -> None:
        for eng in self.engines:
            await eng.start()

    async def close(self) -> None:
        for eng in self.engines:
            await eng.close()

    async def step(self, seconds: int, results: list[Any], every: Any, full_pass: bool, action: str | None,
                   monkeypatch: pytest.MonkeyPatch) -> None:
        engines = self.engines
        for clock in self.clocks:
            clock.now += seconds
        if every is not None:
            results = [(i, c, every[0], every[1], 0.1, 0.0) for i in INTEGRATIONS for c in CHECKS] + results
        for integration, check, error, detail, latency, late in results:
            for eng, clock in zip(engines, self.clocks, strict=True):
                eng.on_result(result(integration, check, clock.now + late, error, detail, latency))
        if action is not None and action.startswith("reload"):
            self.cfg = config(int(action[-1]))
            for eng in engines:
                eng.on_config(self.cfg)
        elif action == "restart":
            await self.close()
            self.engines = engines = [self._engine(0), self._engine(1)]
            await self.start()
        elif action == "rotate":
            for redactor in self.redactors:
                redactor.rotate("token", [SECRET])
        await engines[0].evaluate(full=full_pass)
        with monkeypatch.context() as patched:
            without_memos(patched)
            await engines[1].evaluate(full=full_pass)
        assert engines[0].states == engines[1].states
        assert self.sinks[0].got == self.sinks[1].got
        assert engines[0].next_due == engines[1].next_due
        assert self.stores[0]._memory == self.stores[1]._memory
        gauges = _gauges(self.metrics[0])
        assert gauges == _gauges(self.metrics[1])
        assert gauges == {**dict.fromkeys(gauges, (0.0, 0.0)), **_gauges_of(engines[0].states)}


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=30))
# Checks failing at a steady cadence (their windows' counts stay the same from run to run) whose last failure
# changes: its detail, status and response (fails with those left out of the memos' inputs); then a secret
# learnt that their last response holds (fails with the redactor's generation left out).
@example(steps=[(15, [], (ErrorClass.HTTP_5XX, detail), True, action, times) for detail, action, times in (
    (0, None, 12), (1, None, 3), (2, None, 3), (2, "rotate", 1), (2, None, 2))])
# ... and then healthy: the critical tier resolves while the warning ones still fire, no longer inhibited
# (fails with a gauge set only when first exported).
@example(steps=[(15, [], (ErrorClass.HTTP_5XX, 0), True, None, 12), (15, [], (None, 0), True, None, 6)])
# Timeouts, then one 5xx, then timeouts again: the warning tiers' windows hold the classes in another order
# when counted anew than when kept from an earlier pass (fails with the classes stored in counting order).
@example(steps=[(15, [], None, False, None, 1)] * 3 + [
    (15, [], (ErrorClass.TIMEOUT, 0), False, None, 1), (60, [], (ErrorClass.HTTP_5XX, 0), False, None, 1),
    (300, [], (ErrorClass.TIMEOUT, 0), False, None, 12)])
def test_a_pass_with_its_memos_judges_and_tells_as_one_making_everything_anew(
    steps: list[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run() -> None:
        pair = Pair()
        await pair.start()
        for seconds, results, every, full_pass, action, times in steps:
            for _ in range(times):
                await pair.step(seconds, results, every, full_pass, action, monkeypatch)
        await pair.close()

    asyncio.run(run())


# -- the parts --------------------------------------------------------------------------------------------------

def _alerts() -> Iterator[Alert]:
    yield Alert(key="acme/error_rate/api/critical", integration="acme", alert="error_rate",
                severity=Severity.CRITICAL, status=AlertStatus.FIRING, summary='acme/api: "5xx" ×3 — é',
                check="api", details={"error rate": "50.0%"}, error_classes={"http_5xx": 3})


@settings(max_examples=200, deadline=None)
@given(status=st.sampled_from(list(AlertStatus)), times=st.lists(st.none() | st.floats(0, 2e9), min_size=4,
                                                                  max_size=4),
       transitions=st.lists(st.floats(0, 2e9), max_size=3), flapping=st.booleans(), with_alert=st.booleans(),
       changed=st.booleans())
def test_a_state_is_stored_as_one_json_document_of_its_fields(
    status: AlertStatus, times: list[float | None], transitions: list[float], flapping: bool, with_alert: bool,
    changed: bool,
) -> None:
    """The state's text is ``json.dumps`` of its fields as before, its alert's text kept or made anew."""
    alert = next(_alerts()) if with_alert else None
    texts: LastMade[str, str] = LastMade()
    if alert is not None:
        state_to_json(AlertState(key=alert.key, alert=alert), texts)  # its text kept
        if changed:
            alert = dataclasses.replace(alert, summary="other")  # another content of the same key
    state = AlertState(key="acme/error_rate/api/critical", status=status, pending_since=times[0],
                       firing_since=times[1], last_true=times[2], resolved_at=times[3],
                       transitions=tuple(transitions), flapping=flapping, alert=alert)
    assert state_to_json(state, texts) == json.dumps({
        "key": state.key, "status": str(state.status), "pending_since": state.pending_since,
        "firing_since": state.firing_since, "last_true": state.last_true, "resolved_at": state.resolved_at,
        "transitions": list(state.transitions), "flapping": state.flapping,
        "alert": alert_to_dict(alert, notes=False) if alert is not None else None,
    })
