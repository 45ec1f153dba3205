"""What a GraphQL response says went wrong: GraphQL APIs answer 200 with an ``errors`` array, so the HTTP
status alone says nothing. ``graphql_failure(document)`` applies the rules, in order:

1. not a JSON object → ``malformed_json``;
2. an error whose code says throttled (``extensions.code`` ``THROTTLED`` / ``RATE_LIMITED``, or GitHub's
   ``type: RATE_LIMITED``) → ``rate_limited`` (retryable; ``throttle_wait`` says how long Shopify's cost
   bucket needs to refill for the query);
3. an error whose code says the caller is not allowed (``UNAUTHENTICATED``, ``FORBIDDEN``,
   ``ACCESS_DENIED``, ``UNAUTHORIZED``) → ``auth``;
4. errors and no data (``data`` null or absent) → ``graphql_error``, with the first error's message,
   path and code;
5. errors next to data → ``partial_data`` (unless the caller accepts partial data);
6. no errors: ``data`` absent → ``missing_field: $.data``, ``data: null`` → ``null_field: $.data``.

A detail quotes the API's error message: redact it before it leaves the process, like every detail.
Standard library only; the probes' ``graphql`` kind and integration services use the same rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from integration_kit.classify import Failure
from integration_kit.errors import ErrorClass

THROTTLED = frozenset({"THROTTLED", "RATE_LIMITED", "RATE_LIMIT_EXCEEDED", "TOO_MANY_REQUESTS"})
NOT_ALLOWED = frozenset({"UNAUTHENTICATED", "FORBIDDEN", "ACCESS_DENIED", "UNAUTHORIZED"})
_MESSAGE_CHARS = 120


def graphql_failure(document: Any, *, allow_partial: bool = False) -> Failure | None:
    """The failure a parsed GraphQL response reports (rules in the module docstring); None when it
    carries data and no errors (or partial data that ``allow_partial`` accepts)."""
    if not isinstance(document, Mapping):
        return ErrorClass.MALFORMED_JSON, "malformed_json: not a GraphQL response (expected a JSON object)"
    errors = document.get("errors")
    listed = [e for e in errors if isinstance(e, Mapping)] if isinstance(errors, list) else []
    if errors not in (None, []) and not listed:
        listed = [{"message": str(errors)}]  # a vendor's non-standard errors value: still errors
    has_data = document.get("data") is not None
    if listed:
        codes = [_code(e).upper() for e in listed]
        if any(c in THROTTLED for c in codes):
            first = listed[next(i for i, c in enumerate(codes) if c in THROTTLED)]
            return ErrorClass.RATE_LIMITED, f"rate_limited: graphql: {_describe(first, len(listed))}"
        if any(c in NOT_ALLOWED for c in codes):
            first = listed[next(i for i, c in enumerate(codes) if c in NOT_ALLOWED)]
            return ErrorClass.AUTH, f"auth: graphql: {_describe(first, len(listed))}"
        if not has_data:
            return ErrorClass.GRAPHQL_ERROR, f"graphql_error: {_describe(listed[0], len(listed))}"
        if not allow_partial:
            return ErrorClass.PARTIAL_DATA, f"partial_data: {_describe(listed[0], len(listed))}"
        return None
    if "data" not in document:
        return ErrorClass.MISSING_FIELD, "missing_field: $.data"
    if not has_data:
        return ErrorClass.NULL_FIELD, "null_field: $.data"
    return None


def throttle_wait(document: Any) -> float | None:
    """Seconds until a throttled query fits again: Shopify's ``extensions.cost`` says what the query
    costs (``requestedQueryCost``) and how fast the bucket refills (``throttleStatus.restoreRate`` per
    second from ``currentlyAvailable``). None when the response does not say."""
    extensions = document.get("extensions") if isinstance(document, Mapping) else None
    cost = extensions.get("cost") if isinstance(extensions, Mapping) else None
    if not isinstance(cost, Mapping) or not isinstance(status := cost.get("throttleStatus"), Mapping):
        return None
    requested, available, rate = (_number(v) for v in (
        cost.get("requestedQueryCost"), status.get("currentlyAvailable"), status.get("restoreRate")))
    if requested is None or available is None or not rate or rate <= 0:
        return None
    return max(0.0, (requested - available) / rate)


def _code(error: Mapping[str, Any]) -> str:
    """The error's code as the API wrote it (``extensions.code``, or GitHub's ``type``)."""
    extensions = error.get("extensions")
    code = extensions.get("code") if isinstance(extensions, Mapping) else None
    if not isinstance(code, str):
        code = error.get("type")  # GitHub: {"type": "RATE_LIMITED", "message": …}
    return code if isinstance(code, str) else ""


def _describe(error: Mapping[str, Any], count: int) -> str:
    message = error.get("message")
    text = " ".join(str(message).split()) if message is not None else "error without a message"
    if len(text) > _MESSAGE_CHARS:
        text = text[: _MESSAGE_CHARS - 1] + "…"
    where = []
    path = error.get("path")
    if isinstance(path, Sequence) and not isinstance(path, str) and path:
        where.append("at " + ".".join(str(p) for p in path))
    if code := _code(error):
        where.append(code)
    more = f" (+{count - 1} more)" if count > 1 else ""
    return text + (f" ({', '.join(where)})" if where else "") + more


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def request_body(query: str, variables: Mapping[str, Any] | None = None, operation_name: str | None = None) -> bytes:
    """The JSON body of a GraphQL POST (GraphQL over HTTP)."""
    payload: dict[str, Any] = {"query": query}
    if variables:
        payload["variables"] = dict(variables)
    if operation_name:
        payload["operationName"] = operation_name
    return json.dumps(payload, separators=(",", ":")).encode()


__all__ = ["NOT_ALLOWED", "THROTTLED", "graphql_failure", "request_body", "throttle_wait"]
