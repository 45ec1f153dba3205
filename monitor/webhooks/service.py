"""The webhook reader as a daemon Component: reads the ledger keys every ``evaluation_interval``, keeps
the ``integration_webhook_*`` metrics, and holds the observations the webhook alert rules evaluate.

Redis trouble is a soft failure: the component reports itself not ok
(``integration_monitor_component_ok{component="webhooks"}`` 0, the error in ``/api/status``), the
observations turn stale (rules then hold their state instead of judging silence on old data), the
last-known gauges stay (timestamps of deliveries that did happen remain true), and reads retry with
back-off until they succeed again. The read loop is supervised (``monitor/poll_loop.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from integration_kit.supervisor import Supervisor
from integration_kit.webhook_observations import WebhookObservation, WebhookSnapshot, to_facts
from monitor.fact_feed import FactFeed
from monitor.poll_loop import PollLoop
from monitor.webhooks.duplicate_window import DuplicateWindow
from monitor.webhooks.reader import WebhookReader

if TYPE_CHECKING:
    from alerts.webhook_config import WebhookConfig
    from integration_kit.results import CheckResult
    from monitor.component import Services
    from monitor.settings import Config

log = logging.getLogger(__name__)


class WebhookService:
    name = "webhooks"
    scope = "owner"  # per integration, once across replicas (monitor/component.py)

    def __init__(
        self,
        services: Services,
        *,
        clock: Callable[[], float] = time.time,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self._services = services
        self._metrics = services.metrics
        self._clock = clock
        self._reader = WebhookReader(services.redis) if services.redis is not None else None
        self._configs: dict[str, WebhookConfig] = {}
        self._snapshots: dict[str, WebhookSnapshot] = {}
        self._watching_since: dict[str, float] = {}
        self._windows: dict[str, DuplicateWindow] = {}
        self._exported_types: dict[str, set[str]] = {}
        self._fresh = False
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._clock_offset = 0.0
        self._supervisor = Supervisor(
            self.name, on_crash=self._metrics.component_errors.labels(self.name).inc,
            on_state=lambda ok: self._metrics.component_ok.labels(self.name).set(1 if ok else 0),
            redact=services.redactor.text,
        )
        self._loop = PollLoop(self.read_once, interval=lambda: services.config.monitor.evaluation_interval,
                              name="webhook-reader", supervisor=self._supervisor, min_backoff=min_backoff,
                              max_backoff=max_backoff)
        self.fact_feed = FactFeed(self.facts)  # the webhook rules' input, after every read
        self.on_config(services.config)

    # Component protocol ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._reader is None:
            if self._configs:
                log.info("webhooks: no redis_url configured, webhook health is off")
            return
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()

    def on_result(self, result: CheckResult) -> None:
        return None

    def on_config(self, config: Config) -> None:
        configs = {name: cfg.webhooks for name, cfg in config.integrations.items() if cfg.webhooks is not None}
        for gone in set(self._configs) - set(configs):
            self._forget(gone)
        for name, cfg in configs.items():
            old = self._configs.get(name)
            moved = old is not None and old.key_prefix != cfg.key_prefix
            if moved:
                self._snapshots.pop(name, None)  # other keys: their totals are all new to the counters
            if old is None or moved or old.duplicate_ratio.window != cfg.duplicate_ratio.window:
                self._windows[name] = DuplicateWindow(cfg.duplicate_ratio.window)
            for stale in self._exported_types.get(name, set()) - set(cfg.event_types):
                _remove(self._metrics.webhook_type_last_event, name, stale)
                self._exported_types[name].discard(stale)
        self._configs = configs
        self._loop.wake()

    def status(self) -> dict[str, Any]:
        enabled = self._reader is not None and bool(self._configs)
        out: dict[str, Any] = {
            "enabled": enabled,
            "redis": "not configured" if self._reader is None else ("ok" if self._fresh else "unavailable"),
            "last_success": self._last_success,
            "last_error": self._last_error,
            "integrations": {},
            **self._supervisor.status(),
        }
        for name, cfg in self._configs.items():
            obs = self.observation(name)
            snap = obs.snapshot if obs is not None else None
            entry: dict[str, Any] = {"max_silence": cfg.max_silence, "fresh": self._fresh}
            if snap is not None:
                types = sorted(snap.event_types.items(), key=lambda kv: kv[1], reverse=True)[:20]
                entry.update(
                    received=snap.received, duplicates=snap.duplicates, released=snap.released,
                    last_event_ts=snap.last_event_ts,
                    silent_for=None if snap.last_event_ts is None else max(0.0, snap.read_at - snap.last_event_ts),
                    event_types=dict(types),
                )
            if obs is not None:
                entry.update(duplicate_ratio=obs.duplicate_ratio, window_events=obs.window_events)
            out["integrations"][name] = entry
        return out

    def ready(self) -> tuple[bool, str]:
        # Redis being down never blocks readiness (it is its own alert and metric); a crashing loop does.
        ok, reason = self._supervisor.ready()
        return ok, reason or "ok"

    # For the alert rules ----------------------------------------------------------------------------

    def observation(self, integration: str) -> WebhookObservation | None:
        """What the rules evaluate; None until the monitor has read this integration once."""
        cfg = self._configs.get(integration)
        since = self._watching_since.get(integration)
        if cfg is None or since is None:
            return None
        ratio, events = self._windows[integration].ratio(cfg.duplicate_ratio.min_events)
        return WebhookObservation(
            integration=integration,
            snapshot=self._snapshots.get(integration),
            watching_since=since,
            fresh=self._fresh,
            clock_offset=self._clock_offset,
            duplicate_ratio=ratio,
            window_events=events,
        )

    def observations(self) -> dict[str, WebhookObservation]:
        out = {}
        for name in self._configs:
            obs = self.observation(name)
            if obs is not None:
                out[name] = obs
        return out

    def facts(self) -> dict[str, dict[str, float]]:
        """integration → facts for the alert engine's ``RuleInput.facts`` (see ``model.to_facts``)."""
        return {
            name: to_facts(obs, tuple(self._configs[name].event_types))
            for name, obs in self.observations().items()
        }

    # Reading ---------------------------------------------------------------------------------------

    async def read_once(self) -> bool:
        """One read of every integration; updates metrics. False (the component not ok) when Redis failed."""
        if self._reader is None or not self._configs:
            return True
        targets = {name: cfg.key_prefix for name, cfg in self._configs.items()}
        try:
            snapshots = await self._reader.read(targets)
        except (RedisError, OSError) as exc:
            self._fail(exc)
            return False
        self._clock_offset = next(iter(snapshots.values())).read_at - self._clock() if snapshots else 0.0
        if not self._fresh and self._loop.backoff.failures:
            log.info("webhooks: Redis readable again after %d failed read(s)", self._loop.backoff.failures)
        self._fresh, self._last_error = True, None
        self._supervisor.report(True)
        self._last_success = self._clock()
        for name, snap in snapshots.items():
            if name in self._configs:
                self._apply(name, snap)
        self.fact_feed.push()
        return True

    def _fail(self, exc: BaseException) -> None:
        self._fresh = False
        text = self._services.redactor.text(f"{type(exc).__name__}: {exc}")
        if not self._loop.backoff.failures:
            log.warning("webhooks: cannot read Redis (%s); retrying with back-off", text)
        self._last_error = text
        self._supervisor.report(False, f"Redis read failed: {text}")
        self.fact_feed.push()  # fresh = 0: the rules hold their state instead of judging old data

    def _apply(self, name: str, snap: WebhookSnapshot) -> None:
        cfg = self._configs[name]
        m = self._metrics
        previous = self._snapshots.get(name)
        self._watching_since.setdefault(name, snap.read_at)
        _advance(m.webhook_events.labels(integration=name), previous.received if previous else 0, snap.received)
        _advance(
            m.webhook_duplicates.labels(integration=name), previous.duplicates if previous else 0, snap.duplicates
        )
        if snap.last_event_ts is not None:
            m.webhook_last_event.labels(integration=name).set(snap.last_event_ts)
        window = self._windows[name]
        window.add(snap.read_at, snap.received, snap.duplicates)
        ratio, _ = window.ratio(cfg.duplicate_ratio.min_events)
        if ratio is None:
            _remove(m.webhook_duplicate_ratio, name)
        else:
            m.webhook_duplicate_ratio.labels(integration=name).set(ratio)
        exported = self._exported_types.setdefault(name, set())
        for event_type in cfg.event_types:
            seen = snap.event_types.get(event_type)
            if seen is not None:
                m.webhook_type_last_event.labels(integration=name, event_type=event_type).set(seen)
                exported.add(event_type)
        self._snapshots[name] = snap

    def _forget(self, name: str) -> None:
        m = self._metrics
        for metric in (m.webhook_last_event, m.webhook_events, m.webhook_duplicates, m.webhook_duplicate_ratio):
            _remove(metric, name)
        for event_type in self._exported_types.pop(name, set()):
            _remove(m.webhook_type_last_event, name, event_type)
        self._snapshots.pop(name, None)
        self._watching_since.pop(name, None)
        self._windows.pop(name, None)


def _advance(counter: Any, before: int, now: int) -> None:
    """Move a Prometheus counter by what a Redis total grew; a total that went down was reset (keys
    deleted, Redis restarted without persistence), so everything it holds now is new."""
    delta = now - before if now >= before else now
    if delta > 0:
        counter.inc(delta)


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
