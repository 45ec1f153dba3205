"""The components every daemon runs, in start order (closed in reverse), and how they connect.

quota reader → webhook reader → traffic reader → notification dispatcher → Alertmanager feed → alert
engine: the engine comes last because it reads the quota service's snapshot, hands notifications to the
dispatcher and the current alerts to the Alertmanager feed, and receives the webhook reader's facts and
the traffic reader's calls; each factory finds the ones built before it in ``services.components``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from alerts.delivery import Dispatcher
from alerts.engine import AlertEngine
from alerts.notifiers.alertmanager.feed import AlertmanagerFeed
from alerts.stats import QuotaReading
from monitor.cluster.replica import Cluster
from monitor.quota.service import QuotaService
from monitor.traffic.service import TrafficService
from monitor.webhooks.service import WebhookService

if TYPE_CHECKING:
    from monitor.component import Component, Services


class QuotaReadings:
    """The quota service's snapshot as the alert rules read it: quotas with a known used/limit, and Redis
    quotas that nothing matched (used 0, perhaps no limit known: the limiter's window expired, or it has
    not written a key yet). Nothing used is a judgement, ratio 0: a quota alert clears (after
    ``clear`` / ``keep_firing_for``) instead of holding a stale page for an idle integration. A quota
    whose read failed is not in the snapshot at all: unknown, so its alerts hold. A header quota's
    readings carry every label its last response announced (``announced``), those whose usage it left out
    too: a label not among them is no longer announced."""

    __slots__ = ("_service",)

    def __init__(self, service: QuotaService) -> None:
        self._service = service

    def quota_snapshot(self) -> Iterable[QuotaReading]:
        states = self._service.snapshot()
        announced: dict[tuple[str, str], set[str]] = {}
        for s in states:
            if s.source == "headers":
                announced.setdefault((s.integration, s.name), set()).add(s.quota)
        return [
            QuotaReading(
                integration=s.integration, quota=s.quota, source=s.source, used=s.used, limit=s.limit,
                reset_seconds=s.reset_seconds, exhaustion_seconds=s.exhaustion_seconds, observed_at=s.observed_at,
                announced=frozenset(announced.get((s.integration, s.name), ())),
            )
            for s in states
            if s.used is not None and (s.limit or s.used == 0)
        ]


def quota(services: Services) -> Component:
    placement = services.placement
    # In a cluster the owner's back-off applies to every replica probing the integration's checks.
    on_backoff = placement.announce_backoff if isinstance(placement, Cluster) else None
    return QuotaService(services, on_backoff=on_backoff)


def webhooks(services: Services) -> Component:
    return WebhookService(services)


def traffic(services: Services) -> Component:
    return TrafficService(services)


def notifiers(services: Services) -> Component:
    placement = services.placement
    return Dispatcher.for_alerting(
        services.config.alerting, redactor=services.redactor, redis=services.redis, metrics=services.metrics,
        replica=placement.me if placement.clustered else None,
    )


def alertmanager(services: Services) -> Component:
    return AlertmanagerFeed(services.config, redactor=services.redactor, metrics=services.metrics)


def alerts(services: Services) -> Component:
    found = services.components
    quota_service = found.get("quota")
    dispatcher = found.get("notifiers")
    feed = found.get("alertmanager")
    engine = AlertEngine(
        services.config, metrics=services.metrics, redactor=services.redactor, redis=services.redis,
        sink=dispatcher if isinstance(dispatcher, Dispatcher) else None,
        feed=feed if isinstance(feed, AlertmanagerFeed) else None,
        quota_source=QuotaReadings(quota_service) if isinstance(quota_service, QuotaService) else None,
        ownership=services.placement,
        redis_health=services.redis_health,
        hand_back=services.metrics.scrape_priority.hand_back,  # a scrape being written goes first
    )
    services.placement.on_change(lambda change: engine.ownership_changed(change.integrations_gained,
                                                                       change.integrations_lost))
    webhook_service = found.get("webhooks")
    if isinstance(webhook_service, WebhookService):
        webhook_service.fact_feed.connect(engine.set_fact)
    traffic_service = found.get("traffic")
    if isinstance(traffic_service, TrafficService):
        traffic_service.publish_traffic_to(engine.add_traffic)
        traffic_service.fact_feed.connect(engine.set_fact)
    return engine


DEFAULT_COMPONENTS = (quota, webhooks, traffic, notifiers, alertmanager, alerts)
