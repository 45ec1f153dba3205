"""The GraphQL probe against a real GraphQL-speaking server on loopback: errors in a 200, data null,
partial data, throttling with Shopify's cost bucket (retried after the refill), auth errors; body-reported
rate limits (Shopify cost, GitHub rateLimit) reaching the quota gauges and probe back-off like headers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from targets import Reply, Target

from checks.base import ProbeContext
from checks.graphql import GraphqlCheckConfig, probe
from integration_kit.errors import ErrorClass
from integration_kit.graphql import graphql_failure, throttle_wait
from integration_kit.ratelimit_body import parse_rate_limit_body, rate_limit_body_fields
from integration_kit.ratelimit_headers import observed_quota
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult
from monitor.component import Services
from monitor.metrics import Metrics
from monitor.quota.service import QuotaService
from monitor.settings import parse_config

E = ErrorClass
QUERY = "query Shop($first: Int!) { shop { name products(first: $first) { nodes { id } } } }"


def throttle(available: float, maximum: float = 1000.0, rate: float = 50.0, requested: float = 12) -> dict[str, Any]:
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": requested,
                     "throttleStatus": {"maximumAvailable": maximum, "currentlyAvailable": available,
                                        "restoreRate": rate}}}


SHOP = {"data": {"shop": {"name": "Demo", "products": {"nodes": [{"id": "gid://shopify/Product/1"}]}}},
        "extensions": throttle(988)}


def make_check(url: str, **fields: Any) -> GraphqlCheckConfig:
    return GraphqlCheckConfig.model_validate(
        {"name": "shop", "kind": "graphql", "url": url, "query": QUERY, "variables": {"first": 1}, **fields}
    )


async def run(check: GraphqlCheckConfig) -> CheckResult:
    return await probe(check, ProbeContext(integration="storefront", redactor=Redactor(check.secret_values())))


async def test_a_good_query_is_posted_and_passes_assertions(target: Target) -> None:
    target.route("/graphql", Reply(json=SHOP))
    check = make_check(target.url("/graphql"), operation_name="Shop", headers={"X-Shopify-Access-Token": "shpat_x1"},
                       expect={"json": {"$.data.shop.name": {"equals": "Demo"}}})
    result = await run(check)
    assert result.ok, result
    [hit] = target.hits("/graphql")
    assert hit.method == "POST" and hit.headers["Content-Type"] == "application/json"
    assert hit.headers["Accept"].startswith("application/graphql-response+json")
    assert json.loads(hit.body) == {"query": QUERY, "variables": {"first": 1}, "operationName": "Shop"}
    assert result.kind == "graphql"


@pytest.mark.parametrize(
    ("body", "error_class", "detail"),
    [
        ({"errors": [{"message": "Field 'legacyId' doesn't exist on type 'Shop'", "locations": [{"line": 1}],
                      "extensions": {"code": "undefinedField"}}], "data": None},
         E.GRAPHQL_ERROR, "graphql_error: Field 'legacyId' doesn't exist on type 'Shop' (undefinedField)"),
        ({"errors": [{"message": "boom", "path": ["shop", "products", 0]}, {"message": "two"}]},
         E.GRAPHQL_ERROR, "graphql_error: boom (at shop.products.0) (+1 more)"),
        ({"data": {"shop": None, "other": 1}, "errors": [{"message": "Access denied for shop field",
                                                           "path": ["shop"]}]},
         E.PARTIAL_DATA, "partial_data: Access denied for shop field (at shop)"),
        ({"data": None}, E.NULL_FIELD, "null_field: $.data"),
        ({"extensions": {}}, E.MISSING_FIELD, "missing_field: $.data"),
        ({"errors": [{"message": "Invalid API key or access token", "extensions": {"code": "UNAUTHENTICATED"}}]},
         E.AUTH, "auth: graphql: Invalid API key or access token (UNAUTHENTICATED)"),
        ({"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded for installation."}]},
         E.RATE_LIMITED, "rate_limited: graphql: API rate limit exceeded for installation. (RATE_LIMITED)"),
        ([1, 2], E.MALFORMED_JSON, "malformed_json: not a GraphQL response (expected a JSON object)"),
    ],
)
async def test_graphql_failure_rules(target: Target, body: Any, error_class: ErrorClass, detail: str) -> None:
    target.route("/graphql", Reply(json=body))
    result = await run(make_check(target.url("/graphql")))
    assert (result.error_class, result.detail) == (error_class, detail)
    assert result.status_code == 200
    assert result.response_excerpt is not None and result.request is not None


async def test_partial_data_may_be_accepted_and_assertions_still_apply(target: Target) -> None:
    partial = {"data": {"shop": {"name": "Demo"}, "orders": None}, "errors": [{"message": "orders: no scope"}]}
    target.route("/graphql", Reply(json=partial))
    ok = await run(make_check(target.url("/graphql"), expect={"allow_partial": True,
                                                             "json": {"$.data.shop.name": {"type": "string"}}}))
    assert ok.ok, ok
    bad = await run(make_check(target.url("/graphql"), expect={"allow_partial": True,
                                                              "json": {"$.data.orders": {"not_null": True}}}))
    assert (bad.error_class, bad.detail) == (E.NULL_FIELD, "null_field: $.data.orders")


async def test_http_errors_and_empty_bodies_come_first(target: Target) -> None:
    target.route("/down", Reply(status=502, body="bad gateway"))
    target.route("/empty", Reply(status=200, body=b""))
    target.route("/html", Reply(status=200, body="<html>login</html>"))
    assert (await run(make_check(target.url("/down")))).error_class is E.HTTP_5XX
    assert (await run(make_check(target.url("/empty")))).error_class is E.EMPTY_BODY
    assert (await run(make_check(target.url("/html")))).error_class is E.MALFORMED_JSON


async def test_throttled_query_waits_for_the_bucket_then_succeeds(target: Target) -> None:
    throttled = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                 "extensions": throttle(available=2, rate=50, requested=12)}  # (12 - 2) / 50 = 0.2 s
    target.route("/graphql", Reply(json=throttled), Reply(json=SHOP))
    check = make_check(target.url("/graphql"), retry={"attempts": 2, "backoff": "1ms", "max_backoff": "1ms"})
    result = await run(check)
    assert result.ok, result
    assert result.attempt_classes == (E.RATE_LIMITED, None)
    first, second = target.hits("/graphql")
    assert second.at - first.at >= 0.19  # the refill time, not the 1 ms backoff


async def test_body_reported_quota_is_kept_raw_and_parsed_like_headers(target: Target) -> None:
    github = {"data": {"viewer": {"login": "probe"},
                       "rateLimit": {"limit": 5000, "remaining": 4100, "used": 900, "cost": 1,
                                     "resetAt": "2030-01-01T00:00:00Z"}}}
    target.route("/shopify", Reply(json=SHOP))
    target.route("/github", Reply(json=github))
    shopify = await run(make_check(target.url("/shopify")))
    assert shopify.rate_limit_body == (
        ("extensions.cost.throttleStatus", '{"maximumAvailable":1000.0,"currentlyAvailable":988,"restoreRate":50.0}'),
    )
    [cost] = observed_quota(shopify)
    assert (cost.policy, cost.used, cost.limit, cost.reset_seconds) == ("cost", 12.0, 1000.0, 12 / 50)
    gh = await run(make_check(target.url("/github")))
    [graphql] = observed_quota(gh)
    assert (graphql.policy, graphql.used, graphql.limit) == ("graphql", 900.0, 5000.0)
    assert graphql.reset_seconds == pytest.approx(1893456000 - graphql.observed_at, abs=1)


async def test_body_quota_reaches_the_quota_gauges_and_probe_backoff(target: Target) -> None:
    config = parse_config(f"""
