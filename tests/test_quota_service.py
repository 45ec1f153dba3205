"""The quota Component: header quotas from probe results, Redis quotas polled in the background,
metrics and status, probe backoff, and surviving a Redis restart."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis.asyncio
from redis_servers import OwnRedis, tag_of
from waiting import until

from integration_kit.redact import Redactor
from integration_kit.results import CheckResult, QuotaObservation
from monitor.component import Services
from monitor.metrics import Metrics
from monitor.quota.service import QuotaService, QuotaState
from monitor.settings import Config, ConfigError, parse_config
from monitor.wiring import QuotaReadings

CONFIG = """
integrations:
  github:
    checks:
      - {{name: rate, kind: http, url: "http://127.0.0.1:9/rate_limit", interval: 30s}}
      - {{name: slow, kind: http, url: "http://127.0.0.1:9/slow", interval: 5m}}
    quotas:
      - {{name: api-headers, source: headers, check: rate}}
{redis_quota}
"""


def config(redis_quota: str = "", extra: str = "") -> Config:
    return parse_config(CONFIG.format(redis_quota=redis_quota) + extra)


def sample(metrics: Metrics, name: str, quota: str, source: str = "headers", integration: str = "github") -> Any:
    labels = {"integration": integration, "quota": quota, "source": source}
    return metrics.registry.get_sample_value(name, labels)


def result(*observations: QuotaObservation, status: int | None = 200, check: str = "rate") -> CheckResult:
    """A probe result whose response announced ``observations`` (as of their ``observed_at``)."""
    end = observations[0].observed_at if observations else time.time()
    return CheckResult(
        integration="github", check=check, kind="http", ok=status == 200, error_class=None, detail="",
        started_at=end - 0.01, duration=0.01, total_duration=0.01, status_code=status,
        rate_limit_headers=announcing(*observations),
    )


def announcing(*observations: QuotaObservation) -> tuple[tuple[str, str], ...]:
    """The rate-limit fields of a response that announces ``observations``: IETF ``RateLimit-Policy`` +
    ``RateLimit`` (one named policy each; the parser reads ``default`` as the unnamed one), ``Retry-After``."""
    fields, policies, states = [], [], []
    for o in observations:
        if o.policy == "retry-after":
            fields.append(("retry-after", f"{o.reset_seconds:g}"))
            continue
        assert o.used is not None and o.limit is not None, o  # what these tests announce
        policies.append(f'"{o.policy}";q={o.limit:g}')
        reset = "" if o.reset_seconds is None else f";t={o.reset_seconds:g}"
        states.append(f'"{o.policy}";r={o.limit - o.used:g}{reset}')
    if policies:
        fields += [("ratelimit-policy", ", ".join(policies)), ("ratelimit", ", ".join(states))]
    return tuple(fields)


def used(metrics: Metrics) -> Any:
    """The Redis-counted use of the github/api quota these tests read."""
    return sample(metrics, "integration_quota_used", "api", "redis")


def github_api(service: Any) -> Any:
    """The github/api Redis source's status."""
    return service.status()["redis_sources"]["github/api"]


def obs(policy: str, used: float | None, limit: float | None, reset: float | None = None, at: float = 0.0):
    return QuotaObservation(policy=policy, used=used, limit=limit, reset_seconds=reset, observed_at=at or time.time())


class Backoffs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def __call__(self, integration: str, factor: float, reason: str) -> None:
        self.calls.append((integration, factor, reason))


def make(cfg: Config, client: redis.asyncio.Redis | None = None, **kw: Any) -> tuple[QuotaService, Metrics]:
    metrics = Metrics()
    services = Services(metrics=metrics, redactor=Redactor(), redis=client, config=cfg)
    return QuotaService(services, **kw), metrics


# ---- headers -----------------------------------------------------------------------------------------


async def test_header_policies_become_labelled_gauges():
    service, m = make(config())
    service.on_result(result(obs("default", 30, 40, reset=12)))
    assert sample(m, "integration_quota_used", "api-headers") == 30
    assert sample(m, "integration_quota_limit", "api-headers") == 40
    assert sample(m, "integration_quota_usage_ratio", "api-headers") == 0.75
    assert sample(m, "integration_quota_reset_seconds", "api-headers") == 12

    # Named policies: one series each; the unnamed one is gone (the new response replaced it).
    service.on_result(result(obs("burst", 50, 100, 30), obs("daily", 100, 1000, 3600)))
    assert sample(m, "integration_quota_used", "api-headers") is None
    assert sample(m, "integration_quota_usage_ratio", "api-headers/burst") == 0.5
    assert sample(m, "integration_quota_usage_ratio", "api-headers/daily") == 0.1
    assert [(s.quota, s.policy, s.name) for s in service.snapshot()] == [
        ("api-headers/burst", "burst", "api-headers"), ("api-headers/daily", "daily", "api-headers")
    ]


