"""Every metric the monitor exports, in one place (names and labels are contracts: README, "Metrics").

Metrics live on a registry owned by the ``Metrics`` instance, so several daemons (tests) can live in
one process. Labels are bounded: integration, check, quota and alert names come from config, error
classes and phases from fixed sets; never a label per Redis key, URL or event.
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

from integration_kit.traffic import LATENCY_BOUNDS
from monitor import __version__
from monitor.probe_series import ProbeSeries
from monitor.scrape_priority import ScrapePriority

# No ``*_created`` series: they would add one series per counter/histogram child (10,000 checks → tens
# of thousands of lines per scrape) that no dashboard or rule here reads. Process-wide by design.
disable_created_metrics()

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# How much one piece of /metrics holds (Metrics.exposition): about 5 ms of rendering, or 1 MB of text when
# the parts are cheap (each check's histogram text is kept between runs: joining, encoding and sending a
# piece then cost more than rendering it). At 50,000 checks a fixed 500 checks a piece made ~900 pieces,
# each waiting for a turn of a busy loop: seconds per scrape (bench/scrape.py --turn-ms).
PIECE_SECONDS = 0.005
PIECE_BYTES = 1 << 20
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_IC = ("integration", "check")
_Q = ("integration", "quota", "source")


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, duration_buckets: Sequence[float] = DURATION_BUCKETS
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        # Probes: integration_probe_success, _duration_seconds, _phase_seconds, _runs_total, _errors_total,
        # _retries_total, _http_status_code, _tls_cert_expiry_timestamp_seconds (names and help text in
        # monitor/probe_series.py: one collector, rendered fast; see there why).
        # ``duration_buckets``: monitor.probe_duration_buckets (each bound is one series per check).
        self.probes = ProbeSeries(tuple(duration_buckets), registry=r)
        # A scrape being written goes before the alert evaluation's slices (monitor/scrape_priority.py).
        self.scrape_priority = ScrapePriority()
        self.probe_backoff = Gauge(
            "integration_probe_quota_backoff",
            "1 while this integration's probes run slower because a quota is nearly used up", ("integration",),
            registry=r,
        )

        # Flows: one series per step of a flow check (step names come from config: bounded)
        self.step_duration = Gauge(
            "integration_probe_step_duration_seconds", "Duration of each step of a flow's last run, all attempts",
            ("integration", "check", "step"), registry=r,
        )
        self.step_success = Gauge(
            "integration_probe_step_success",
            "1 if the step succeeded in the flow's last run, 0 if it failed; absent when it did not run",
            ("integration", "check", "step"), registry=r,
        )

        # Auth
        self.token_requests = Counter(
            "integration_auth_token_requests",
            "OAuth2 token requests this replica made (not tokens read from the cache or another replica), by outcome",
            ("integration", "outcome"), registry=r,
        )

        # Quotas
        self.quota_used = Gauge(
            "integration_quota_used", "Units of the quota used in the current window", _Q, registry=r
        )
        self.quota_limit = Gauge("integration_quota_limit", "Size of the quota", _Q, registry=r)
        self.quota_ratio = Gauge("integration_quota_usage_ratio", "used / limit (not clamped)", _Q, registry=r)
        self.quota_reset = Gauge("integration_quota_reset_seconds", "Seconds until the window resets", _Q, registry=r)
        self.quota_exhaustion = Gauge(
            "integration_quota_exhaustion_seconds", "Projected seconds to 100% at the current burn rate", _Q, registry=r
        )
        self.quota_keys = Gauge(
            "integration_quota_keys", "Redis keys the quota's pattern matched at the last read", _Q, registry=r
        )
        self.quota_keys_near_limit = Gauge(
            "integration_quota_keys_near_limit", "Redis keys of the quota above its near_limit usage ratio", _Q,
            registry=r,
        )
        self.quota_keys_skipped = Gauge(
            "integration_quota_keys_skipped",
            "Redis keys the quota's pattern matched but not counted, by reason: name (not in the quota's format), "
            "value (an unexpected type or value), over_max_keys (beyond max_keys: not read)",
            (*_Q, "reason"), registry=r,
        )

        # Webhooks
        self.webhook_last_event = Gauge(
            "integration_webhook_last_event_timestamp_seconds", "Time of the last webhook event received",
            ("integration",), registry=r,
        )
        self.webhook_events = Counter(
            "integration_webhook_events", "Webhook deliveries received", ("integration",), registry=r
        )
        self.webhook_duplicates = Counter(
            "integration_webhook_duplicates", "Webhook deliveries that were duplicates", ("integration",), registry=r
        )
        self.webhook_duplicate_ratio = Gauge(
            "integration_webhook_duplicate_ratio",
            "Share of webhook deliveries that were duplicates over the configured window (absent below min_events)",
            ("integration",), registry=r,
        )
        self.webhook_type_last_event = Gauge(
            "integration_webhook_event_type_last_event_timestamp_seconds",
            "Time of the last webhook delivery of an event type (only types listed in config)",
            ("integration", "event_type"), registry=r,
        )

        # Real traffic: the integration services' own calls, as the kit records them in Redis
        self.traffic_requests = Counter(
            "integration_traffic_requests", "Calls the integration's services made, by final outcome (ok or class)",
            ("integration", "error_class"), registry=r,
        )
        self.traffic_responses = Counter(
            "integration_traffic_responses", "Calls that got a response, by the last HTTP status code",
            ("integration", "code"), registry=r,
        )
        self.traffic_duration = CountedHistogram(
            "integration_traffic_request_duration_seconds", "Duration of the last attempt of each call",
            LATENCY_BOUNDS, registry=r,
        )
        self.traffic_retries = Counter(
            "integration_traffic_retries", "Attempts beyond the first of the services' calls", ("integration",),
            registry=r,
        )
        self.traffic_throttled = Counter(
            "integration_traffic_throttled", "Calls that waited for the shared rate limiter", ("integration",),
            registry=r,
        )
        self.traffic_throttle_wait = Counter(
            "integration_traffic_throttle_wait_seconds", "Time the services' calls waited for the rate limiter",
            ("integration",), registry=r,
        )
        self.traffic_limiter_bypassed = Counter(
            "integration_traffic_limiter_bypassed",
            "Calls the services sent without the shared rate limiter (its Redis failed: unlimited)", ("integration",),
            registry=r,
        )
        self.traffic_lost = Counter(
            "integration_traffic_lost", "Calls the services counted but could not write to Redis", ("integration",),
            registry=r,
        )
        self.traffic_last_write = Gauge(
            "integration_traffic_last_write_timestamp_seconds", "Time of a service's latest write of traffic counters",
            ("integration",), registry=r,
        )

        # Alerts and notifications
        self.alert_firing = Gauge(
            "integration_alert_firing", "1 while the alert fires", ("integration", "alert", "severity"), registry=r
        )
        self.alert_inhibited = Gauge(
            "integration_alert_inhibited",
            "1 while the alert fires but is inhibited (a critical of the same alert fires): not notified",
            ("integration", "alert", "severity"), registry=r,
        )
        self.notifications = Counter(
            "integration_notifications", "Notifications by notifier and result (sent/failed/suppressed/fenced)",
            ("notifier", "result"), registry=r,
        )

        # The monitor itself
        self.redis_up = Gauge(
            "integration_monitor_redis_up", "1 while Redis answers the monitor's health check (PING)", registry=r
        )
        self.component_errors = Counter(
            "integration_monitor_component_errors",
            "Crashes of a component's background loop (each is logged and the loop restarted with back-off)",
            ("component",), registry=r,
        )
        self.component_ok = Gauge(
            "integration_monitor_component_ok",
            "1 while the component's own work succeeds (0: e.g. its Redis reads or writes are failing)",
            ("component",), registry=r,
        )
        self.scheduler_lag = RunHistogram(
            "integration_monitor_scheduler_lag_seconds", "Delay between a run's scheduled and actual start",
            LAG_BUCKETS, registry=r,
        )
        self.config_reload_ok = Gauge(
            "integration_monitor_config_last_reload_successful", "1 if the last config (re)load succeeded", registry=r
        )
        self.config_reload_time = Gauge(
            "integration_monitor_config_last_reload_success_timestamp_seconds", "Time of the last successful load",
            registry=r,
        )
        self.build_info = Gauge("integration_monitor_build_info", "Build information", ("version",), registry=r)
        self.build_info.labels(version=__version__).set(1)

        # Several replicas as one (monitor/cluster/): unregistered by the app when the daemon runs alone.
        self.cluster_members = Gauge(
            "integration_monitor_cluster_members", "Replicas holding a share of the work, as this replica sees them",
            registry=r,
        )
        self.owned_checks = Gauge(
            "integration_monitor_owned_checks", "Checks this replica probes (its share)", registry=r
        )
        self.owned_integrations = Gauge(
            "integration_monitor_owned_integrations",
            "Integrations this replica owns: their series, quota and webhook reads, back-off and alerts", registry=r,
        )
        self.ownership_changes = Counter(
            "integration_monitor_ownership_changes",
            "Checks (unit=check) and integrations (unit=integration) that moved to or from this replica",
            ("unit",), registry=r,
        )
        self.cluster_results = Counter(
            "integration_monitor_cluster_results",
            "Check results by path: sent to their integration's owner, received from another replica, kept "
            "here because Redis could not take them (fail open), lost (trimmed from this replica's stream before "
            "it read them), unreadable (skipped), duplicate (sent again after a flush that seemed to fail, "
            "dropped), recovered (read from a crashed owner's stream by the integration's new owner) or stale (of "
            "an endpoint a reload pointed the check away from, dropped by the owner)", ("path",),
            registry=r,
        )

    CLUSTER_FAMILIES = ("cluster_members", "owned_checks", "owned_integrations", "ownership_changes", "cluster_results")

    def drop_cluster_families(self) -> None:
        """A daemon on its own exports none of the cluster's metrics (absent, not 0)."""
        for name in self.CLUSTER_FAMILIES:
            with contextlib.suppress(KeyError):
                self.registry.unregister(getattr(self, name))

    def render_text(self) -> bytes:
        """The Prometheus text format of the whole registry, the probe families by the fast path."""
        with self.probes.excluded():
            rest = generate_latest(self.registry)
        return self.probes.render_text().encode() + rest

    def exposition(
        self, accept: str = "", *, piece_seconds: float = PIECE_SECONDS, piece_bytes: int = PIECE_BYTES
    ) -> tuple[str, Iterator[bytes]]:
        """The /metrics content type for an ``Accept`` header and the body in pieces, in the format
        prometheus-client's ``choose_encoder`` picks (OpenMetrics, which Prometheus asks for first, or
        the text format 0.0.4). The probe families come from the fast path in both, the rest from
        prometheus-client's encoder. Each piece is about ``piece_seconds`` of rendering or ``piece_bytes``
        of text, whichever comes first: the server writes them out on the event loop one by one, each after
        a turn of the loop, so a scrape never stalls the probes for long, and needs few turns (a busy
        loop's turns are what a scrape waits for)."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")

        def pieces() -> Iterator[bytes]:
            parts: list[str] = []
            size, started = 0, time.perf_counter()  # (again after each yield: the time between is the server's)
            for text in self.probes.iter_text(openmetrics=openmetrics):
                parts.append(text)
                size += len(text)
                if size >= piece_bytes or time.perf_counter() - started >= piece_seconds:
                    yield "".join(parts).encode()
                    parts.clear()
                    size, started = 0, time.perf_counter()
            with self.probes.excluded():
                rest = encoder(self.registry)
            yield "".join(parts).encode() + rest  # ends with "# EOF" in OpenMetrics, as it must

        return content_type, pieces()


class BucketCounts:
    """A histogram kept as counts per bucket (not cumulative, the last one above every bound) and a sum per
    label set, exported sample for sample as prometheus-client's ``Histogram`` with the same buckets: ``le``
    spelt by its ``floatToGoString`` ("1.0"), cumulative buckets up to "+Inf", ``_count`` and ``_sum``
    (tests/test_metrics_exposition.py holds each kind to it, byte for byte). The one exposition of the
    hand-built histograms below; each says how its counts arrive (``_series``)."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float], labels: Sequence[str], *,
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.bounds = tuple(float(b) for b in bounds if b != float("inf"))
        self._les = (*(floatToGoString(b) for b in self.bounds), "+Inf")
        registry.register(self)

    def _series(self) -> Iterator[tuple[Sequence[str], Sequence[int], float]]:
        """(label values, counts per bucket, sum) of each label set, in the order exported."""
        raise NotImplementedError

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, counts, total in self._series():
            family.add_metric(list(values), list(zip(self._les, accumulate(counts), strict=True)), total)
        yield family


