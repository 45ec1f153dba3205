"""The recorder's streak gauge: what the probe_down rule (built-in and Prometheus) counts."""

from __future__ import annotations

from integration_kit.errors import ErrorClass
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.metrics import Metrics
from monitor.recorder import Recorder


def _result(ok: bool) -> CheckResult:
    return CheckResult(
        integration="acme", check="api", kind="http", ok=ok, error_class=None if ok else ErrorClass.HTTP_5XX,
        detail="" if ok else "http_5xx: 503 Service Unavailable", started_at=1.0, duration=0.01, total_duration=0.01,
    )


def test_consecutive_failures_count_up_and_reset_on_success() -> None:
    metrics = Metrics()
    recorder = Recorder(metrics, Redactor())
    seen = []
    for ok in (False, False, False, True, False):
        recorder.record(_result(ok))
        seen.append(metrics.registry.get_sample_value(
            "integration_probe_consecutive_failures", {"integration": "acme", "check": "api"}
        ))
    assert seen == [1.0, 2.0, 3.0, 0.0, 1.0]
    text = metrics.probes.render_text()
    assert 'integration_probe_consecutive_failures{integration="acme",check="api"} 1.0' in text
