"""Sampling the monitor's own health for the self-health rules (alerts/self_health.py), once per evaluation.

Notifiers: read back from ``integration_notifications_total``, a notifier is failing when, since the
last evaluation, deliveries failed and none succeeded (no traffic: no verdict). The notification queue
is failing when the engine could not hand its last notification over. Scheduler lag: the mean of
``integration_monitor_scheduler_lag_seconds`` over the runs since the last evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerts.self_health import HealthSample

if TYPE_CHECKING:
    from alerts.inputs import AlertMetrics


class HealthSampler:
    def __init__(self, metrics: AlertMetrics) -> None:
        self._metrics = metrics
        self._marks: dict[str, float] = {}  # counter values at the previous sample

    def sample(self, *, redis_up: bool | None, redis_error: str, submit_failing: bool | None) -> HealthSample:
        notifiers: dict[str, bool | None] = {}
        sent: dict[str, float] = {}
        failed: dict[str, float] = {}
        for metric in self._metrics.notifications.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                name, result = sample.labels.get("notifier", ""), sample.labels.get("result", "")
                if result == "sent":
                    sent[name] = sample.value
                elif result == "failed":
                    failed[name] = sample.value
        for name in set(sent) | set(failed):
            sent_delta = self._delta(f"sent|{name}", sent.get(name, 0.0))
            failed_delta = self._delta(f"failed|{name}", failed.get(name, 0.0))
            notifiers[name] = False if sent_delta > 0 else (True if failed_delta > 0 else None)
        if submit_failing is not None:
            notifiers["queue"] = submit_failing
        lag = None
        for metric in self._metrics.scheduler_lag.collect():
            total = count = 0.0
            for sample in metric.samples:
                if sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
            runs = self._delta("lag_count", count)
            lag_sum = self._delta("lag_sum", total)
            lag = lag_sum / runs if runs > 0 else None
        return HealthSample(redis_up=redis_up, notifiers=notifiers, scheduler_lag=lag, redis_error=redis_error)

    def _delta(self, mark: str, value: float) -> float:
        previous = self._marks.get(mark)
        self._marks[mark] = value
        return 0.0 if previous is None else value - previous
