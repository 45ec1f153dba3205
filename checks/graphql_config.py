"""Config of a GraphQL check (``kind: graphql``): a query (with variables and an operation name) POSTed
as JSON to the API's endpoint, and what the response must look like. The connection, headers, query
parameters and ``auth`` are those of every HTTP request (``checks.http_config.HttpRequestFields``).

``graphql`` is a kind of its own rather than a mode of ``http``: what is sent is always the same shape
(POST, JSON, the GraphQL-over-HTTP ``Accept``), and what counts as failure differs (a 200 with
``errors`` fails; ``integration_kit.graphql``), so its keys say GraphQL and nothing else.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from checks.base import CheckConfigBase
from checks.http_config import Expectation, HttpRequestFields, RequestPlan
from integration_kit.graphql import request_body

ACCEPT = "application/graphql-response+json, application/json;q=0.9"


class GraphqlExpectation(Expectation):
    allow_partial: bool = Field(
        default=False, description="errors next to data pass (the JSON assertions still apply to the data)"
    )


class GraphqlCallFields(HttpRequestFields):
    """One GraphQL request: the query, its variables, and the expected response."""

    method: ClassVar[str] = "POST"
    query: str = Field(min_length=1, description="the GraphQL document")
    variables: dict[str, Any] = Field(default_factory=dict)
    operation_name: str | None = Field(default=None, description="which operation of the document to run")
    expect: GraphqlExpectation = Field(default_factory=GraphqlExpectation)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        return value

    @cached_property
    def request_plan(self) -> RequestPlan:
        plan = self.plan("POST", request_body(self.query, self.variables, self.operation_name), "application/json")
        if any(k.lower() == "accept" for k in plan.headers):
            return plan
        return RequestPlan(method=plan.method, url=plan.url, headers={**plan.headers, "Accept": ACCEPT},
                           data=plan.data, ssl=plan.ssl, timeout=plan.timeout)


class GraphqlCheckConfig(GraphqlCallFields, CheckConfigBase):
    kind: Literal["graphql"]


__all__ = ["GraphqlCallFields", "GraphqlCheckConfig", "GraphqlExpectation"]