class CountedHistogram(BucketCounts):
    """A histogram per integration whose bucket counts arrive counted already (the traffic buckets in
    Redis hold calls per latency bound): ``add`` adds them."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float], *, registry: CollectorRegistry) -> None:
        self._counts: dict[str, tuple[list[int], list[float]]] = {}  # integration → (per bucket, [sum])
        super().__init__(name, documentation, bounds, ("integration",), registry=registry)

    def add(self, integration: str, counts: Sequence[int], total: float) -> None:
        """``counts``: calls per bound (non-cumulative), the last one above every bound; ``total``: their sum."""
        per_bound, sums = self._counts.setdefault(integration, ([0] * len(self._les), [0.0]))
        for i, n in enumerate(counts):
            per_bound[i] += n
        sums[0] += total

    def remove(self, integration: str) -> None:
        self._counts.pop(integration, None)

    def _series(self) -> Iterator[tuple[Sequence[str], Sequence[int], float]]:
        for integration, (per_bound, sums) in sorted(self._counts.items()):
            yield (integration,), per_bound, sums[0]


class RunHistogram(BucketCounts):
    """A histogram without labels observed once per probe run (the scheduler's lag).

    Why not prometheus-client's ``Histogram``: its ``observe`` takes two locks and walks the bounds in
    Python, ~7.9 k instructions a run at saturation; a bisect into plain counts costs a fraction of that
    (bench/README.md). Written on the event loop only; a scrape reads a copy of the counts, so ``_count``
    always matches the buckets."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float], *, registry: CollectorRegistry) -> None:
        super().__init__(name, documentation, bounds, (), registry=registry)
        self._counts = [0] * len(self._les)  # per bound (not cumulative), the last one above every bound
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: Histogram's ``le``
        self._sum += amount

    def _series(self) -> Iterator[tuple[Sequence[str], Sequence[int], float]]:
        yield (), list(self._counts), self._sum


def remove_series(metric: MetricWrapperBase, *labels: str) -> None:
    """Drop one label set of a metric (a removed check or integration); absent is fine."""
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
