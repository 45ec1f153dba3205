"""The monitor's side of real traffic against a real Redis: what services did with the kit comes back as
``integration_traffic_*`` metrics exactly (late writes counted once, history only for the rule), and the
error-rate rule judges real traffic beside the probes, with its own guard, and says which one fired."""

from __future__ import annotations

from typing import Any

import aiohttp
import redis.asyncio
import yaml
from redis_servers import OwnRedis
from targets import Reply, Target
from waiting import until

from alerts.engine import AlertEngine
from alerts.rules import RuleInput
from alerts.rules.error_rate import TRAFFIC_TARGET, evaluate
from alerts.stats import Stats
from alerts.traffic_stats import TrafficStats
from integration_kit.calls import CallError, CallOutcome
from integration_kit.client import Integration, RateLimit
from integration_kit.errors import ErrorClass
from integration_kit.recorder import TrafficRecorder
from integration_kit.redact import Redactor
from integration_kit.retry import RetryPolicy
from integration_kit.traffic import bucket_key, bucket_of
from monitor.cluster.placement import Placement, Solo
from monitor.component import Services
from monitor.metrics import Metrics
from monitor.settings import Config, parse_config
from monitor.traffic.service import TrafficService


def make_config(prefix: str, **error_rate: Any) -> Config:
    integrations = {
        "payments": {"traffic": {"key_prefix": prefix}, "alerts": {"error_rate": error_rate or {}}},
        "no-traffic": {},
    }
    return parse_config(yaml.safe_dump({"monitor": {"evaluation_interval": "100ms"}, "integrations": integrations}))


def make_service(client: redis.asyncio.Redis, config: Config,
                 placement: Placement | None = None) -> tuple[TrafficService, Metrics]:
    metrics = Metrics()
    services = Services(metrics=metrics, redactor=Redactor(), redis=client, config=config,
                        placement=placement or Solo())
    return TrafficService(services), metrics


class OwnsNothing(Solo):
    """A replica whose peers own every integration."""

    clustered = True

    def owns(self, integration: str) -> bool:
        return False


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"integration": "payments", **labels}) or 0.0


async def test_the_monitor_reads_back_exactly_what_the_callers_did(
    shared_redis: redis.asyncio.Redis, prefix: str, target: Target
) -> None:
    service, m = make_service(shared_redis, make_config(prefix))
    assert await service.read_once()  # the baseline: nothing yet
    target.route("/flaky", Reply(status=503), Reply(json={"id": 1}))
    target.route("/gone", Reply(status=404))
    target.route("/empty", Reply(body=b"", headers={"Content-Type": "application/json"}))
    kit = Integration("payments", redis=shared_redis, key_prefix=prefix, retry=RetryPolicy(attempts=2, backoff=0.01))
    failures = []
    async with kit, aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
        for path in ["/ok"] * 7 + ["/flaky", "/gone", "/gone", "/empty"]:
            try:
                async with http.get(target.url(path)) as resp:
                    await resp.read()
            except CallError as exc:
                failures.append(exc.error_class)
    assert failures == ["http_4xx", "http_4xx", "empty_body"]
    assert await service.read_once()
    assert sample(m, "integration_traffic_requests_total", error_class="ok") == 8
    assert sample(m, "integration_traffic_requests_total", error_class="http_4xx") == 2
    assert sample(m, "integration_traffic_requests_total", error_class="empty_body") == 1
    assert sample(m, "integration_traffic_responses_total", code="200") == 9
    assert sample(m, "integration_traffic_responses_total", code="404") == 2
    assert sample(m, "integration_traffic_retries_total") == 1
    assert sample(m, "integration_traffic_request_duration_seconds_count") == 11
    assert sample(m, "integration_traffic_request_duration_seconds_bucket", le="+Inf") == 11
    assert 0 < sample(m, "integration_traffic_request_duration_seconds_sum") < 11
    assert sample(m, "integration_traffic_last_write_timestamp_seconds") > 0
    assert service.status()["integrations"]["payments"] == {
        "calls": 11, "errors": 3, "last_write": sample(m, "integration_traffic_last_write_timestamp_seconds")}
    assert await service.read_once()  # read again: nothing new, nothing counted twice
    assert sample(m, "integration_traffic_requests_total", error_class="ok") == 8