integrations:
  storefront:
    probe_backoff_above: 0.9
    checks: [{{name: shop, kind: graphql, url: "{target.url('/graphql')}", query: "{{ shop {{ name }} }}"}}]
    quotas: [{{name: admin-api, source: headers, check: shop}}]
""", env={})
    backoffs: list[tuple[str, float, str]] = []
    metrics = Metrics()
    service = QuotaService(Services(metrics=metrics, redactor=Redactor(), redis=None, config=config),
                           on_backoff=lambda i, f, r: backoffs.append((i, f, r)))
    target.route("/graphql", Reply(json={"data": {"shop": {"name": "Demo"}}, "extensions": throttle(available=50)}))
    [check] = config.integrations["storefront"].checks
    result = await probe(check, ProbeContext(integration="storefront", redactor=Redactor()))
    service.on_result(result)
    labels = {"integration": "storefront", "quota": "admin-api", "source": "headers"}  # the lone limit: the plain name
    assert metrics.registry.get_sample_value("integration_quota_usage_ratio", labels) == 0.95
    assert metrics.registry.get_sample_value("integration_quota_reset_seconds", labels) == 950 / 50
    assert backoffs and backoffs[-1][0] == "storefront" and backoffs[-1][1] > 1


# --- the kit's rules, without a network -------------------------------------------------------------------


def test_throttle_wait_needs_what_shopify_says() -> None:
    assert throttle_wait({"extensions": throttle(available=100, requested=50)}) == 0.0
    assert throttle_wait({"extensions": throttle(available=0, rate=0)}) is None
    assert throttle_wait({"errors": []}) is None
    assert throttle_wait([]) is None


def test_errors_that_are_not_standard_are_still_errors() -> None:
    assert graphql_failure({"errors": "Internal error", "data": None}) == (
        E.GRAPHQL_ERROR, "graphql_error: Internal error")
    assert graphql_failure({"errors": [], "data": {"a": 1}}) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["data", "errors", "extensions", "message", "path", "code", "cost", "throttleStatus",
                         "rateLimit", "limit", "remaining", "resetAt", "maximumAvailable", "currentlyAvailable",
                         "restoreRate", "type"]), inner, max_size=5),
    max_leaves=20,
)


@given(json_values)
def test_any_response_gets_one_verdict_and_quota_parsing_never_raises(document: Any) -> None:
    failure = graphql_failure(document)
    if failure is not None:
        error_class, detail = failure
        assert detail.startswith(f"{error_class}: ") and "\n" not in detail
    fields = rate_limit_body_fields(document)
    for observation in parse_rate_limit_body(fields, now=time.time()):
        assert observation.policy in {"cost", "graphql"}
    throttle_wait(document)
