"""The daemon: owns the shared services, the components, the scheduler and the HTTP server.

Lifecycle (like arq's worker): ``await app.start()`` … ``await app.close()``, or ``await app.run()``
which does both around the signals: SIGTERM/SIGINT stop scheduling, let in-flight probes finish (up to
``monitor.shutdown_grace``) and close everything in reverse order; SIGHUP reloads the config file and
keeps the running config when the new one is invalid.

Components are built from factories (``Callable[[Services], Component]``), started in order and closed
in reverse. The default list (quota reader, webhook reader, notifiers, alert engine) and how they connect
is ``monitor.wiring.DEFAULT_COMPONENTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yarl import URL

from alerts.inputs import retargeted
from checks import run_probe as default_run_probe
from checks.base import ProbeContext, internal_failure, kind_of
from checks.call import make_session
from integration_kit.redact import Redactor, is_sensitive_name
from integration_kit.tasks import stop_all
from integration_kit.token_cache import TokenCache
from monitor import __version__, long_lived
from monitor.cluster_runtime import ClusterRuntime
from monitor.component import Component, Services
from monitor.metrics import Metrics
from monitor.recorder import Recorder
from monitor.redis_connection import RedisHealth, connect, location
from monitor.scheduler import ProbeRunner, Scheduler
from monitor.server import HttpServer
from monitor.settings import Config, ConfigError, load_config, split_listen
from monitor.status import StatusStore, results_on, without_details

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

    from integration_kit.results import CheckResult

log = logging.getLogger(__name__)

ComponentFactory = Callable[[Services], Component]


def secrets_of(config: Config) -> list[str]:
    """Every secret the config holds: SecretStr fields, what each check says is secret, and credentials
    written inline in a check URL (``?token=…``, ``user:password@``), so they are masked even in text
    that quotes the URL without parsing it (an exception message, say)."""
    out = list(config.secret_values())  # each check's own secret_values() among them
    for _, check in config.iter_checks():
        # A check that says what is secret names its URL's credentials too: asking again, or parsing its
        # URL here, did that work two or three times per check (~0.9 s at 50,000 checks).
        if not hasattr(check, "secret_values") and isinstance(url := getattr(check, "url", None), str):
            out.extend(_url_credentials(url, query=True))
    # A secret URL (redis://:password@…) also travels in parts: its password alone in an error, say.
    out.extend(part for secret in list(out) if "://" in secret for part in _url_credentials(secret, query=False))
    return out


def _url_credentials(url: str, *, query: bool) -> list[str]:
    """User info of a URL and, with ``query``, the values of its credential-named query parameters."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return []
    found = [v for v in (parsed.user, parsed.password) if v]
    if query:
        found += [v for k, v in parsed.query.items() if is_sensitive_name(k)]
    return found