async def test_late_writes_to_a_bucket_count_once_and_history_goes_only_to_the_rule(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    now = [1_700_000_000.0]
    clock = lambda: now[0]  # noqa: E731
    rec = TrafficRecorder(shared_redis, "payments", prefix=prefix, clock=clock)
    ok = CallOutcome(integration="payments", method="GET", error_class=None, status=200, attempts=1, duration=0.1)
    bad = CallOutcome(integration="payments", method="GET", error_class=ErrorClass.AUTH, status=401, attempts=1,
                      duration=0.1)
    for _ in range(30):
        rec.record(ok)
    await rec.flush()  # history from before the monitor watched
    now[0] += 600
    service, m = make_service(shared_redis, make_config(prefix))
    service._clock = clock
    added: list[tuple[str, float, int, dict[str, int]]] = []
    service.publish_traffic_to(lambda i, s, n, e: added.append((i, s, n, dict(e))))
    assert await service.read_once()
    assert added == [("payments", 1_700_000_000.0, 30, {})]  # the rule gets the history
    assert sample(m, "integration_traffic_requests_total", error_class="ok") == 0  # the counters do not
    rec.record(ok)
    rec.record(bad)
    await rec.flush()
    assert await service.read_once()
    rec.record(bad)  # a late write into the same bucket
    await rec.flush()
    assert await service.read_once()
    assert sample(m, "integration_traffic_requests_total", error_class="ok") == 1
    assert sample(m, "integration_traffic_requests_total", error_class="auth") == 2
    start = float(bucket_of(now[0]))
    assert added[1:] == [("payments", start, 2, {"auth": 1}), ("payments", start, 1, {"auth": 1})]
    await shared_redis.hset(bucket_key("payments", int(start), prefix), "c:nonsense", "x")
    assert await service.read_once()  # an unknown field is ignored (and logged once), the rest still read


async def test_only_the_owner_of_an_integration_exports_its_traffic_series(
    shared_redis: redis.asyncio.Redis, prefix: str
) -> None:
    rec = TrafficRecorder(shared_redis, "payments", prefix=prefix)
    service, m = make_service(shared_redis, make_config(prefix), OwnsNothing("r1"))
    assert await service.read_once()  # the baseline
    rec.record(CallOutcome(integration="payments", method="GET", error_class=None, status=200, attempts=1,
                           duration=0.1))
    await rec.flush()
    assert await service.read_once()
    assert service.status()["integrations"]["payments"]["calls"] == 1  # read…
    exposition = m.render_text().decode()
    assert "integration_traffic_requests_total{" not in exposition  # …but exported by its owner only
    assert "integration_traffic_last_write_timestamp_seconds{" not in exposition


def rule_input(stats: TrafficStats | None, now: float, **error_rate: Any) -> RuleInput:
    config = make_config("p:", **error_rate)
    return RuleInput(integration="payments", config=config.integrations["payments"], stats=Stats(), quotas={},
                     now=now, active=frozenset(), traffic=stats)


def test_the_error_rate_rule_judges_real_traffic_with_its_own_guard() -> None:
    now = 1_700_000_300.0
    traffic = TrafficStats(max_window=86400)
    for i in range(30):  # 5 minutes of 10-second buckets: 20 calls each, 3 of them timeouts
        traffic.add(now - 300 + i * 10, 20, {"timeout": 3})
    [cond] = evaluate(rule_input(traffic, now, threshold=0.1, window="5m"))
    assert (cond.active, cond.target, cond.check) == (True, TRAFFIC_TARGET, None)
    assert cond.key == "payments/error_rate/real traffic/critical"
    assert cond.summary == "payments real traffic: 15.0% of calls failed in the last 5m (87/580; timeout ×87)"
    # Too few calls for the traffic guard: not judged (the alert is left as it is).
    assert list(evaluate(rule_input(traffic, now, threshold=0.1, window="5m", traffic={"min_samples": 1000}))) == []
    assert list(evaluate(rule_input(traffic, now, threshold=0.1, window="5m", traffic={"enabled": False}))) == []
    assert list(evaluate(rule_input(None, now, threshold=0.1, window="5m"))) == []


async def test_the_engine_fires_a_real_traffic_alert_from_added_calls() -> None:
    config = make_config("p:", threshold=0.2, window="1m", traffic={"min_samples": 50})
    engine = AlertEngine(config, metrics=Metrics(), redactor=Redactor(), autorun=False)
    now = 1_700_000_000.0
    for i in range(6):
        engine.add_traffic("payments", now - 60 + i * 10, 20, {"http_5xx": 8})
    await engine.evaluate(now)
    firing = [k for k, s in engine.states.items() if s.active]
    assert firing == ["payments/error_rate/real traffic/critical"]


async def test_calls_the_limiter_let_through_while_redis_failed_are_counted_once_redis_is_back(
    own_redis: OwnRedis, target: Target
) -> None:
    """The shared limiter fails open when its Redis fails; the calls it let through unlimited are counted
    (traffic field ``b``) and written with the next flush that works: the monitor shows them."""
    await own_redis.start()
    client = redis.asyncio.Redis.from_url(own_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    service, m = make_service(client, make_config("im:traffic:"))
    assert await service.read_once()  # the baseline: nothing yet
    kit = Integration("payments", redis=client, rate_limit=RateLimit(rate=1000, per=1.0), flush_interval=0.05,
                      retry=RetryPolicy(attempts=1))
    try:
        async with kit, aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
            await own_redis.stop()
            for _ in range(5):  # the first finds Redis gone, the rest fall in the limiter's cooldown
                async with http.get(target.url("/ok")) as resp:
                    assert resp.status == 200
            assert kit.stats.limiter_bypassed == 5
            await own_redis.start()  # empty: what the kit held in memory is written with its next flush

            async def counted_ok() -> float | None:  # (the kit flushes every 50 ms)
                assert await service.read_once()
                return sample(m, "integration_traffic_requests_total", error_class="ok")

            await until(counted_ok, "the kit's 5 calls counted by the monitor after Redis came back",
                        holds=lambda ok: ok == 5)
        assert sample(m, "integration_traffic_limiter_bypassed_total") == 5
    finally:
        await client.aclose()
