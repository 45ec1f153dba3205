"""The error classes: every failed call, probe or integration-service request, is exactly one of them.

The classes are bounded (they are a metric label) and documented with an example each
(README, "Checks"). Which classes a retry can fix is decided here, once, for probes and services alike.
"""

from __future__ import annotations

import enum


class ErrorClass(enum.StrEnum):
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    HTTP_4XX = "http_4xx"
    UNEXPECTED_STATUS = "unexpected_status"
    EMPTY_BODY = "empty_body"
    MALFORMED_JSON = "malformed_json"
    MISSING_FIELD = "missing_field"
    NULL_FIELD = "null_field"
    ASSERTION_FAILED = "assertion_failed"
    BODY_TOO_LARGE = "body_too_large"
    TOO_SLOW = "too_slow"
    GRAPHQL_ERROR = "graphql_error"  # a GraphQL response with errors and no data (integration_kit.graphql)
    PARTIAL_DATA = "partial_data"  # a GraphQL response with errors next to its data
    INTERNAL = "internal"  # the probe itself raised (a bug, or a library it runs on): not the target's doing


RETRYABLE_BY_DEFAULT: frozenset[ErrorClass] = frozenset(
    {
        ErrorClass.DNS,
        ErrorClass.CONNECT,
        ErrorClass.TIMEOUT,
        ErrorClass.DISCONNECTED,
        ErrorClass.HTTP_5XX,
        ErrorClass.RATE_LIMITED,
    }
)
