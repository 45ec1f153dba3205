"""``integration-monitor demo``: the daemon, run with the bundled config against the simulated vendor API
(monitor/demo/vendor.py) on loopback. Needs no Redis, no Slack and no network.

With a Redis (``--redis-url`` or ``REDIS_URL``) the demo also plays the integrations' side: their rate
limiters' counters (monitor/demo/traffic.py), webhook deliveries, duplicates included, to a small
receiver that records them with the webhook ledger (monitor/demo/webhooks.py), and their own calls to
the vendor through the integration kit (monitor/demo/kit_traffic.py: real traffic, a throttled job).
Every key it writes lives under a demo prefix and is deleted when the demo stops.

``--replicas N`` (needs the Redis) runs N daemons in the one process, as N sidecars sharing a Redis would
run: ``demo-1`` … ``demo-N``, listening on consecutive ports from ``--listen``. Each one's
``/api/status`` shows its share (``monitor.cluster``) and who owns each integration; each incident is
printed once, by its integration's owner.

``run_demo(args)`` is the CLI entry; ``Demo`` is the async core (``start``/``close`` for tests, ``run``
for the command: serves until SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from integration_kit.redact import Redactor
from monitor.commands.common import run_async
from monitor.demo.kit_traffic import KitTraffic
from monitor.demo.traffic import RateLimiterTraffic, WebhookTraffic, cleanup
from monitor.demo.vendor import SimulatedVendor, VendorBehaviour
from monitor.logs import RedactingFilter, setup_logging
from monitor.settings import load_config, split_listen

if TYPE_CHECKING:
    import redis.asyncio

    from monitor.app import App, ComponentFactory
    from monitor.settings import Config

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9478"
DEFAULT_KEY_PREFIX = "imdemo"
MAX_REPLICAS = 9


def bundled_config_path() -> Path:
    return Path(str(resources.files(__name__).joinpath("config.yaml")))


class Demo:
    """Vendor, daemon and (with Redis) the integrations' traffic, started and stopped together."""

    def __init__(
        self,
        *,
        listen: str = DEFAULT_LISTEN,
        vendor_port: int = 0,
        redis_url: str | None = None,
        seed: int = 0,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        behaviour: VendorBehaviour | None = None,
        config_path: Path | None = None,
        components: Sequence[ComponentFactory] | None = None,
        replicas: int = 1,
    ) -> None:
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas: expected 1 to {MAX_REPLICAS}, got {replicas}")
        if replicas > 1 and not redis_url:
            raise ValueError(f"replicas: {replicas} replicas share the work through Redis: give a Redis "
                             "(--redis-url URL or $REDIS_URL)")
        _check_ports(listen, vendor_port, replicas)
        self.replicas = replicas
        self.listen = listen
        self.vendor_port = vendor_port
        self.redis_url = redis_url or None
        self.key_prefix = key_prefix
        self.config_path = config_path or bundled_config_path()
        self.vendor = SimulatedVendor(behaviour or VendorBehaviour(seed=seed))
        self.seed = seed
        self.components = components  # None: the daemon's default components
        self.app: App | None = None  # the first replica
        self.apps: list[App] = []
        self._redis: redis.asyncio.Redis | None = None
        self._traffic: RateLimiterTraffic | None = None
        self.webhooks: WebhookTraffic | None = None
        self.kit_traffic: KitTraffic | None = None

    def environment(self) -> dict[str, str]:
        """What the bundled config's ``${…}`` refer to (valid once the vendor is serving)."""
        if self.vendor.url is None or self.vendor.tls_url is None:
            raise RuntimeError("the simulated vendor is not serving yet")
        return {
            "DEMO_VENDOR_URL": self.vendor.url,
            "DEMO_VENDOR_TLS_URL": self.vendor.tls_url,
            "DEMO_LISTEN": self.listen,
            "DEMO_KEY_PREFIX": self.key_prefix,
            "REDIS_URL": self.redis_url or "",
        }

    def load(self, environ: Mapping[str, str] | None = None) -> Config:
        env = {**(os.environ if environ is None else environ), **self.environment()}
        return load_config(self.config_path, env=env)

    @property
    def monitor_url(self) -> str | None:
        """Base URL of the daemon's HTTP server, once it listens."""
        if self.app is None or self.app.server.port == 0:
            return None
        return self.app.server.url

    async def _start_integrations(self) -> None:
        """The vendor, then (with Redis) the integrations' own traffic."""
        await self.vendor.start("127.0.0.1", self.vendor_port)
        log.info("simulated vendor API on %s and %s (GET / lists its endpoints)", self.vendor.url, self.vendor.tls_url)
        if self.redis_url is None:
            log.info("demo without Redis: quotas come from response headers only; webhook gauges are off")
            return
        from monitor.redis_connection import connect

        self._redis = connect(self.redis_url)
        self._traffic = RateLimiterTraffic(self._redis, self.key_prefix, seed=self.seed)
        self._traffic.start()
        self.webhooks = WebhookTraffic(self._redis, self.key_prefix, seed=self.seed)
        await self.webhooks.start()
        self.kit_traffic = KitTraffic(self._redis, self.vendor.url or "", self.key_prefix, seed=self.seed)
        await self.kit_traffic.start()
        log.info("demo: rate-limit counters under %r; webhook receivers on %s", self.key_prefix, self.webhooks.url)

    async def _stop_integrations(self) -> None:
        if self.kit_traffic is not None:
            await self.kit_traffic.close()
            self.kit_traffic = None
        if self.webhooks is not None:
            await self.webhooks.close()
            self.webhooks = None
        if self._traffic is not None:
            await self._traffic.close()
            self._traffic = None
        if self._redis is not None:
            try:
                deleted = await cleanup(self._redis, self.key_prefix)
                log.info("demo: deleted %d Redis key(s) under %r", deleted, self.key_prefix)
            except Exception as exc:
                log.warning("demo: could not delete its Redis keys under %r: %s", self.key_prefix, exc)
            await self._redis.aclose()
            self._redis = None
        await self.vendor.close()

    def _make_app(self, config: Config, *, reloadable: bool = False) -> App:
        from monitor.app import App

        if reloadable:
            # SIGHUP reloads the file with the process environment: give it what the config refers to.
            os.environ.update(self.environment())
            return App(config, config_path=self.config_path, components=self.components)
        return App(config, components=self.components)

    def replica_configs(self, config: Config) -> list[Config]:
        """One config per replica: its own id and port (consecutive from ``listen``; 0 stays 0)."""
        if self.replicas == 1:
            return [config]
        host, port = split_listen(self.listen)
        out = []
        for n in range(self.replicas):
            cluster = config.monitor.cluster.model_copy(update={"replica_id": f"demo-{n + 1}"})
            listen = f"{host}:{port + n if port else 0}"
            out.append(config.model_copy(update={
                "monitor": config.monitor.model_copy(update={"listen": listen, "cluster": cluster})}))
        return out

    async def _start_apps(self) -> None:
        self.apps = [self._make_app(config) for config in self.replica_configs(self.load())]
        self.app = self.apps[0]
        for app in self.apps:
            await app.start()

    async def _close_apps(self) -> None:
        # Together: each announces its leave at once, rather than handing its share to the next to go.
        await asyncio.gather(*(app.close() for app in self.apps))

    async def start(self) -> None:
        """Start everything; the daemon serves on ``monitor_url``. ``close()`` stops it again."""
        try:
            await self._start_integrations()
            await self._start_apps()
        except BaseException:
            await self.close()
            raise
        log.info("demo running: %s/api/status and %s/metrics", self.monitor_url, self.monitor_url)

    async def close(self) -> None:
        await self._close_apps()
        await self._stop_integrations()

    async def run(self, *, reloadable: bool = False, log_format: str | None = None, log_level: str = "INFO") -> int:
        """Serve until SIGTERM/SIGINT (the daemon's own signal handling), then stop everything.

        ``reloadable``: SIGHUP re-reads the config file; this puts the demo's variables into ``os.environ``
        (the command does it; tests don't, to keep the process environment clean). ``log_format``: install
        the daemon's redacting log handler (text or json); None leaves logging alone."""
        if log_format is not None:
            setup_logging(Redactor(), fmt=log_format, level=log_level)  # until the app's redactor exists
        # SIGTERM/SIGINT while the integrations start, before the daemon handles them itself: stop then
        # (without this the signal would kill the process and leave the demo's Redis keys behind).
        loop, stopping = asyncio.get_running_loop(), asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_signal, sig.name, stopping)
        try:
            await self._start_integrations()
            if stopping.is_set():
                return 0
            if self.replicas > 1:
                return await self._run_replicas(stopping, log_format=log_format, log_level=log_level)
            # A signal from here on may still reach the handler above: the loop queues a handler's call when it
            # reads the signal, so one read just before app.run() took the signals over runs after it (the
            # daemon then ran on, the demo's stop unheard). _stop_signal stops the app too.
            self.app = self._make_app(self.load(), reloadable=reloadable)
            if log_format is not None:
                setup_logging(self.app.redactor, fmt=log_format, level=log_level)
            log.info(
                "demo: look at http://%s/api/status and http://%s/metrics (Ctrl-C stops)", self.listen, self.listen
            )
            return await self.app.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)  # (already done if the app ran)
            await self._stop_integrations()

    def _stop_signal(self, name: str, stopping: asyncio.Event) -> None:
        log.info("%s received: stopping", name)
        stopping.set()
        if self.app is not None:
            self.app.request_stop()  # it runs, or is about to: it stops once started

    async def _run_replicas(self, stopping: asyncio.Event, *, log_format: str | None, log_level: str) -> int:
        """N daemons until SIGTERM/SIGINT (no SIGHUP reload: each replica's id and port are the demo's)."""
        try:
            await self._start_apps()
            if log_format is not None:
                handler = setup_logging(self.apps[0].redactor, fmt=log_format, level=log_level)
                for app in self.apps[1:]:  # every replica's secrets are masked, whoever logs
                    handler.addFilter(RedactingFilter(app.redactor))
            for app in self.apps:
                cluster = app.config.monitor.cluster
                log.info("demo: replica %s: http://%s/api/status (its share under monitor.cluster)",
                         cluster.replica_id, app.config.monitor.listen)
            log.info("demo: %d replicas share the checks; each incident is printed once, by its owner "
                     "(Ctrl-C stops)", self.replicas)
            await stopping.wait()
        finally:
            await self._close_apps()
        return 0