async def test_responses_without_quota_headers_change_nothing_but_retry_after_is_transient():
    service, m = make(config())
    service.on_result(result(obs("core", 10, 5000, 100)))
    service.on_result(result())  # e.g. a proxy's error page: no quota headers
    service.on_result(result(status=None))  # no response at all
    service.on_result(result(check="slow"))  # a check no quota reads
    assert sample(m, "integration_quota_used", "api-headers") == 10

    service.on_result(result(obs("retry-after", None, None, 30), status=429))
    assert sample(m, "integration_quota_reset_seconds", "api-headers/retry-after") == 30
    assert sample(m, "integration_quota_used", "api-headers/retry-after") is None
    assert sample(m, "integration_quota_used", "api-headers") == 10
    service.on_result(result(obs("core", 11, 5000, 90)))
    assert sample(m, "integration_quota_reset_seconds", "api-headers/retry-after") is None


async def test_exhaustion_projection_moves_as_usage_climbs():
    service, m = make(config())
    start = time.time()
    projections = []
    for i in range(5):  # 10 units per 10 s → 1 unit/s
        service.on_result(result(obs("default", 100 + 10 * i, 1000, reset=3600, at=start + 10 * i)))
        projections.append(sample(m, "integration_quota_exhaustion_seconds", "api-headers"))
    assert projections[0] is None  # one sample is not a rate
    assert projections[1:] == pytest.approx([890, 880, 870, 860])
    service.on_result(result(obs("default", 140, 1000, reset=60, at=start + 50)))  # resets first
    assert sample(m, "integration_quota_exhaustion_seconds", "api-headers") is None


async def test_nearly_used_quota_slows_the_probes_down():
    backoffs = Backoffs()
    service, m = make(config(), on_backoff=backoffs)
    service.on_result(result(obs("default", 85, 100, 600)))
    assert backoffs.calls == [] and service.backoff("github") == (1.0, "")

    service.on_result(result(obs("default", 95, 100, 600)))
    assert backoffs.calls == [("github", 4.0, "quota api-headers (headers) at 95%, above 90%")]
    assert m.registry.get_sample_value("integration_probe_quota_backoff", {"integration": "github"}) == 1
    assert service.status()["probe_backoff"] == {"github": {"factor": 4.0, "reason": backoffs.calls[0][2]}}

    # At the limit: wait out the reset (300 s with a 30 s probe interval → 11 intervals).
    service.on_result(result(obs("default", 100, 100, 300)))
    assert backoffs.calls[-1][:2] == ("github", 11.0)
    service.on_result(result(obs("retry-after", None, None, 45), status=429))
    assert backoffs.calls[-1] == ("github", 4.0, "rate limited: Retry-After 45s")

    service.on_result(result(obs("default", 5, 100, 3600)))
    assert backoffs.calls[-1] == ("github", 1.0, "")
    assert m.registry.get_sample_value("integration_probe_quota_backoff", {"integration": "github"}) == 0
    assert service.status()["probe_backoff"] == {}


async def test_the_daemon_scheduler_is_the_default_callback():
    class Scheduler:
        def __init__(self) -> None:
            self.calls: list[tuple[str, float, str]] = []

        def set_interval_factor(self, integration: str, factor: float, reason: str = "") -> None:
            self.calls.append((integration, factor, reason))

    scheduler = Scheduler()
    services = Services(metrics=Metrics(), redactor=Redactor(), redis=None, config=config(), scheduler=scheduler)
    QuotaService(services).on_result(result(obs("default", 99, 100)))
    assert scheduler.calls[-1][:2] == ("github", 4.0)


async def test_threshold_is_per_integration():
    backoffs = Backoffs()
    cfg = parse_config(
        CONFIG.format(redis_quota="").replace("  github:\n", "  github:\n    probe_backoff_above: 0.5\n")
    )
    service, _ = make(cfg, on_backoff=backoffs)
    service.on_result(result(obs("default", 60, 100)))
    assert backoffs.calls[-1][:2] == ("github", 4.0)


async def test_a_failing_callback_or_odd_result_never_raises(caplog):
    def broken(*_: Any) -> None:
        raise RuntimeError("scheduler gone")

    service, _ = make(config(), on_backoff=broken)
    with caplog.at_level(logging.ERROR):
        service.on_result(result(obs("default", 99, 100)))
    assert "backoff callback failed" in caplog.text
    service.on_result(result(obs("default", 1, 0)))  # a zero limit: no ratio, no crash


