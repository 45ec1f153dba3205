"""What alerting reads from the daemon that runs it, as Protocols the daemon's own objects satisfy.

alerts/ never imports the daemon (monitor/): the daemon's config model (``monitor.settings.Config``) and
its metrics (``monitor.metrics.Metrics``) have these shapes, and monitor/wiring.py hands them to the alert
engine and the notifier dispatcher. Read-only properties, so any object with such attributes fits.
Also the one question both ask of a reload's two configs (``retargeted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge
    from prometheus_client.metrics_core import Metric

    from alerts.config import AlertingConfig, AlertRulesConfig
    from alerts.webhook_config import ActiveSchedule, WebhookConfig


class CheckView(Protocol):
    """A configured check, as the rules read it (a rule may also look for optional fields such as
    ``expect.max_latency``, which only some kinds of check have)."""

    @property
    def name(self) -> str: ...

    @property
    def interval(self) -> float: ...

    @property
    def target_fingerprint(self) -> str:
        """Where its requests go (its kind and URLs), digested: a reload that changes it retargets the check
        (checks/base.py ``retargets``)."""
        ...


class QuotaView(Protocol):
    """A configured quota: its name is all alerting reads (is an alert's quota still configured)."""

    @property
    def name(self) -> str: ...


class TrafficView(Protocol):
    """An integration's ``traffic`` section, as the ``traffic_silence`` rule reads it."""

    @property
    def max_silence(self) -> float | None: ...

    @property
    def schedule(self) -> ActiveSchedule | None: ...


class IntegrationView(Protocol):
    """One integration's config: its ``alerts`` rules, its checks and quotas, notes file, runbook, webhooks
    and real-traffic section."""

    @property
    def alerts(self) -> AlertRulesConfig: ...

    @property
    def checks(self) -> Sequence[CheckView]: ...

    @property
    def quotas(self) -> Sequence[QuotaView]: ...

    @property
    def notes(self) -> Path | None: ...

    @property
    def runbook_url(self) -> str | None: ...

    @property
    def webhooks(self) -> WebhookConfig | None: ...

    @property
    def traffic(self) -> TrafficView | None: ...


class MonitorView(Protocol):
    @property
    def evaluation_interval(self) -> float: ...

    @property
    def public_url(self) -> str: ...  # where people reach the monitor (links to /api/status in alerts)


class ConfigView(Protocol):
    """The daemon's config as alerting reads it (handed again, whole, on every reload)."""

    @property
    def monitor(self) -> MonitorView: ...

    @property
    def alerting(self) -> AlertingConfig: ...

    @property
    def integrations(self) -> Mapping[str, IntegrationView]: ...


def retargeted(before: ConfigView, after: ConfigView) -> list[tuple[str, str]]:
    """(integration, check) of every check still configured whose kind or request URLs changed: what its
    runs told about its endpoint (a certificate's expiry) is another endpoint's now. The alert engine
    forgets it (alerts/stats.py ``retarget``), and so does the daemon's status and metrics."""
    out = []
    for integration, icfg in after.integrations.items():
        old = before.integrations.get(integration)
        was = {c.name: c for c in old.checks} if old is not None else {}
        for check in icfg.checks:
            prior = was.get(check.name)
            # checks/base.py ``retargets``, which alerts/ cannot import (alerts and checks are independent
            # layers): the fingerprint says where a check points, both compare it.
            if prior is not None and prior is not check and prior.target_fingerprint != check.target_fingerprint:
                out.append((integration, check.name))
    return out


class HistogramView(Protocol):
    """A histogram without labels (prometheus-client's ``Histogram`` or the daemon's own): observed, and
    read back as metric families (its ``_count`` and ``_sum`` samples)."""

    def observe(self, amount: float) -> None: ...

    def collect(self) -> Iterable[Metric]: ...


class NotificationMetrics(Protocol):
    @property
    def notifications(self) -> Counter: ...  # labels: notifier, result (sent / failed / suppressed)

    @property
    def component_errors(self) -> Counter: ...  # labels: component (crashes of its background loops)

    @property
    def component_ok(self) -> Gauge: ...  # labels: component (1 while its own work succeeds)


class AlertMetrics(NotificationMetrics, Protocol):
    """The metric objects the alert engine writes (and reads back for the monitor's self-health)."""

    @property
    def alert_firing(self) -> Gauge: ...  # labels: integration, alert, severity

    @property
    def alert_inhibited(self) -> Gauge: ...  # labels: integration, alert, severity (1: firing, none of it told)

    @property
    def scheduler_lag(self) -> HistogramView: ...


class RedisHealthView(Protocol):
    """The daemon's one verdict on its Redis connection (monitor.redis_connection.RedisHealth)."""

    @property
    def up(self) -> bool | None: ...  # None: not checked yet

    @property
    def error(self) -> str: ...  # redacted, while down
