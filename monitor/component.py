"""The plug-in surface of the daemon: quota reader, alert engine, webhook reader… are Components.

The app builds each component with a ``Services`` bundle, starts them in order, feeds every
``CheckResult`` to ``on_result`` (cheap, synchronous, must not raise), hands new config on reload,
merges ``status()`` into /api/status and ``ready()`` into /readyz, and closes them in reverse order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis.asyncio

    from integration_kit.redact import Redactor
    from integration_kit.results import CheckResult
    from monitor.metrics import Metrics
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
    # Components built so far, by name, so a factory can connect to one started before it
    # (the alert engine reads the quota service and hands notifications to the dispatcher).
    components: dict[str, Component] = field(default_factory=dict)


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


# Optional: a component that also serves HTTP endpoints (e.g. /api/silences) defines
#     def routes(self) -> Iterable[aiohttp.web.AbstractRouteDef]
# and the app adds them to its server (monitor/server.py) before it starts listening.
