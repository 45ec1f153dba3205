"""The ``quota`` label of a header quota, as the README's "Rate-limit quotas" says it: for each response,
the limits it announces (Retry-After apart): one is labelled with the quota's name, several get
``<name>/<policy>`` each; ``<name>/retry-after`` while a Retry-After is in force. Dashboards and alert
rules match ``quota="api-headers"`` for GitHub's lone ``core`` bucket. Responses come from a real
aiohttp vendor on loopback through the http probe; the property at the end drives the service directly.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from targets import Reply, Target

from checks.base import ProbeContext
from checks.http import probe
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.component import Services
from monitor.metrics import Metrics
from monitor.quota.service import MAX_POLICIES, QuotaService
from monitor.settings import Config, parse_config

GITHUB_CORE = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4000", "x-ratelimit-used": "1000",
               "x-ratelimit-reset": "1900000000", "x-ratelimit-resource": "core"}
BURST = {"RateLimit-Policy": '"burst";q=100;w=60', "RateLimit": '"burst";r=50;t=30'}
BURST_AND_DAILY = {"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400',
                   "RateLimit": '"burst";r=50;t=30, "daily";r=900;t=3600'}
DAILY = {"RateLimit-Policy": '"daily";q=1000;w=86400', "RateLimit": '"daily";r=800;t=3600'}
SALESFORCE_ONE = {"Sforce-Limit-Info": "api-usage=18/5000"}
SALESFORCE_TWO = {"Sforce-Limit-Info": "api-usage=18/5000; api-bursts=75/750"}


def _config(target: Target) -> Config:
    return parse_config(f"""
integrations:
  acme:
    checks: [{{name: api, kind: http, url: "{target.url('/limits')}", interval: 30s}}]
    quotas: [{{name: api-headers, source: headers, check: api}}]
""", env={})


class Vendor:
    """The quota service fed by the http probe of a loopback vendor answering with ``headers``."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.config = _config(target)
        self.metrics = Metrics()
        self.service = QuotaService(Services(metrics=self.metrics, redactor=Redactor(), redis=None, config=self.config))

    async def answer(self, headers: dict[str, str], status: int = 200) -> dict[str, float]:
        """Probe once; the usage ratio of each ``quota`` label in /metrics afterwards."""
        self.target.route("/limits", Reply(status=status, json={"ok": True}, headers=headers))
        [check] = self.config.integrations["acme"].checks
        result = await probe(check, ProbeContext(integration="acme", redactor=Redactor()))
        self.service.on_result(result)
        return series(self.metrics)


def series(metrics: Metrics) -> dict[str, Any]:
    """Every ``quota`` label of acme's quota gauges, with its usage ratio (None where it has none)."""
    labels: dict[str, Any] = {}
    for family in metrics.registry.collect():
        if family.name.startswith("integration_quota"):
            for sample in family.samples:
                if sample.labels.get("integration") == "acme":
                    labels.setdefault(sample.labels["quota"], None)
    for label in labels:
        labels[label] = metrics.registry.get_sample_value(
            "integration_quota_usage_ratio", {"integration": "acme", "quota": label, "source": "headers"})
    return labels


async def test_githubs_single_resource_is_the_plain_name_and_status_keeps_the_bucket(target: Target) -> None:
    vendor = Vendor(target)
    assert await vendor.answer(GITHUB_CORE) == {"api-headers": 0.2}
    [state] = vendor.service.status()["quotas"]
    assert (state["quota"], state["name"], state["policy"]) == ("api-headers", "api-headers", "core")


async def test_ietf_one_policy_is_the_plain_name_two_are_one_series_each(target: Target) -> None:
    vendor = Vendor(target)
    assert await vendor.answer(BURST) == {"api-headers": 0.5}
    assert await vendor.answer(BURST_AND_DAILY) == {"api-headers/burst": 0.5, "api-headers/daily": 0.1}


async def test_salesforce_one_limit_vs_two(target: Target) -> None:
    vendor = Vendor(target)
    assert await vendor.answer(SALESFORCE_ONE) == {"api-headers": 18 / 5000}
    assert await vendor.answer(SALESFORCE_TWO) == {"api-headers/api-usage": 18 / 5000, "api-headers/api-bursts": 0.1}
    assert await vendor.answer(SALESFORCE_ONE) == {"api-headers": 18 / 5000}


