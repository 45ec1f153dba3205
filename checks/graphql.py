"""GraphQL probe (``kind: graphql``): one query POSTed to a GraphQL API, with retries, and the GraphQL
failure rules on top of HTTP's.

A response is judged in this order: the HTTP status (as for ``http``), an empty body, JSON, then the
GraphQL rules of ``integration_kit.graphql`` (errors in a 200: ``rate_limited`` when throttled, ``auth``
when not allowed, ``graphql_error`` without data, ``partial_data`` with some; ``data: null`` is
``null_field``), then ``expect.json`` on the whole response (``$.data.shop.name``). A throttled query is
retried (when ``retry`` allows) after the wait Shopify's cost bucket needs to refill.

Rate limits the response reports in its body (Shopify's ``extensions.cost.throttleStatus``, GitHub's
``data.rateLimit``) go into the result raw (``rate_limit_body``) for the quota side, like headers.
"""

from __future__ import annotations

from typing import Any

from checks.base import ProbeContext
from checks.call import single_call_probe
from checks.graphql_config import GraphqlCallFields, GraphqlCheckConfig
from checks.http_attempt import Attempt, HttpRun
from checks.json_assertions import evaluate_assertions
from integration_kit.classify import Failure, empty_body, parse_json
from integration_kit.errors import ErrorClass
from integration_kit.graphql import graphql_failure, throttle_wait
from integration_kit.ratelimit_body import rate_limit_body_fields
from integration_kit.results import CheckResult

__all__ = ["GraphqlCheckConfig", "GraphqlInspector", "probe"]


class GraphqlInspector:
    """Reads each response body of one call: the verdict, the throttle wait, the rate-limit fields."""

    __slots__ = ("call", "document", "quota_fields", "wait")

    def __init__(self, call: GraphqlCallFields) -> None:
        self.call = call
        self.document: Any = None  # the latest response, parsed (None: none or not JSON)
        self.quota_fields: tuple[tuple[str, str], ...] = ()
        self.wait: float | None = None

    def inspect(self, status: int, body: bytes) -> Failure | None:
        self.document, self.wait = None, None
        failure = empty_body(status, body, method="POST")
        if failure is not None:
            return failure
        document, malformed = parse_json(body)
        if malformed is not None:
            return malformed
        self.document = document
        self.quota_fields = rate_limit_body_fields(document)
        expect = self.call.expect
        failure = graphql_failure(document, allow_partial=expect.allow_partial)
        if failure is not None:
            if failure[0] is ErrorClass.RATE_LIMITED:
                self.wait = throttle_wait(document)
            return failure
        return evaluate_assertions(document, expect.compiled_json)

    def amend(self, outcome: Attempt) -> None:
        """A throttled attempt waits for the bucket, like a 429's Retry-After."""
        if outcome.error_class is ErrorClass.RATE_LIMITED and self.wait is not None and outcome.retry_after is None:
            outcome.retry_after = self.wait

    def body_quota(self, _run: HttpRun) -> tuple[tuple[str, str], ...]:
        return self.quota_fields


async def probe(check: GraphqlCheckConfig, ctx: ProbeContext) -> CheckResult:
    """One scheduled run of a GraphQL check: attempts with retries inside ``check.timeout``."""
    inspector = GraphqlInspector(check)
    return await single_call_probe(
        check, ctx, kind=check.kind, name=check.name, plan=check.request_plan, policy=check.retry.policy,
        budget=check.timeout, auth=check.auth, inspect_body=inspector.inspect, after_attempt=inspector.amend,
        body_quota=inspector.body_quota,
    )
