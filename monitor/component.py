"""The plug-in surface of the daemon: quota reader, alert engine, webhook reader… are Components.

The app builds each component with a ``Services`` bundle, starts them in order, feeds every
``CheckResult`` to ``on_result`` (cheap, synchronous, must not raise), hands new config on reload,
merges ``status()`` into /api/status and ``ready()`` into /readyz, and closes them in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from monitor.cluster.placement import Placement, Solo

if TYPE_CHECKING:
    import redis.asyncio

    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.metrics import Metrics
    from monitor.redis_connection import RedisHealth
    from monitor.scheduler import Scheduler
    from monitor.settings import Config


@dataclass(slots=True, kw_only=True)
class Services:
    """Shared, long-lived things the app owns. ``redis`` is None when no redis_url is configured."""

    metrics: Metrics
    redactor: Redactor
    redis: redis.asyncio.Redis | None
    config: Config  # the current config; replaced on reload (components also get on_config)
    # The probe scheduler: ``scheduler.set_interval_factor(integration, factor, reason)`` slows an
    # integration's probes (quota nearly used up). None outside the daemon (e.g. unit tests).
    scheduler: Scheduler | None = None
    # The one owner of the Redis connection's health (None without Redis): ``up`` and ``error``.
    redis_health: RedisHealth | None = None
    # Components built so far, by name, so a factory can connect to one started before it
    # (the alert engine reads the quota service and hands notifications to the dispatcher).
    components: dict[str, Component] = field(default_factory=dict)
    # Which replica does what when several share the work (monitor/cluster/placement.py); alone: Solo,
    # which owns and probes everything.
    placement: Placement = field(default_factory=Solo)


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def on_result(self, result: CheckResult) -> None: ...

    def on_config(self, config: Config) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def ready(self) -> tuple[bool, str]:
        """(ready, reason). Not ready = /readyz answers 503 with the reason."""
        ...


# Optional: ``scope = "owner"`` (a class attribute). The component does per-integration work that must
# happen once across replicas — reading an integration's quota keys or webhook ledger, caching its tokens,
# reading its traffic — so it only ever sees the integrations this replica owns: the app hands it, right
# after building it and again whenever ownership or the config changes, the config restricted to them
# (``on_config``), and only their results (``on_result``). An integration moving away looks to it like one
# removed from the config (drop its series), one moving here like one added. Alone, it sees everything.
# See monitor/cluster_runtime.py. The default, "fleet", sees the whole config.
#
# Optional: a component that counts failed runs in a row itself (the alert engine) defines
#     def on_streak_continued(self, integration: str, check: str, count: int) -> None
# and the recorder calls it when this replica takes a check over whose previous owner had counted ``count``
# failed runs in a row (monitor/cluster/streaks.py), so the count continues across a handover instead of
# starting again at 0 (monitor/recorder.py ``continued``).
#
# Optional: a component that also serves HTTP endpoints (e.g. /api/silences) defines
#     def routes(self) -> Iterable[aiohttp.web.AbstractRouteDef]
# and the app adds them to its server (monitor/server.py) before it starts listening.