async def test_retry_after_is_not_a_policy_the_api_announces(target: Target) -> None:
    vendor = Vendor(target)
    labels = await vendor.answer({**GITHUB_CORE, "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
                                  "Retry-After": "30"}, status=429)
    assert labels == {"api-headers": 1.0, "api-headers/retry-after": None}
    assert await vendor.answer(GITHUB_CORE) == {"api-headers": 0.2}  # Retry-After lasts as long as it is sent


async def test_switching_between_one_and_two_policies_leaves_no_stale_series(target: Target) -> None:
    vendor = Vendor(target)
    assert await vendor.answer(BURST) == {"api-headers": 0.5}
    assert await vendor.answer(BURST_AND_DAILY) == {"api-headers/burst": 0.5, "api-headers/daily": 0.1}
    assert await vendor.answer({}) == {"api-headers/burst": 0.5, "api-headers/daily": 0.1}  # no quota header
    assert await vendor.answer(DAILY) == {"api-headers": 0.2}
    assert [(s.quota, s.policy) for s in vendor.service.snapshot()] == [("api-headers", "daily")]


# ---- the rule as a property, over any sequence of responses ---------------------------------------------

POLICIES = st.lists(st.sampled_from(["burst", "daily", "core", "default", "hourly", "a", "b", "c", "d", "e",
                                     "f", "g", "h", "i"]), unique=True, max_size=11)


def _result(policies: list[str], retry_after: bool) -> CheckResult:
    fields = [("retry-after", "30")] if retry_after else []
    if policies:
        fields += [("ratelimit-policy", ", ".join(f'"{p}";q=100' for p in policies)),
                   ("ratelimit", ", ".join(f'"{p}";r=40' for p in policies))]
    return CheckResult(integration="acme", check="api", kind="http", ok=True, error_class=None, detail="",
                       started_at=1_800_000_000.0, duration=0.01, total_duration=0.01, status_code=200,
                       rate_limit_headers=tuple(fields))


@given(st.lists(st.tuples(POLICIES, st.booleans()), min_size=1, max_size=6))
def test_labels_follow_the_last_response_that_announced_limits(responses: list[tuple[list[str], bool]]) -> None:
    config = parse_config("""
integrations:
  acme:
    checks: [{name: api, kind: http, url: "http://127.0.0.1:9/limits"}]
    quotas: [{name: q, source: headers, check: api}]
""", env={})
    metrics = Metrics()
    service = QuotaService(Services(metrics=metrics, redactor=Redactor(), redis=None, config=config))
    announced: set[str] = set()
    for policies, retry_after in responses:
        service.on_result(_result(policies, retry_after))
        if len(policies) == 1:
            announced = {"q"}
        elif policies:
            announced = {f"q/{p}" for p in policies[:MAX_POLICIES]}
        labels = set(series(metrics))
        assert labels - {"q/retry-after"} == announced
        assert ("q/retry-after" in labels) == retry_after
        assert not ("q" in labels and any(label.startswith("q/") and label != "q/retry-after" for label in labels))
        assert {s.quota for s in service.snapshot()} == labels


def test_another_lone_limit_under_the_plain_name_starts_its_own_burn_projection() -> None:
    # GitHub answers for the bucket the request hit: core, then search, each the lone limit, so both are
    # "q". Search's 20 of 30 after core's 10 of 5000 is no rise of 1 a second toward search's 30.
    config = parse_config("""
integrations:
  acme:
    checks: [{name: api, kind: http, url: "http://127.0.0.1:9/limits"}]
    quotas: [{name: q, source: headers, check: api}]
""", env={})
    service = QuotaService(Services(metrics=Metrics(), redactor=Redactor(), redis=None, config=config))
    for at, resource, used, limit in ((1_800_000_000.0, "core", 10, 5000), (1_800_000_010.0, "search", 20, 30)):
        fields = (("x-ratelimit-limit", str(limit)), ("x-ratelimit-used", str(used)),
                  ("x-ratelimit-resource", resource))
        service.on_result(CheckResult(integration="acme", check="api", kind="http", ok=True, error_class=None,
                                      detail="", started_at=at, duration=0.01, total_duration=0.01,
                                      status_code=200, rate_limit_headers=fields))
    [state] = service.snapshot()
    assert (state.quota, state.policy, state.used, state.limit) == ("q", "search", 20, 30)
    assert state.exhaustion_seconds is None  # one reading of search so far: no rate yet
