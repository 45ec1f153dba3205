"""One call of an integration service to its vendor: what it expects of the answer (``Expect``), what
happened (``CallOutcome``, the event the recorder counts) and the typed error a failed call raises
(``CallError``), with the checks of a response against an expectation.

The checks are the probes' (``integration_kit.classify``): the same classes, the same details. A
required field is named by a dotted path into the JSON document, ``data.items.0.id`` (a number indexes
a list); the probes' richer JSONPath assertions stay with the probes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from integration_kit.classify import Failure, classify_status, empty_body, field_failure, parse_json
from integration_kit.errors import ErrorClass
from integration_kit.results import RequestSummary

EXCERPT_CHARS = 512  # of a failing response's body, redacted, kept in the error


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """What a call's answer must be. ``status``: the accepted statuses (default: any 2xx or 3xx, so a
    redirect not followed is an answer); ``json``: the body must be JSON (default: when the response says
    it is, ``Content-Type: application/json`` or ``+json``); ``required`` paths must be present,
    ``not_null`` ones present and not null; ``body_required``: an empty 2xx is ``empty_body`` (default:
    whenever the body is checked as JSON)."""

    status: Collection[int] | None = None
    json: bool | None = None
    required: tuple[str, ...] = ()
    not_null: tuple[str, ...] = ()
    body_required: bool | None = None

    def accepts(self, status: int) -> bool:
        return 200 <= status < 400 if self.status is None else status in self.status

    def body_checks(self, content_type: str) -> tuple[bool, bool]:
        """How an accepted answer with this ``Content-Type`` is checked: ``(as_json, body_required)`` —
        parsed as JSON (and its fields checked), an empty body a failure. Neither: the body is not read."""
        as_json = self.json if self.json is not None else bool(self.required or self.not_null) or is_json_type(
            content_type
        )
        return as_json, self.body_required if self.body_required is not None else as_json


DEFAULT_EXPECT = Expect()


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOutcome:
    """One finished call (all its attempts): what the recorder counts and the logs say."""

    integration: str
    method: str
    error_class: ErrorClass | None  # None: success
    status: int | None  # of the last response; None when none arrived
    attempts: int
    duration: float  # seconds of the last attempt (the vendor's answer time, as the probes measure it)
    throttle_wait: float = 0.0  # seconds spent waiting for the rate limiter, all attempts
    limiter_bypassed: bool = False  # let through without the shared limiter (its Redis failed)
    detail: str = ""  # redacted

    @property
    def ok(self) -> bool:
        return self.error_class is None


class CallError(Exception):
    """A call that failed: a class no retry can fix, or retries that ran out (attempts or deadline).

    ``error_class``, a one-line ``detail`` starting with the class, the ``request`` (method, URL and
    headers, secrets redacted), the last ``status`` and a redacted ``response_excerpt``. The message says
    it all in one line, safe to log."""

    def __init__(
        self,
        *,
        integration: str,
        error_class: ErrorClass,
        detail: str,
        request: RequestSummary,
        status: int | None = None,
        attempts: int = 1,
        response_excerpt: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.integration = integration
        self.error_class = error_class
        self.detail = detail
        self.request = request
        self.status = status
        self.attempts = attempts
        self.response_excerpt = response_excerpt
        self.retryable = retryable  # a class the policy retries: the call ran out of attempts or time
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(f"{integration}: {request.method} {request.url} failed: {detail} ({tries})")


def is_json_type(content_type: str) -> bool:
    if content_type.startswith("application/json"):  # the usual spelling, without the parsing below
        return True
    main = content_type.partition(";")[0].strip().lower()
    return main == "application/json" or main.endswith("+json")


def status_failure(
    expect: Expect, status: int, reason: str | None, headers: Mapping[str, str] | None = None
) -> Failure | None:
    return None if expect.accepts(status) else classify_status(status, reason, headers)


def body_failure(
    expect: Expect, *, method: str, status: int, as_json: bool, body_required: bool, body: bytes
) -> Failure | None:
    """The checks of an accepted response's body (``Expect.body_checks`` says which): empty, malformed
    JSON, required fields."""
    if not body or body.isspace():
        return empty_body(status, body, method=method) if body_required else None
    if not as_json:
        return None
    data, failure = parse_json(body)
    if failure is not None:
        return failure
    for path in expect.required:
        if (failure := field_failure(path, select(data, path))) is not None:
            return failure
    for path in expect.not_null:
        if (failure := field_failure(path, select(data, path), not_null=True)) is not None:
            return failure
    return None


_MISSING = object()


def select(document: Any, path: str) -> list[Any]:
    """The value at a dotted path (``[]`` when absent): ``data.items.0.id``."""
    node = document
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return []
        if node is _MISSING:
            return []
    return [node]


def excerpt(body: bytes | None, redact: Any) -> str | None:
    """A failing response's body as redacted text, cut to EXCERPT_CHARS (redacted before the cut, so a
    secret straddling the cut is still masked whole)."""
    if not body:
        return None
    text = body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return str(redact(text))[:EXCERPT_CHARS]


__all__ = [
    "DEFAULT_EXPECT", "CallError", "CallOutcome", "Expect", "body_failure", "excerpt", "is_json_type", "select",
    "status_failure",
]
