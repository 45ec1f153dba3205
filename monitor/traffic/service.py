"""The real-traffic reader as a daemon Component: every ``evaluation_interval`` it reads the buckets the
integration services' kit writes (``integration_kit.traffic``) for each integration with a ``traffic``
section, turns what is new since the last read into the ``integration_traffic_*`` metrics, hands
the calls to the alert engine's error-rate rule (``publish_traffic_to``) and, after every read, the
writers' latest flush to the ``traffic_silence`` rule (``fact_feed``: facts encoded by
``alerts.rules.traffic_silence.to_facts``; ``fresh`` 0 while Redis cannot be read, so the rule holds).

What is new: every read re-reads the last ``LOOKBACK`` seconds of buckets (writers flush about once a
second, and late), and only the growth of each field since it was last seen counts. The first read of
an integration also reads ``BACKFILL`` seconds of history: it goes to the rule (so a restart does not
blind it) but not to the counters, which, as Prometheus counters do, count from the monitor's start.

Read-only, so any number of replicas may read; in a cluster it is owner-scoped (monitor/component.py):
it reads and feeds to the engine only the integrations this replica owns, and exports an integration's
series only while the placement says this replica owns it (``exports``: the answer the probe series and
the alert engine follow too, asked at the moment of export).
Redis trouble: the reader logs once, shows the error in ``/api/status``, reports itself not ok
(``integration_monitor_component_ok{component="traffic"}``) and retries with back-off; the counters
simply stand still. The read loop is supervised (``monitor/poll_loop.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from alerts.rules.traffic_silence import TrafficWrites, to_facts
from integration_kit.supervisor import Supervisor
from integration_kit.traffic import BucketCounts, bucket_of, decode_bucket
from monitor.fact_feed import FactFeed
from monitor.metrics import remove_series
from monitor.poll_loop import PollLoop
from monitor.traffic.reader import TrafficRead, read_traffic

if TYPE_CHECKING:
    from integration_kit.results import CheckResult
    from monitor.component import Services
    from monitor.settings import Config
    from monitor.settings.traffic import TrafficConfig

log = logging.getLogger(__name__)

LOOKBACK = 60  # seconds of buckets read again every time
BACKFILL = 3600  # seconds of history read once, for the error-rate rule
AddTraffic = Callable[[str, float, int, Mapping[str, int]], None]  # (integration, bucket start, calls, errors)


@dataclass(slots=True)
class _Tracker:
    """What was seen of one integration's recent buckets (raw field values), to count only growth."""

    seen: dict[int, dict[str, int]] = field(default_factory=dict)
    started: bool = False
    statuses: set[str] = field(default_factory=set)
    classes: set[str] = field(default_factory=set)
    last_write: float | None = None
    calls: int = 0
    errors: int = 0
    complained: bool = False