class App:
    def __init__(
        self,
        config: Config,
        *,
        config_path: str | Path | None = None,
        components: Sequence[ComponentFactory] | None = None,
        listen: str | None = None,
        run_probe: ProbeRunner = default_run_probe,
        metrics: Metrics | None = None,
        extra_routes: Iterable[web.AbstractRouteDef] = (),
    ) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path is not None else None
        if components is None:
            from monitor.wiring import DEFAULT_COMPONENTS  # imported late: it pulls in every component

            components = DEFAULT_COMPONENTS
        self.factories = list(components)
        buckets = config.monitor.probe_duration_buckets
        self.metrics = metrics if metrics is not None else Metrics(duration_buckets=buckets)
        self._redactor = Redactor(secrets_of(config))
        self.status_store = StatusStore()
        self.components: list[Component] = []
        self.recorder = Recorder(self.metrics, self._redactor, self.status_store, self.components)
        self.scheduler = Scheduler(
            config, metrics=self.metrics, redactor=self._redactor, record=self.recorder.record,
            run_probe=run_probe, on_removed=self.recorder.forget,
        )
        host, port = split_listen(listen) if listen else config.monitor.host_port
        self.server = HttpServer(self, host, port, extra_routes)
        self.services: Services | None = None
        self.cluster: ClusterRuntime | None = None
        self.session: aiohttp.ClientSession | None = None
        self.tokens: TokenCache | None = None
        self.started_at: float | None = None
        self.config_loaded_at = time.time()
        self.last_reload_ok = True
        self._started = False
        self._closing = False
        self._freezes = False  # run(): the daemon's own process, whose long-lived objects it may freeze
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(self.config_loaded_at)

    # ---- Monitored (what the HTTP server asks) ---------------------------------------------------

    @property
    def redactor(self) -> Redactor:
        return self._redactor

    def health(self) -> tuple[bool, str]:
        if not self.scheduler.running:
            return False, "scheduler is not running"
        return True, "ok"

    def readiness(self) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        if not self._started:
            reasons.append("starting" if not self._closing else "shutting down")
        elif self._closing:
            reasons.append("shutting down")
        if self.cluster is not None:
            ok, reason = self.cluster.ready()
            if not ok:
                reasons.append(f"cluster: {reason}")
        for component in self.components:
            try:
                ok, reason = component.ready()
            except Exception as exc:
                ok, reason = False, f"ready() raised {type(exc).__name__}"
            if not ok:
                reasons.append(f"{component.name}: {reason}")
        return not reasons, reasons

    def integration_status(self, name: str) -> dict[str, Any] | None:
        """/api/status/NAME: one integration's part of /api/status; None if there is no such integration."""
        tokens = self.tokens.status() if self.tokens is not None else []
        doc = self._integration_doc(name, self.scheduler.status()["backoff"], tokens)
        return doc if doc is None or self.config.monitor.status_details else without_details(doc)

    def _integration_doc(
        self, name: str, backoff: dict[str, Any], tokens: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        integ = self.config.integrations.get(name)
        if integ is None:
            return None
        statuses = self.status_store.by_integration().get(name, {})
        cluster = self.cluster.cluster if self.cluster is not None else None
        owner = cluster.owner_of(name) if cluster is not None else None
        # Results are recorded on the integration's owner: elsewhere, an entry says where they are instead of
        # showing a check that never ran.
        elsewhere = cluster is not None and owner != cluster.me
        owner_address = cluster.address_of(owner) if cluster is not None and owner is not None else None
        checks: dict[str, Any] = {}
        for check in integ.checks:
            entry = statuses.get(check.name)
            doc: dict[str, Any]
            if entry is not None and entry.runs:  # (elsewhere: recorded here while Redis was unreachable)
                doc = entry.as_dict()
            elif elsewhere:
                doc = {"kind": kind_of(check)}
            else:  # (an entry without runs: a count a takeover continues, told once a run is here)
                doc = {"kind": kind_of(check), "runs": 0, "ok": None}
            doc["enabled"] = check.enabled
            doc["schedule"] = self.scheduler.check_status(name, check.name)
            doc["probed_by"] = cluster.prober_of(f"{name}/{check.name}") if cluster is not None else None
            if elsewhere:
                doc["results_on"] = results_on(owner, owner_address, name, check.name)
            checks[check.name] = doc
        return {
            "owner": owner,
            "owner_address": owner_address,
            "runbook_url": integ.runbook_url,
            "interval_factor": self.scheduler.interval_factor(name),
            "backoff": backoff.get(name),
            "oauth2_tokens": [t for t in tokens if t["credential"] == name],
            "checks": checks,
        }

    def status_document(self) -> dict[str, Any]:
        scheduler = self.scheduler.status()
        tokens = self.tokens.status() if self.tokens is not None else []
        integrations: dict[str, Any] = {
            name: self._integration_doc(name, scheduler["backoff"], tokens) for name in self.config.integrations
        }
        components: dict[str, Any] = {}
        for component in self.components:
            try:
                components[component.name] = component.status()
            except Exception as exc:
                log.exception("component %s failed to report its status", component.name)
                components[component.name] = {"error": f"status() raised {type(exc).__name__}"}
        document = {
            "monitor": {
                "version": __version__,
                "started_at": self.started_at,
                "config_file": str(self.config_path) if self.config_path else None,
                "config_loaded_at": self.config_loaded_at,
                "last_reload_successful": self.last_reload_ok,
                "redis": "off" if self.config.monitor.redis_url is None else "configured",
                "scheduler": scheduler,
                "cluster": self.cluster.status() if self.cluster is not None else {"enabled": False},
            },
            "integrations": integrations,
            "components": components,
        }
        return document if self.config.monitor.status_details else without_details(document)

    def api_token(self) -> str | None:
        token = self.config.monitor.api_token
        return None if token is None else token.get_secret_value()

    def _token_fetched(self, integration: str, ok: bool) -> None:
        self.metrics.token_requests.labels(integration, "success" if ok else "failure").inc()

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect Redis, start components in order, then the scheduler and the HTTP server.

        On failure everything already started is closed again and the exception propagates.
        """
        self.started_at = time.time()
        try:
            health = await self._connect_redis()
            client = health.client if health is not None else None
            self.cluster = ClusterRuntime.build(
                self.config, redis=client, metrics=self.metrics, redactor=self._redactor, scheduler=self.scheduler,
                recorder=self.recorder, address=self._address, version=__version__,
            )
            await self.cluster.start()  # the share is known before the first probe is scheduled
            self.services = Services(
                metrics=self.metrics, redactor=self._redactor, redis=client, config=self.config,
                scheduler=self.scheduler, placement=self.cluster.placement, redis_health=health,
            )
            if health is not None:  # first: the components after it find it in services.components
                await health.start()
                self.components.append(health)
                self.services.components[health.name] = health
            for factory in self.factories:
                component = factory(self.services)
                self.cluster.attach(component)
                await component.start()
                self.components.append(component)
                self.services.components[component.name] = component
                log.info("component %s started", component.name)
                routes = getattr(component, "routes", None)
                if routes is not None:
                    self.server.add_routes(routes())
            self.session = make_session(limit=0)  # the scheduler's slots bound concurrency, not the pool
            self.scheduler.session = self.session
            # OAuth2 tokens: one per credential for all checks, shared with the other replicas through
            # Redis; every token it learns is masked from then on (rotating: the list stays short).
            self.tokens = TokenCache(redis=self.services.redis, on_secret=self._redactor.rotate,
                                     on_fetch=self._token_fetched)
            self.scheduler.tokens = self.tokens
            await self.scheduler.prepare()  # the jobs added while the loop keeps turning (heartbeats)
            self.scheduler.start()
            await self.server.start()
        except BaseException:
            await self.close()
            raise
        self._started = True
        log.info("integration-monitor %s running: %d integration(s), %d check(s)", __version__,
                 len(self.config.integrations), sum(1 for _ in self.config.iter_checks()))

    async def close(self) -> None:
        """Stop scheduling, drain probes (bounded), then close server, components, session, Redis."""
        if self._closing:
            return
        self._closing = True
        if self.cluster is not None and self.scheduler.running:
            # Hand the share over at an instant every replica knows, probing until then (within the grace).
            await self.cluster.leave(self.config.monitor.shutdown_grace / 2)
        if self.scheduler.running:
            await self.scheduler.stop(self.config.monitor.shutdown_grace)
        if self.cluster is not None:
            await self.cluster.close()  # results still buffered reach their owners
        await stop_all(self._background)
        await self.server.close()
        if self.tokens is not None:
            await self.tokens.close()
        for component in reversed(self.components):
            try:
                await component.close()
            except Exception:
                log.exception("component %s failed to close", component.name)
        self.components.clear()
        if self.session is not None:
            await self.session.close()
        if self.services is not None and self.services.redis is not None:
            await self.services.redis.aclose()
        log.info("integration-monitor stopped")

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT (SIGHUP reloads), close. Returns the exit code."""
        loop = asyncio.get_running_loop()
        # Handlers first: a SIGTERM during start-up then stops the daemon cleanly right after it.
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        try:
            await self.start()
            self._freezes = True
            long_lived.tune_young_collections()
            long_lived.freeze()
            keeper = asyncio.get_running_loop().create_task(long_lived.keep_frozen(lambda: self.scheduler.settled_at))
            self._background.add(keeper)
            keeper.add_done_callback(self._background.discard)
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.close()
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    def _on_stop_signal(self, name: str) -> None:
        log.info("%s received: stopping", name)
        self._stop.set()

    def _on_reload_signal(self) -> None:
        log.info("SIGHUP received: reloading the config")
        task = asyncio.get_running_loop().create_task(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- reload ----------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Reload the config file, all or nothing (see ``apply_config``). Whatever goes wrong — an invalid or
        unreadable file, a config that cannot be applied — is logged, sets
        integration_monitor_config_last_reload_successful to 0 and leaves the old config running."""
        if self.config_path is None:
            log.warning("config reload requested but the config did not come from a file")
            return False
        async with self._reload_lock:
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                log.error("config reload failed; the running config stays in effect.\n%s", exc)
                return self._reload_failed()
            except Exception:  # a bug, not a bad file: still never a silent success
                log.exception("config reload failed while reading the file; the running config stays in effect")
                return self._reload_failed()
            try:
                self.apply_config(config)
            except Exception:
                log.exception("config reload failed while applying the new config; the previous config was "
                              "restored and stays in effect")
                return self._reload_failed()
            if self._freezes:
                long_lived.refreeze()
            return True

    def _reload_failed(self) -> bool:
        self.last_reload_ok = False
        self.metrics.config_reload_ok.set(0)
        return False

    def apply_config(self, config: Config) -> None:
        """Switch to a validated config, all or nothing: the scheduler first checks it can schedule every
        check (nothing changes if not), then jobs and components switch; if one of them raises, everything
        already switched goes back to the old config and the exception propagates."""
        self._redactor.add(secrets_of(config))  # first: anything logged from here on may quote them
        self.scheduler.check(config)
        old = self.config
        if config.monitor.listen != old.monitor.listen:
            log.warning("monitor.listen changed: takes effect after a restart")
        if config.monitor.redis_url != old.monitor.redis_url:
            log.warning("monitor.redis_url changed: takes effect after a restart")
        if config.monitor.probe_duration_buckets != old.monitor.probe_duration_buckets:
            log.warning("monitor.probe_duration_buckets changed: takes effect after a restart")
        switched: list[Component] = []
        try:
            self._switch(config)
            self.recorder.retarget(retargeted(old, config))
            if self.cluster is not None:
                self.cluster.on_config(config)
            self.scheduler.apply(config)
            for component in self.components:
                switched.append(component)  # before the call: a component that raised may be half-switched
                component.on_config(self.cluster.view_for(component, config) if self.cluster is not None else config)
        except Exception:
            self._restore(old, switched)
            raise
        kept = {(i, c.name) for i, c in config.iter_checks() if c.enabled}
        self.recorder.retain(kept)
        if self.cluster is not None:
            self.cluster.retain(kept, {(i, c.name) for i, c in old.iter_checks()} - kept)
        self.last_reload_ok = True
        self.config_loaded_at = time.time()
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(self.config_loaded_at)
        log.info("config reloaded: %d integration(s), %d check(s)",
                 len(config.integrations), sum(1 for _ in config.iter_checks()))

    def _restore(self, old: Config, switched: list[Component]) -> None:
        self._switch(old)
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.cluster is not None:
            steps.append(("cluster", functools.partial(self.cluster.on_config, old)))
        steps.append(("scheduler", functools.partial(self.scheduler.apply, old)))
        view = self.cluster.view_for if self.cluster is not None else (lambda _c, config: config)
        steps += [(c.name, functools.partial(c.on_config, view(c, old))) for c in switched]
        for name, step in steps:
            try:
                step()
            except Exception:
                log.exception("restoring the previous config failed in %s", name)

    def _switch(self, config: Config) -> None:
        self.config = config
        if self.services is not None:
            self.services.config = config
        logging.getLogger().setLevel(config.monitor.log_level)

    def _address(self) -> str:
        """Where this replica's HTTP server can be reached, as peers are shown it in /api/status."""
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"[{host}]:{self.server.port}" if ":" in host else f"{host}:{self.server.port}"

    # ---- Redis -----------------------------------------------------------------------------------

    async def _connect_redis(self) -> RedisHealth | None:
        """The Redis client and its health check (one PING now; redis-py retries a blip, an outage is
        logged and the components start degraded and catch up on their own). None without a redis_url."""
        secret = self.config.monitor.redis_url
        if secret is None:
            log.info("no monitor.redis_url: Redis-backed features (quotas read from Redis, webhook "
                     "freshness, durable alert state) are off")
            # Absent rather than 0: "no Redis configured" is not "Redis down", and rules on it must not fire.
            with contextlib.suppress(KeyError):
                self.metrics.registry.unregister(self.metrics.redis_up)
            return None
        url = secret.get_secret_value()
        health = RedisHealth(connect(url), metrics=self.metrics, redactor=self._redactor, where=location(url))
        if await health.check():
            log.info("connected to Redis at %s", location(url))
        return health


async def probe_once(
    config: Config, integration: str, check_name: str, *, redactor: Redactor | None = None
) -> CheckResult:
    """One run of one check, outside the scheduler (the ``probe`` command). KeyError if unknown.

    With ``monitor.redis_url`` the run shares the daemons' OAuth2 tokens: it uses theirs instead of
    asking for one more, and, with a rotating refresh token, the current one (the configured one may
    have been rotated away: using it could make the endpoint revoke the daemons' tokens too)."""
    integ = config.integrations[integration]
    check = next((c for c in integ.checks if c.name == check_name), None)
    if check is None:
        raise KeyError(check_name)
    redactor = redactor if redactor is not None else Redactor(secrets_of(config))
    client = connect(config.monitor.redis_url.get_secret_value()) if config.monitor.redis_url is not None else None
    tokens = TokenCache(redis=client, on_secret=redactor.rotate)
    session = make_session(limit=0)
    try:
        ctx = ProbeContext(integration=integration, redactor=redactor, session=session, tokens=tokens)
        started = time.time()
        try:
            return await default_run_probe(check, ctx)
        except Exception as exc:  # a bug in the probe: a failed run, as in the daemon, its traceback redacted
            log.error("probe %s/%s raised instead of returning a result", integration, check_name, exc_info=exc)
            return internal_failure(integration, check, exc, started, redactor)
    finally:
        await tokens.close()
        await session.close()
        if client is not None:
            await client.aclose()