async def test_reload_drops_the_series_of_removed_quotas():
    service, m = make(config())
    service.on_result(result(obs("default", 3, 10)))
    bare = parse_config(
        "integrations:\n  github:\n    checks:\n      - {name: rate, kind: http, url: 'http://127.0.0.1:9/'}\n"
    )
    service.on_config(bare)
    assert sample(m, "integration_quota_used", "api-headers") is None and service.snapshot() == []


# ---- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "message"),
    [
        ("{name: q, source: redis, format: counter, match: 'rl:*'}", "format 'counter' needs limit"),
        ("{name: q, source: redis, format: limits, match: 'x', limit: 5}", "does not use limit (limits keys carry"),
        ("{name: q, source: redis, format: gcra, match: 'x', rate: 5, burst: 1}", "needs variant"),
        ("{name: q, source: redis, format: sliding_log, match: x, limit: 5, window: 1m, time_unit: h}", "'s' or 'ms'"),
        ("{name: q, source: redis, format: counter, match: 'x', limit: 5, capacity: 3}", "does not use capacity"),
    ],
)
def test_format_options_are_checked_at_load(quota, message):
    with pytest.raises(ConfigError) as err:
        config(f"      - {quota}")
    [(path, text)] = err.value.problems
    assert path.startswith("integrations.github.quotas[1]") and message in text


# ---- Redis ----------------------------------------------------------------------------------------


def counter_quota(tag: str) -> str:
    return f"      - {{name: api, source: redis, format: counter, match: 'rl:{tag}:*', limit: 10, interval: 50ms}}"


async def test_redis_quota_is_polled_into_gauges_and_bad_keys_are_logged_once(shared_redis, prefix, caplog):
    client, tag = shared_redis, tag_of(prefix)
    await client.set(f"rl:{tag}:a", 9, ex=60)
    await client.set(f"rl:{tag}:b", 2, ex=60)
    await client.rpush(f"rl:{tag}:odd", "x")
    service, m = make(config(counter_quota(tag)), client)
    with caplog.at_level(logging.WARNING, logger="monitor.quota"):
        await service.start()
        try:
            await until(lambda: used(m), "quota used 9", holds=lambda v: v == 9)
            used_polls = service.status()["redis_sources"]["github/api"]["last_read_at"]
            await until(lambda: github_api(service)["last_read_at"], "another read", holds=lambda t: t != used_polls)
        finally:
            await service.close()
    assert sample(m, "integration_quota_usage_ratio", "api", "redis") == 0.9
    assert sample(m, "integration_quota_keys", "api", "redis") == 2
    assert sample(m, "integration_quota_keys_near_limit", "api", "redis") == 1
    assert m.registry.get_sample_value("integration_monitor_component_ok", {"component": "quota"}) == 1
    [state] = service.snapshot()
    assert (state.source, state.busiest_key, state.keys) == ("redis", f"rl:{tag}:a", 2)
    assert caplog.text.count("skipping keys the pattern matched") == 1  # one summary, not one line a poll
    assert f"1 of an unexpected type or value (e.g. rl:{tag}:odd: unexpected type list)" in caplog.text
    skipped = {"integration": "github", "quota": "api", "source": "redis", "reason": "value"}
    assert m.registry.get_sample_value("integration_quota_keys_skipped", skipped) == 1
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("quota:")]


async def test_without_redis_only_header_quotas_run(caplog):
    service, m = make(config(counter_quota("none")), None)
    with caplog.at_level(logging.INFO, logger="monitor.quota"):
        await service.start()
    assert "quotas from Redis are off" in caplog.text
    service.on_result(result(obs("default", 1, 10)))
    assert sample(m, "integration_quota_used", "api-headers") == 1
    await service.close()


async def test_redis_restart_is_survived(own_redis: OwnRedis):
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url, socket_timeout=1, socket_connect_timeout=1)
    service, m = make(config(counter_quota("r")), client, max_backoff=0.2, read_timeout=2.0)
    try:
        await client.set("rl:r:x", 4, ex=600)
        await service.start()
        await until(lambda: used(m), "quota used 4", holds=lambda v: v == 4)

        await own_redis.stop()
        # The quota reader says its reads fail; whether Redis is down is the Redis health check's to say.
        quota_ok = lambda: m.registry.get_sample_value("integration_monitor_component_ok", {"component": "quota"})  # noqa: E731
        await until(quota_ok, "the quota component not ok", holds=lambda v: v == 0)
        assert sample(m, "integration_quota_used", "api", "redis") is None  # stale gauges are removed
        assert sample(m, "integration_quota_keys", "api", "redis") is None
        assert service.snapshot() == []
        source = service.status()["redis_sources"]["github/api"]
        assert source["ok"] is False and source["failures"] >= 1 and "Connection" in source["last_error"]

        await own_redis.start()  # a fresh, empty server on the same port
        await client.set("rl:r:x", 7, ex=600)
        await until(lambda: used(m), "quota used 7", holds=lambda v: v == 7)
        assert m.registry.get_sample_value("integration_monitor_component_ok", {"component": "quota"}) == 1
        assert service.status()["redis_sources"]["github/api"]["ok"] is True
    finally:
        await service.close()
        await client.aclose()