class TrafficService:
    name = "traffic"
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
        self._configs: dict[str, TrafficConfig] = {}
        self._trackers: dict[str, _Tracker] = {}
        self._add_traffic: AddTraffic | None = None
        self.fact_feed = FactFeed(self.facts)  # the traffic_silence rule's input, after every read
        self._watching_since: dict[str, float] = {}  # first successful read of each integration (our clock)
        self.exports: Callable[[str], bool] = services.placement.owns
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._supervisor = Supervisor(
            self.name, on_crash=self._metrics.component_errors.labels(self.name).inc,
            on_state=lambda ok: self._metrics.component_ok.labels(self.name).set(1 if ok else 0),
            redact=services.redactor.text,
        )
        self._loop = PollLoop(self.read_once, interval=lambda: services.config.monitor.evaluation_interval,
                              name="traffic-reader", supervisor=self._supervisor, min_backoff=min_backoff,
                              max_backoff=max_backoff)
        self.on_config(services.config)

    # Component protocol ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._services.redis is None:
            if self._configs:
                log.info("traffic: no redis_url configured, real-traffic counters are off")
            return
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()

    def on_result(self, result: CheckResult) -> None:
        return None

    def on_config(self, config: Config) -> None:
        configs = {name: cfg.traffic for name, cfg in config.integrations.items() if cfg.traffic is not None}
        for name in set(self._trackers) - set(configs):
            self._forget(name)
        for name, cfg in configs.items():
            old = self._configs.get(name)
            if old is not None and old.key_prefix != cfg.key_prefix:
                self._forget(name)  # other keys: start again from a baseline
        self._configs = configs
        self._loop.wake()

    def status(self) -> dict[str, Any]:
        failing = self._last_error is not None
        redis = "not configured" if self._services.redis is None else "unavailable" if failing else "ok"
        return {
            "redis": redis,
            "last_success": self._last_success,
            "last_error": self._last_error,
            "integrations": {
                name: {"calls": t.calls, "errors": t.errors, "last_write": t.last_write}
                for name, t in sorted(self._trackers.items())
            },
            **self._supervisor.status(),
        }

    def ready(self) -> tuple[bool, str]:
        # Real-traffic counters are best effort: Redis down is no reason to leave rotation; a crashing loop is.
        return self._supervisor.ready()

    def publish_traffic_to(self, add_traffic: AddTraffic) -> None:
        """Hand every new count of calls to ``add_traffic`` (the alert engine's ``add_traffic``)."""
        self._add_traffic = add_traffic

    def facts(self) -> dict[str, dict[str, float]]:
        """integration → the ``traffic_silence`` rule's facts (``alerts.rules.traffic_silence.to_facts``)."""
        out = {}
        for name in self._configs:
            since = self._watching_since.get(name)
            tracker = self._trackers.get(name)
            writes = None if since is None else TrafficWrites(
                watching_since=since, last_write=tracker.last_write if tracker else None,
                fresh=self._last_error is None,
            )
            out[name] = to_facts(writes)
        return out

    # Reading ---------------------------------------------------------------------------------------

    async def read_once(self) -> bool:
        redis = self._services.redis
        if redis is None or not self._configs:
            return True
        now = self._clock()
        wanted = {}
        for name, cfg in self._configs.items():
            tracker = self._trackers.setdefault(name, _Tracker())
            back = LOOKBACK if tracker.started else BACKFILL
            wanted[name] = (cfg.key_prefix, bucket_of(now - back))
        try:
            _, reads = await read_traffic(redis, wanted, clock=lambda: now)
        except (RedisError, OSError) as exc:
            self._fail(exc)
            self.fact_feed.push()  # not fresh: the silence rule holds instead of judging old data
            return False
        if self._last_error is not None:
            log.info("traffic: Redis readable again after %d failed read(s)", max(1, self._loop.backoff.failures))
        self._last_error, self._last_success = None, self._clock()
        self._supervisor.report(True)
        for name, read in reads.items():
            if name in self._trackers:
                self._watching_since.setdefault(name, now)
                self._apply(name, self._trackers[name], read, oldest=bucket_of(now - LOOKBACK))
        self.fact_feed.push()
        return True

    def _fail(self, exc: BaseException) -> None:
        text = self._services.redactor.text(f"{type(exc).__name__}: {exc}")
        if self._last_error is None:
            log.warning("traffic: cannot read Redis (%s); retrying with back-off", text)
        self._last_error = text
        self._supervisor.report(False, f"Redis read failed: {text}")

    def _apply(self, name: str, tracker: _Tracker, read: TrafficRead, *, oldest: int) -> None:
        exporting = tracker.started and self.exports(name)
        for start, raw in sorted(read.buckets.items()):
            before = tracker.seen.get(start, {})
            now = {k: n for k, v in raw.items() if (n := _int(v)) is not None}
            # A field that shrank was reset (Redis restarted without persistence): all it holds is new.
            grown = {k: str(n - before.get(k, 0) if n >= before.get(k, 0) else n) for k, n in now.items()}
            grown.update({k: v for k, v in raw.items() if k not in now})  # not integers: decode_bucket names them
            tracker.seen[start] = now
            delta = decode_bucket(grown)
            if delta.ignored and not tracker.complained:
                tracker.complained = True
                log.warning("traffic keys of %s: unknown or non-integer fields ignored: %s", name,
                            ", ".join(sorted(delta.ignored))[:200])
            if delta.total or delta.lost:
                self._count(name, tracker, start, delta, exporting)
        for start in [s for s in tracker.seen if s < oldest]:
            del tracker.seen[start]
        if read.last_write is not None:
            tracker.last_write = read.last_write
            if self.exports(name):
                self._metrics.traffic_last_write.labels(integration=name).set(read.last_write)
        tracker.started = True

    def _count(self, name: str, tracker: _Tracker, start: int, delta: BucketCounts, exporting: bool) -> None:
        errors = {c: n for c, n in delta.calls.items() if c != "ok"}
        tracker.calls += delta.total
        tracker.errors += delta.errors
        if self._add_traffic is not None and delta.total:
            self._add_traffic(name, float(start), delta.total, errors)
        if not exporting:
            return
        m = self._metrics
        for error_class, n in delta.calls.items():
            if n:
                m.traffic_requests.labels(integration=name, error_class=error_class).inc(n)
                tracker.classes.add(error_class)
        for status, n in delta.statuses.items():
            if n:
                m.traffic_responses.labels(integration=name, code=str(status)).inc(n)
                tracker.statuses.add(str(status))
        if any(delta.latency):
            m.traffic_duration.add(name, delta.latency, delta.latency_sum)
        for counter, value in ((m.traffic_retries, delta.retries), (m.traffic_throttled, delta.throttled),
                               (m.traffic_throttle_wait, delta.throttle_wait),
                               (m.traffic_limiter_bypassed, delta.limiter_bypassed), (m.traffic_lost, delta.lost)):
            if value:
                counter.labels(integration=name).inc(value)

    def _forget(self, name: str) -> None:
        tracker = self._trackers.pop(name, None)
        if self._watching_since.pop(name, None) is not None:
            self.fact_feed.send(name, to_facts(None))  # no longer read here: nothing to judge on
        m = self._metrics
        for metric in (m.traffic_retries, m.traffic_throttled, m.traffic_throttle_wait, m.traffic_limiter_bypassed,
                       m.traffic_lost, m.traffic_last_write):
            remove_series(metric, name)
        m.traffic_duration.remove(name)
        if tracker is not None:
            for error_class in tracker.classes:
                remove_series(m.traffic_requests, name, error_class)
            for status in tracker.statuses:
                remove_series(m.traffic_responses, name, status)


def _int(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        return None