def _check_ports(listen: str, vendor_port: int, replicas: int) -> None:
    """The replicas listen on consecutive ports from ``listen``'s (``replica_configs``): refuse a vendor
    port among them, or ports past 65535, before anything starts (else the replica's bind fails, after
    the vendor and the replicas before it have started, with an error that names --listen only)."""
    _, port = split_listen(listen)
    if not port:
        return  # the system picks every replica's port: none can be the vendor's
    last = port + replicas - 1
    if last > 65535:
        raise ValueError(f"--listen {listen} with --replicas {replicas}: ports {port}-{last}, past 65535")
    if port <= vendor_port <= last:
        ports = f"one of the ports of --listen {listen} with --replicas {replicas} ({port}-{last})"
        raise ValueError(f"--vendor-port {vendor_port} is {ports if replicas > 1 else f'the port of --listen {listen}'}"
                         ": choose another")


def run_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command. Uses ``args.listen``, ``args.log_format``, ``args.log_level`` and, when the
    parser defines them, ``args.vendor_port``, ``args.redis_url``, ``args.seed``, ``args.replicas``;
    ``REDIS_URL`` from the environment when no ``--redis-url`` is given. Exit code 2 for arguments that
    cannot work together (replicas without a Redis, a vendor port among the replicas' ports)."""
    try:
        demo = _demo_of(args)
    except ValueError as exc:
        log.error("demo: %s", exc)
        return 2
    try:
        return run_async(
            demo.run(
                reloadable=demo.replicas == 1,
                log_format=getattr(args, "log_format", None) or "text",
                log_level=getattr(args, "log_level", None) or "INFO",
            )
        )
    except OSError as exc:  # most likely the port is taken
        log.error("demo could not start: %s (choose another address with --listen HOST:PORT)", exc)
        return 1


def _demo_of(args: argparse.Namespace) -> Demo:
    return Demo(
        listen=getattr(args, "listen", None) or DEFAULT_LISTEN,
        vendor_port=getattr(args, "vendor_port", None) or 0,
        redis_url=getattr(args, "redis_url", None) or os.environ.get("REDIS_URL") or None,
        seed=getattr(args, "seed", None) or 0,
        replicas=getattr(args, "replicas", None) or 1,
    )