async def test_reload_restarts_changed_redis_quotas(shared_redis, prefix):
    client, tag = shared_redis, tag_of(prefix)
    await client.set(f"rl:{tag}:a", 5, ex=60)
    service, m = make(config(counter_quota(tag)), client)
    await service.start()
    try:
        await until(lambda: used(m), "quota used 5", holds=lambda v: v == 5)
        service.on_config(config())  # the Redis quota is gone
        assert sample(m, "integration_quota_used", "api", "redis") is None
        assert service.status()["redis_sources"] == {}
        # Its poller was cancelled: nothing comes back in 3 of its 50 ms intervals (a window too short on a
        # loaded machine would let a poller that ran on pass, never fail a sound one).
        await asyncio.sleep(0.15)
        assert sample(m, "integration_quota_used", "api", "redis") is None
        service.on_config(config(counter_quota(tag)))
        await until(lambda: used(m), "quota used 5", holds=lambda v: v == 5)
    finally:
        await service.close()


def test_the_alert_rules_see_an_idle_quota_as_nothing_used() -> None:
    """A Redis quota nothing matched is judged (0 used: its alerts clear); one with usage but no limit,
    or no reading at all, is not (its alerts hold)."""

    def state(quota: str, used: float | None, limit: float | None) -> QuotaState:
        return QuotaState(integration="github", quota=quota, name=quota, policy="default", source="redis",
                          used=used, limit=limit, ratio=None, reset_seconds=None, exhaustion_seconds=None,
                          window_seconds=None, observed_at=0.0)

    class Snapshot:
        def snapshot(self) -> list[QuotaState]:
            return [state("idle", 0.0, None), state("busy", 5.0, 10.0), state("no-limit", 5.0, None),
                    state("unread", None, None)]

    readings = {r.quota: r for r in QuotaReadings(Snapshot()).quota_snapshot()}  # type: ignore[arg-type]
    assert sorted(readings) == ["busy", "idle"]
    assert (readings["idle"].ratio, readings["busy"].ratio) == (0.0, 0.5)


async def test_key_names_are_capped_and_bad_ones_summarised_not_remembered(shared_redis, prefix, caplog):
    """Issue 13, finding 11: every matched and unrecognised key name was kept in memory without bound, and
    past 10,000 bad keys each was logged at every poll."""
    client, tag = shared_redis, tag_of(prefix)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(8):
            pipe.set(f"LIMITS:LIMITER/{tag}/k{i}/10/1/minute", i, ex=60)
        for i in range(20):
            pipe.set(f"LIMITS:LIMITER/{tag}/junk{i}", 1, ex=60)  # not a limits key name
        await pipe.execute()
    quota = (f"      - {{name: api, source: redis, format: limits, match: 'LIMITS:LIMITER/{tag}/*', "
             f"interval: 50ms, max_keys: 5}}")
    service, m = make(config(quota), client)
    with caplog.at_level(logging.INFO, logger="monitor.quota"):
        await service.start()
        try:
            await until(lambda: github_api(service)["keys_known"], "5 keys known", holds=lambda n: n == 5)
            reads = github_api(service)["last_read_at"]
            for _ in range(5):  # several more polls
                reads = await until(lambda: github_api(service)["last_read_at"], f"a read after the one at {reads}",
                                    holds=lambda at, before=reads: at != before)
        finally:
            await service.close()
    poller = service._pollers[("github", "api")]
    assert poller.reader.known_keys == 5  # the cap: nothing more remembered
    lines = [r.getMessage() for r in caplog.records if "skipping keys" in r.getMessage()]
    assert len(lines) == 1, lines  # one summary in all those polls
    assert "20 whose name is not in limits format (e.g. LIMITS:LIMITER/" in lines[0]
    assert lines[0].count("junk") == 3 and "3 beyond max_keys (5), not read" in lines[0]
    labels = {"integration": "github", "quota": "api", "source": "redis"}
    counts = {reason: m.registry.get_sample_value("integration_quota_keys_skipped", {**labels, "reason": reason})
              for reason in ("name", "value", "over_max_keys")}
    assert counts == {"name": 20, "value": 0, "over_max_keys": 3}
