"""CheckResult → Prometheus metrics, the status store and every component's ``on_result``.

This is the hot path (one call per probe run, thousands per minute at scale), so the label children of
each check are looked up once and cached: recording a run is a handful of attribute sets, no label
dictionary lookups in prometheus-client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from checks.base import PHASES, ErrorClass
from monitor.metrics import remove_series
from monitor.status import StatusStore

if TYPE_CHECKING:
    from checks.base import CheckResult
    from monitor.component import Component
    from monitor.metrics import Metrics
    from monitor.redact import Redactor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _CheckSeries:
    """The label children of one check, created once."""

    success: Any
    duration: Any
    runs_ok: Any
    runs_failed: Any
    retries: Any
    # Created on first value: a TLS expiry of 0 or a status code of 0 would be read as real values.
    status_code: Any = None
    tls_expiry: Any = None
    phases: dict[str, Any] = field(default_factory=dict)
    errors: dict[ErrorClass, Any] = field(default_factory=dict)


class Recorder:
    def __init__(
        self,
        metrics: Metrics,
        redactor: Redactor,
        status: StatusStore | None = None,
        components: Sequence[Component] = (),
    ) -> None:
        self.metrics = metrics
        self.redactor = redactor
        self.status = status if status is not None else StatusStore()
        self.components: Sequence[Component] = components
        self._series: dict[tuple[str, str], _CheckSeries] = {}

    def record(self, result: CheckResult) -> None:
        key = (result.integration, result.check)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._make_series(*key)

        series.success.set(1 if result.ok else 0)
        series.duration.observe(result.duration)
        for phase, value in result.phases.items():
            gauge = series.phases.get(phase)
            if gauge is None:
                if phase not in PHASES:
                    continue  # bounded label set: ignore a phase a probe invents
                gauge = series.phases[phase] = self.metrics.probe_phase.labels(*key, phase)
            gauge.set(value)
        if result.ok:
            series.runs_ok.inc()
        else:
            series.runs_failed.inc()
            error_class = result.error_class
            if error_class is not None:
                counter = series.errors.get(error_class)
                if counter is None:
                    counter = series.errors[error_class] = self.metrics.probe_errors.labels(
                        result.integration, result.check, error_class.value
                    )
                counter.inc()
        if result.attempts > 1:
            series.retries.inc(result.attempts - 1)
        if result.status_code is not None:
            if series.status_code is None:
                series.status_code = self.metrics.probe_status_code.labels(*key)
            series.status_code.set(result.status_code)
        if result.tls_expiry is not None:
            if series.tls_expiry is None:
                series.tls_expiry = self.metrics.probe_tls_expiry.labels(*key)
            series.tls_expiry.set(result.tls_expiry)

        self.status.entry(*key).update(result, self.redactor)

        for component in self.components:
            try:
                component.on_result(result)
            except Exception:
                # A component bug must not stop the others nor the probes; the traceback goes through
                # the redacting log filter like everything else.
                log.exception("component %s failed on the result of %s/%s", component.name, *key)

    def _make_series(self, integration: str, check: str) -> _CheckSeries:
        m = self.metrics
        labels = (integration, check)
        return _CheckSeries(
            success=m.probe_success.labels(*labels),
            duration=m.probe_duration.labels(*labels),
            runs_ok=m.probe_runs.labels(*labels, "success"),
            runs_failed=m.probe_runs.labels(*labels, "failure"),
            retries=m.probe_retries.labels(*labels),
        )

    def forget(self, integration: str, check: str) -> None:
        """Drop a removed check's series and status, so /metrics does not show it forever."""
        series = self._series.pop((integration, check), None)
        self.status.forget(integration, check)
        if series is None:
            return
        m = self.metrics
        labels = (integration, check)
        for metric in (m.probe_success, m.probe_duration, m.probe_retries):
            remove_series(metric, *labels)
        if series.status_code is not None:
            remove_series(m.probe_status_code, *labels)
        if series.tls_expiry is not None:
            remove_series(m.probe_tls_expiry, *labels)
        for phase in series.phases:
            remove_series(m.probe_phase, *labels, phase)
        for outcome in ("success", "failure"):
            remove_series(m.probe_runs, *labels, outcome)
        for error_class in series.errors:
            remove_series(m.probe_errors, *labels, error_class.value)

