"""CheckResult → Prometheus metrics, the status store and every component's ``on_result``.

This is the hot path (one call per probe run, thousands per minute at scale): each check's series
(monitor/probe_series.py) is looked up once and cached, and recording a run is a handful of additions
on plain numbers, no label lookups or locks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from integration_kit.results import PHASES
from monitor.metrics import remove_series
from monitor.status import StatusStore

if TYPE_CHECKING:
    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.component import Component
    from monitor.metrics import Metrics

log = logging.getLogger(__name__)
_PHASES = frozenset(PHASES)


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
        self._probes = metrics.probes
        self._bucket = metrics.probes.bucket_index
        # In a cluster: whether a component takes this integration's results (owner-scoped components take
        # only those of the integrations this replica owns; monitor/cluster_runtime.py).
        self.takes: Callable[[Component, str], bool] | None = None
        self._steps: dict[tuple[str, str], set[str]] = {}  # flow steps with series, per check

    def record(self, result: CheckResult) -> None:
        key = (result.integration, result.check)
        series = self._probes.series(*key)

        series.success = 1.0 if result.ok else 0.0
        series.buckets[self._bucket(result.duration)] += 1
        series.duration_sum += result.duration
        # The last run's phases and status code, as /api/status shows them: a run that never got a response
        # leaves none of the run before it (a 200 and its ttfb beside a refused connection).
        phases = series.phases
        if phases.keys() != result.phases.keys():
            phases.clear()
        for phase, value in result.phases.items():
            if phase in _PHASES:  # bounded label set: ignore a phase a probe invents
                phases[phase] = value
        if result.ok:
            series.runs_ok += 1
            series.streak = 0.0
        else:
            series.runs_failed += 1
            series.streak = (series.streak or 0.0) + 1.0
            if result.error_class is not None:
                error_class = result.error_class.value
                series.errors[error_class] = series.errors.get(error_class, 0) + 1
        if result.attempts > 1:
            series.retries += result.attempts - 1
        series.status_code = None if result.status_code is None else float(result.status_code)
        if result.tls_expiry is not None:
            series.tls_expiry = result.tls_expiry

        if result.steps or key in self._steps:
            self._record_steps(key, result)

        self.status.entry(*key).update(result, self.redactor)

        takes = self.takes
        for component in self.components:
            if takes is not None and not takes(component, result.integration):
                continue
            try:
                component.on_result(result)
            except Exception:
                # A component bug must not stop the others nor the probes; the traceback goes through
                # the redacting log filter like everything else.
                log.exception("component %s failed on the result of %s/%s", component.name, *key)

    def continued(self, integration: str, check: str, streak: int) -> None:
        """A check of an integration taken over has failed ``streak`` runs in a row, the previous owner's
        counted (monitor/cluster/streaks.py): the components that count them too continue from there."""
        takes = self.takes
        for component in self.components:
            on_streak = getattr(component, "on_streak_continued", None)
            if on_streak is None or (takes is not None and not takes(component, integration)):
                continue
            try:
                on_streak(integration, check, streak)
            except Exception:
                log.exception("component %s failed on the continued streak of %s/%s", component.name, integration,
                              check)

    def _record_steps(self, key: tuple[str, str], result: CheckResult) -> None:
        """A flow's per-step series: the steps of this run; a step that did not run (the flow stopped
        before it, or a cleanup with nothing to clean) has no success sample this time."""
        ran = {s.name for s in result.steps if not s.skipped}
        for name in self._steps.get(key, set()) - ran:
            remove_series(self.metrics.step_success, *key, name)
        for step in result.steps:
            if step.skipped:
                continue
            self.metrics.step_duration.labels(*key, step.name).set(step.duration)
            self.metrics.step_success.labels(*key, step.name).set(1.0 if step.ok else 0.0)
        self._steps[key] = self._steps.get(key, set()) | ran

    def forget(self, integration: str, check: str) -> None:
        """Drop a removed check's series and status, so /metrics does not show it forever."""
        self._probes.remove(integration, check)
        for step in self._steps.pop((integration, check), set()):
            remove_series(self.metrics.step_duration, integration, check, step)
            remove_series(self.metrics.step_success, integration, check, step)
        self.status.forget(integration, check)

    def retain(self, checks: set[tuple[str, str]]) -> None:
        """After a reload: forget every check not in ``checks`` (the configured, enabled ones). The scheduler
        tells only what it stops probing here; in a cluster the owner also exports checks another replica
        probes, and a reshard may drop a removed check's job before the scheduler sees the new config."""
        for key in {*self._probes.keys(), *self.status.keys(), *self._steps} - checks:
            self.forget(*key)

    def retarget(self, checks: Iterable[tuple[str, str]]) -> None:
        """These checks' requests go elsewhere now (a reload changed their URLs or kind): what their old
        endpoint told and no run may replace is dropped from /metrics and /api/status, as the alert
        engine drops it (alerts/stats.py ``retarget``)."""
        for integration, check in checks:
            self._probes.retarget(integration, check)
            self.status.retarget(integration, check)
