"""The daemon's Redis connection: one client, one retry policy, one owner of its health.

**Retries.** Every client the monitor makes (``connect``: the daemon, the ``silence`` command, the demo)
uses the same redis-py ``Retry``: two quick retries with jittered back-off (50 ms, capped at 500 ms) for
a blip — a dropped idle connection, a failover. redis-py's default (ten retries, each waiting for a 2 s
connect timeout) would hold a single command for half a minute against a dead server. A longer outage
is not retried inside a command: each component's loop backs off on its own
(``integration_kit.retry.Backoff``, 1 s doubling to 60 s) and tries again.

**Health.** ``RedisHealth`` is the one writer of ``integration_monitor_redis_up``: it pings every
``interval`` seconds (bounded by ``timeout``) and logs each change once. The components that use Redis
report their own state separately (``integration_monitor_component_ok{component}``, ``/api/status``):
a reader whose keys do not decode says so there, without calling Redis down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from yarl import URL

from integration_kit.supervisor import Supervisor

if TYPE_CHECKING:
    from integration_kit.redact import Redactor
    from monitor.metrics import Metrics
    from monitor.settings import Config

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
CHECK_INTERVAL = 5.0  # seconds between health pings
CHECK_TIMEOUT = 2.0


def retry_policy() -> Retry:
    """The one in-command retry of every monitor Redis client (see the module doc)."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2)


def connect(url: str, **options: Any) -> redis.asyncio.Redis:
    """A client for ``url`` with the monitor's timeouts and retry policy (no I/O until first use)."""
    settings: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 30, "retry": retry_policy(), **options,
    }
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url, **settings)
    return client


def location(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    with contextlib.suppress(ValueError):
        parsed = URL(url)
        if parsed.scheme == "unix":
            return f"unix:{parsed.path}"
        return f"{parsed.host}:{parsed.port or 6379}{parsed.path if parsed.path not in ('', '/') else ''}"
    return "(unparseable URL)"


class RedisHealth:
    """A Component: PINGs Redis on an interval; ``up`` (None before the first answer), ``error``."""

    name = "redis"

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        metrics: Metrics,
        redactor: Redactor,
        where: str,
        interval: float = CHECK_INTERVAL,
        timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self.client = client
        self.up: bool | None = None
        self.error = ""  # redacted, while down
        self.since: float | None = None  # epoch seconds of the last change
        self.checked_at: float | None = None
        self._metrics = metrics
        self._redactor = redactor
        self._where = where
        self._interval = interval
        self._timeout = timeout
        self._supervisor = Supervisor(
            self.name, on_crash=metrics.component_errors.labels(self.name).inc,
            on_state=lambda ok: metrics.component_ok.labels(self.name).set(1 if ok else 0), redact=redactor.text,
        )

    async def check(self) -> bool:
        """One PING; updates ``up``, the gauge and the log. Never raises."""
        try:
            async with asyncio.timeout(self._timeout):
                await self.client.ping()
        except Exception as exc:
            self._set(False, self._redactor.text(f"{type(exc).__name__}: {exc}")[:300])
        else:
            self._set(True, "")
        return bool(self.up)

    def _set(self, up: bool, error: str) -> None:
        now = time.time()
        self.checked_at = now
        if up != self.up:
            if up:
                log.info("Redis at %s answers%s", self._where,
                         "" if self.since is None or self.up is None else f" again after {now - self.since:.0f}s")
            else:
                log.warning("Redis at %s does not answer (%s): Redis-backed features run degraded until it does; "
                            "checking every %gs", self._where, error, self._interval)
            self.since = now
        self.up, self.error = up, error
        self._metrics.redis_up.set(1 if up else 0)
        self._supervisor.report(up, error)

    async def _watch(self) -> None:
        while await self._supervisor.sleep(self._interval):
            await self.check()

    # ---- Component ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.up is None:
            await self.check()
        self._supervisor.start("redis-health", self._watch)

    async def close(self) -> None:
        await self._supervisor.close(grace=0.0)

    def on_result(self, result: object) -> None:
        return None

    def on_config(self, config: Config) -> None:
        return None

    def ready(self) -> tuple[bool, str]:
        # Redis down is its own metric and alert; it does not take the monitor (or its pod) out of rotation.
        return self._supervisor.ready()

    def status(self) -> dict[str, Any]:
        return {
            "where": self._where, "up": self.up, "error": self.error or None, "since": self.since,
            "checked_at": self.checked_at, **self._supervisor.status(),
        }
