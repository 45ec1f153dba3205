"""The quota Component: rate-limit usage from response headers and Redis counters → metrics, status,
a snapshot for the alert engine, and probe backoff when a quota is nearly used up.

Labels. ``quota`` is the quota's config name. A ``source: headers`` quota follows the limits each
response announces (Retry-After apart): one limit is labelled with the plain name (``api-headers`` for
GitHub's lone ``core`` bucket, a lone Salesforce ``api-usage``, an IETF ``RateLimit-Policy`` of one
policy), several get one series each, ``<name>/<policy>`` (``api-headers/burst`` and
``api-headers/daily``; an unnamed one among them is ``<name>/default``); ``<name>/retry-after`` while a
Retry-After is in force. The trade-off: a vendor that starts announcing a second policy moves its series
from ``<name>`` to ``<name>/<policy>`` (and back); the policy itself stays in ``QuotaState.policy``
(/api/status) whatever the label. Quota names are unique within an integration
(``monitor.settings.reference_problems``), policy names are tamed by the parser (a vendor's
``retry-after`` policy renamed apart from the Retry-After's), so a label is one series. Policies come
from the API's own header set, so they are bounded; as a guard, at most ``MAX_POLICIES`` per quota are
kept. A Redis quota is one series per quota however many keys it matches (``integration_quota_keys`` /
``integration_quota_keys_near_limit`` count them).

Staleness. Headers: the last response that announced quota policies stands until the next one (a
response without quota headers, or no response at all, changes nothing), except ``retry-after``, which
lasts only as long as responses carry it. Redis: when a read fails (Redis down, slow, ACL…), every
series of that quota is removed, the quota leaves ``snapshot()``, the component reports itself not ok
(``integration_monitor_component_ok{component="quota"}`` 0) and ``status()`` shows the error; reads go
on with back-off (``integration_kit.retry.Backoff``: ``min(1s, interval)`` doubling up to
``max_backoff``) and the series come back with the first good read. A key of an unexpected type or a
non-numeric value, a key name not in the quota's format and a name beyond ``max_keys`` are skipped;
the other keys still count. Skipped keys are counted by reason in ``integration_quota_keys_skipped`` and
summarised in one log line (how many, a few examples) when the reasons change, never logged key by key
or poll by poll; no key name is remembered for it. Each Redis quota's poller
is a supervised loop (``integration_kit.supervisor``): a crash is logged, counted and the loop restarted.

Probe backoff. When the usage ratio of any quota of an integration is above its
``probe_backoff_above`` (or a Retry-After is in force), its probes slow down by ``BACKOFF_FACTOR``; a
quota at or over 100% with a known reset (or a Retry-After) slows them so that the next probe comes
after the reset. The factor goes to the ``on_backoff(integration, factor, reason)`` callback whenever
it changes (1.0 = normal again; default: ``services.scheduler.set_interval_factor``), to
``integration_probe_quota_backoff`` and to ``status()``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from integration_kit.ratelimit_headers import RETRY_AFTER, observed_quota
from integration_kit.retry import Backoff
from integration_kit.supervisor import Supervisor
from monitor.metrics import remove_series
from monitor.quota.burn import BurnTracker
from monitor.quota.reader import EXAMPLES, QuotaReader, QuotaReading
from monitor.settings.quota import HeadersQuotaConfig, RedisQuotaConfig

if TYPE_CHECKING:
    from integration_kit.results import CheckResult, QuotaObservation
    from monitor.component import Services
    from monitor.settings import Config

log = logging.getLogger(__name__)

Source = Literal["redis", "headers"]
BackoffCallback = Callable[[str, float, str], None]  # (integration, interval factor, reason)

BACKOFF_FACTOR = 4.0
MAX_FACTOR = 100.0
MAX_POLICIES = 8
SKIP_REASONS = ("name", "value", "over_max_keys")  # the reason label of integration_quota_keys_skipped


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaState:
    """The latest reading of one quota series (what /api/status shows and the alert engine reads)."""

    integration: str
    quota: str  # the metric label: config name, or "<name>/<policy>" of one of several (see module doc)
    name: str  # the quota's name in config
    policy: str
    source: Source
    used: float | None
    limit: float | None
    ratio: float | None  # used / limit, not clamped (limiters may count past the limit)
    reset_seconds: float | None  # as of observed_at
    exhaustion_seconds: float | None  # None: usage not rising, or the window resets first
    window_seconds: float | None
    observed_at: float  # epoch seconds (Redis TIME for Redis quotas)
    keys: int | None = None  # Redis: keys matched; the values above are the busiest key's
    keys_near_limit: int | None = None
    busiest_key: str | None = None  # redacted


@dataclass(slots=True)
class _Poller:
    cfg: RedisQuotaConfig
    backoff: Backoff
    reader: QuotaReader
    failures: int = 0
    last_error: str | None = None
    last_read_at: float | None = None
    round_trips: int | None = None
    skip_reasons: frozenset[str] = frozenset()  # the reasons keys were skipped for, as last logged


class QuotaService:
    name = "quota"
    scope = "owner"  # per integration, once across replicas (monitor/component.py)

    def __init__(
        self,
        services: Services,
        *,
        on_backoff: BackoffCallback | None = None,
        max_backoff: float = 60.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.services = services
        self.metrics = services.metrics
        if on_backoff is None and services.scheduler is not None:
            on_backoff = services.scheduler.set_interval_factor  # in the daemon: the probe scheduler
        self.on_backoff = on_backoff
        self.max_backoff = max_backoff
        self.read_timeout = read_timeout
        self._config = services.config
        self._states: dict[tuple[str, str, Source], QuotaState] = {}
        self._trackers: dict[tuple[str, str, Source], BurnTracker] = {}
        self._headers: dict[tuple[str, str], list[HeadersQuotaConfig]] = {}
        self._pollers: dict[tuple[str, str], _Poller] = {}
        self._supervisor = Supervisor(
            self.name, on_crash=self.metrics.component_errors.labels(self.name).inc,
            on_state=lambda ok: self.metrics.component_ok.labels(self.name).set(1 if ok else 0),
            redact=services.redactor.text,
        )
        self._backoff: dict[str, tuple[float, str]] = {}
        self._redacted_policies: set[str] = set()  # logged once each
        self._started = False
        self._index()

    # ---- Component ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._started = True
        if self._redis_quotas() and self.services.redis is None:
            log.info("redis_url is not set: quotas from Redis are off (header quotas still work)")
        self._sync_pollers()

    async def close(self) -> None:
        self._started = False
        await self._supervisor.close(grace=0.0)

    def on_result(self, result: CheckResult) -> None:
        try:
            quotas = self._headers.get((result.integration, result.check))
            if not quotas or result.status_code is None:  # no response: nothing new was said
                return
            observations = tuple(observed_quota(result))
            for quota in quotas:
                self._apply_headers(result.integration, quota, observations)
            self._evaluate_backoff(result.integration)
        except Exception:  # on_result must not raise: a quota bug cannot stop the probes' bookkeeping
            log.exception("quota: could not record the headers of %s/%s", result.integration, result.check)

    def on_config(self, config: Config) -> None:
        self._config = config
        self._index()
        wanted = {(i, q.name, q.source) for i, c in config.integrations.items() for q in c.quotas}
        for integration, label, source in list(self._states):
            name = self._states[(integration, label, source)].name
            if (integration, name, source) not in wanted:
                self._drop(integration, label, source)
        self._sync_pollers()
        for integration in set(self._backoff) | set(config.integrations):
            self._evaluate_backoff(integration)

    def status(self) -> dict[str, Any]:
        return {
            "quotas": [asdict(s) for s in self.snapshot()],
            "probe_backoff": {
                i: {"factor": f, "reason": r} for i, (f, r) in sorted(self._backoff.items()) if f != 1.0
            },
            **self._supervisor.status(),
            "redis_sources": {
                f"{i}/{q}": {
                    "running": self._supervisor.running(_loop_name(i, q)),
                    "ok": p.failures == 0 and p.last_read_at is not None,
                    "failures": p.failures,
                    "last_error": p.last_error,
                    "last_read_at": p.last_read_at,
                    "round_trips": p.round_trips,
                    "keys_known": p.reader.known_keys,
                    "scripts": p.reader.scripts,
                }
                for (i, q), p in sorted(self._pollers.items())
            },
        }

    def ready(self) -> tuple[bool, str]:
        # Quotas are best effort: a Redis outage must not take the monitor out of rotation; a crashing loop does.
        return self._supervisor.ready()

    def snapshot(self) -> list[QuotaState]:
        """The latest state of every quota series, sorted by integration and quota."""
        return sorted(self._states.values(), key=lambda s: (s.integration, s.quota, s.source))

    def backoff(self, integration: str) -> tuple[float, str]:
        return self._backoff.get(integration, (1.0, ""))

    # ---- headers --------------------------------------------------------------------------------

    def _index(self) -> None:
        self._headers = {}
        for integration, cfg in self._config.integrations.items():
            for quota in cfg.quotas:
                if isinstance(quota, HeadersQuotaConfig):
                    self._headers.setdefault((integration, quota.check), []).append(quota)

    def _apply_headers(
        self, integration: str, quota: HeadersQuotaConfig, observations: tuple[QuotaObservation, ...]
    ) -> None:
        policies = [o for o in observations if o.used is not None or o.limit is not None]
        current = {
            s.quota: s for s in self._states.values()
            if s.integration == integration and s.name == quota.name and s.source == "headers"
        }
        if policies:  # a response announcing policies replaces what the previous one announced
            seen = self._labels(quota.name, policies)
            for label, obs in seen.items():
                fixed = obs.reset_seconds is not None  # an announced reset: the quota empties then
                self._record(integration, label, quota.name, obs, "headers", fixed_window=fixed)
            for label, state in current.items():
                if label not in seen and state.policy != RETRY_AFTER:
                    self._drop(integration, label, "headers")
        retry = next((o for o in observations if o.policy == RETRY_AFTER), None)
        retry_label = f"{quota.name}/{RETRY_AFTER}"
        if retry is not None:
            self._record(integration, retry_label, quota.name, retry, "headers", fixed_window=False)
        elif retry_label in current:
            self._drop(integration, retry_label, "headers")

    def _labels(self, name: str, policies: list[QuotaObservation]) -> dict[str, QuotaObservation]:
        """The label of each limit one response announces: the quota's name for a lone one, ``<name>/<policy>``
        for each of several (at most ``MAX_POLICIES``): never a plain and a ``/policy`` label at once."""
        if len({obs.policy for obs in policies}) == 1:
            return {name: policies[0]}
        labels: dict[str, QuotaObservation] = {}
        for obs in policies:
            label = f"{name}/{self._policy(obs.policy)}"
            if label not in labels and len(labels) < MAX_POLICIES:
                labels[label] = obs
        return labels

    def _policy(self, name: str) -> str:
        """A vendor's policy name as a label: one it made of a secret (it echoed the key it was sent,
        say) would put the secret in /metrics, which the redactor never sees, so it becomes "redacted"."""
        if self.services.redactor.text(name) == name:
            return name
        if name not in self._redacted_policies:
            self._redacted_policies.add(name)
            log.warning("a rate-limit policy name holds a secret; it is shown as 'redacted'")
        return "redacted"

    # ---- Redis ----------------------------------------------------------------------------------

    def _redis_quotas(self) -> dict[tuple[str, str], RedisQuotaConfig]:
        return {
            (i, q.name): q
            for i, c in self._config.integrations.items()
            for q in c.quotas
            if isinstance(q, RedisQuotaConfig)
        }

    def _sync_pollers(self) -> None:
        wanted = self._redis_quotas()
        for key, poller in list(self._pollers.items()):
            if wanted.get(key) != poller.cfg:
                self._supervisor.cancel(_loop_name(*key))
                del self._pollers[key]
                self._drop(key[0], key[1], "redis")
        for key, cfg in wanted.items():
            if key not in self._pollers:
                first = min(1.0, cfg.interval)
                self._pollers[key] = _Poller(cfg, Backoff(first=first, cap=max(first, self.max_backoff)),
                                            QuotaReader(cfg, label="/".join(key)))
            poller = self._pollers[key]
            name = _loop_name(*key)
            if self._started and self.services.redis is not None and not self._supervisor.running(name):
                self._supervisor.start(name, functools.partial(self._poll, key[0], poller))
        self._report()

    def _report(self) -> None:
        """The component's own verdict: ok while every Redis quota's last read worked."""
        failing = [f"{i}/{q}: {p.last_error}" for (i, q), p in sorted(self._pollers.items()) if p.failures]
        self._supervisor.report(not failing, "Redis reads failing: " + "; ".join(failing))

    async def _poll(self, integration: str, poller: _Poller) -> None:
        cfg = poller.cfg
        key = (integration, cfg.name)
        while True:
            started = time.monotonic()
            try:
                client = self.services.redis
                if client is None:
                    raise RuntimeError("no Redis client")
                async with asyncio.timeout(max(self.read_timeout, cfg.interval)):
                    reading = await poller.reader.read(client)
            except Exception as exc:
                if self._pollers.get(key) is not poller:
                    return  # retired meanwhile (see below)
                poller.failures += 1
                poller.last_error = self.services.redactor.text(f"{type(exc).__name__}: {exc}")[:300]
                self._drop(integration, cfg.name, "redis")
                self._evaluate_backoff(integration)
                self._report()
                (log.warning if poller.failures == 1 else log.debug)(
                    "quota %s/%s: Redis read failed (%s); gauges removed, retrying with back-off",
                    integration, cfg.name, poller.last_error,
                )
                if not await self._supervisor.sleep(poller.backoff.failed()):
                    return
                continue

            if self._pollers.get(key) is not poller:
                # Retired by a reload while it was reading, and the cancellation got lost (integration_kit.tasks):
                # the series are gone, or belong to the new poller now.
                return
            if poller.failures:
                log.info("quota %s/%s: Redis reads resumed after %d failures", integration, cfg.name, poller.failures)
            poller.backoff.succeeded()
            poller.failures, poller.last_error = 0, None
            poller.last_read_at, poller.round_trips = reading.observation.observed_at, reading.round_trips
            self._report()
            self._apply_reading(integration, poller, reading)
            self._evaluate_backoff(integration)
            if not await self._supervisor.sleep(cfg.interval - (time.monotonic() - started)):
                return

    def _apply_reading(self, integration: str, poller: _Poller, reading: QuotaReading) -> None:
        cfg = poller.cfg
        self._report_skipped(integration, poller, reading)
        busiest = self._display(reading.busiest_key) if reading.busiest_key else None
        self._record(
            integration, cfg.name, cfg.name, reading.observation, "redis", fixed_window=reading.fixed_window,
            keys=reading.keys, keys_near_limit=reading.keys_near_limit, busiest_key=busiest,
        )
        labels = (integration, cfg.name, "redis")
        self.metrics.quota_keys.labels(*labels).set(reading.keys)
        self.metrics.quota_keys_near_limit.labels(*labels).set(reading.keys_near_limit)

    def _report_skipped(self, integration: str, poller: _Poller, reading: QuotaReading) -> None:
        """Skipped keys by reason into the gauge; one summary line in the log when the reasons change."""
        counts = {"name": reading.unrecognised, "value": len(reading.skipped), "over_max_keys": reading.over_max_keys}
        for reason, count in counts.items():
            self.metrics.quota_keys_skipped.labels(integration, poller.cfg.name, "redis", reason).set(count)
        reasons = frozenset(r for r, n in counts.items() if n)
        if reasons == poller.skip_reasons:
            return
        poller.skip_reasons = reasons
        if not reasons:
            log.info("quota %s/%s: no keys skipped any more", integration, poller.cfg.name)
            return
        parts = []
        if reading.skipped:
            examples = "; ".join(f"{self._display(k)}: {why}" for k, why in reading.skipped[:EXAMPLES])
            parts.append(f"{len(reading.skipped)} of an unexpected type or value (e.g. {examples})")
        if reading.unrecognised:
            examples = ", ".join(self._display(k) for k in reading.unrecognised_examples)
            parts.append(f"{reading.unrecognised} whose name is not in {poller.cfg.format} format (e.g. {examples})")
        if reading.over_max_keys:
            parts.append(f"{reading.over_max_keys} beyond max_keys ({poller.cfg.max_keys}), not read")
        log.warning("quota %s/%s: skipping keys the pattern matched: %s; the other keys count "
                    "(integration_quota_keys_skipped; logged again when the reasons change)",
                    integration, poller.cfg.name, "; ".join(parts))

    def _display(self, key: str) -> str:
        """A Redis key for logs and /api/status: secrets masked, bytes that are not UTF-8 escaped."""
        return self.services.redactor.text(key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))

    # ---- shared bookkeeping -----------------------------------------------------------------------

    def _record(
        self,
        integration: str,
        label: str,
        name: str,
        obs: QuotaObservation,
        source: Source,
        *,
        fixed_window: bool,
        keys: int | None = None,
        keys_near_limit: int | None = None,
        busiest_key: str | None = None,
    ) -> None:
        key = (integration, label, source)
        previous = self._states.get(key)
        if previous is not None and previous.policy != obs.policy:
            # A lone limit keeps the plain label whichever it is (GitHub's core, then its search bucket):
            # another limit's usage is not this one's rise.
            self._trackers.pop(key, None)
        tracker = self._trackers.setdefault(key, BurnTracker())
        if obs.used is not None:
            tracker.add(obs.observed_at, obs.used, fixed_window=fixed_window)
        exhaustion = tracker.exhaustion(
            used=obs.used, limit=obs.limit, reset_seconds=obs.reset_seconds, fixed_window=fixed_window
        )
        state = QuotaState(
            integration=integration, quota=label, name=name, policy=obs.policy, source=source, used=obs.used,
            limit=obs.limit, ratio=obs.ratio, reset_seconds=obs.reset_seconds, exhaustion_seconds=exhaustion,
            window_seconds=obs.window_seconds, observed_at=obs.observed_at, keys=keys,
            keys_near_limit=keys_near_limit, busiest_key=busiest_key,
        )
        self._states[key] = state
        m = self.metrics
        for gauge, value in (
            (m.quota_used, state.used),
            (m.quota_limit, state.limit),
            (m.quota_ratio, state.ratio),
            (m.quota_reset, state.reset_seconds),
            (m.quota_exhaustion, state.exhaustion_seconds),
        ):
            if value is None:
                remove_series(gauge, *key)
            else:
                gauge.labels(*key).set(value)

    def _drop(self, integration: str, label: str, source: Source) -> None:
        key = (integration, label, source)
        self._states.pop(key, None)
        self._trackers.pop(key, None)
        m = self.metrics
        for gauge in (m.quota_used, m.quota_limit, m.quota_ratio, m.quota_reset, m.quota_exhaustion,
                      m.quota_keys, m.quota_keys_near_limit):
            remove_series(gauge, *key)
        for reason in SKIP_REASONS:
            remove_series(m.quota_keys_skipped, *key, reason)

    def _evaluate_backoff(self, integration: str) -> None:
        factor, reason = self._backoff_for(integration)
        previous = self._backoff.get(integration, (1.0, ""))
        self._backoff[integration] = (factor, reason)
        if integration in self._config.integrations:
            self.metrics.probe_backoff.labels(integration).set(1 if factor > 1.0 else 0)
        else:
            self._backoff.pop(integration, None)
            remove_series(self.metrics.probe_backoff, integration)
        if factor != previous[0] and self.on_backoff is not None:
            try:
                self.on_backoff(integration, factor, reason)
            except Exception:
                log.exception("quota: the probe backoff callback failed for %s", integration)

    def _backoff_for(self, integration: str) -> tuple[float, str]:
        cfg = self._config.integrations.get(integration)
        states = [s for s in self._states.values() if s.integration == integration]
        if cfg is None or not states:  # (first: every integration is asked at each change of ownership)
            return 1.0, ""
        shortest = min((c.interval for c in cfg.checks if c.enabled), default=0.0)

        def until(seconds: float | None) -> float:
            """The factor that puts the next probe after ``seconds``."""
            if not seconds or not shortest:
                return BACKOFF_FACTOR
            return max(BACKOFF_FACTOR, math.ceil(seconds / shortest) + 1)

        retry = max((s.reset_seconds or 0.0 for s in states if s.policy == RETRY_AFTER), default=None)
        if retry is not None:
            return min(until(retry), MAX_FACTOR), f"rate limited: Retry-After {retry:g}s"
        over = [s for s in states if s.ratio is not None and s.ratio > cfg.probe_backoff_above]
        if not over:
            return 1.0, ""
        worst = max(over, key=lambda s: s.ratio or 0.0)
        ratio = worst.ratio or 0.0
        factor = until(worst.reset_seconds) if ratio >= 1.0 else BACKOFF_FACTOR
        reason = f"quota {worst.quota} ({worst.source}) at {ratio:.0%}, above {cfg.probe_backoff_above:.0%}"
        return min(factor, MAX_FACTOR), reason



def _loop_name(integration: str, quota: str) -> str:
    return f"quota:{integration}/{quota}"
