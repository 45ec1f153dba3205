"""The outcome of an HTTP call → exactly one error class and a short detail.

The monitor's probes classify every attempt with these functions, and any aiohttp caller (an integration
service calling a vendor) can do the same, so both report the same classes (README, "Checks": the table
of error classes). Each function answers a ``Failure`` — ``(error class, detail)`` — or None when it
found nothing wrong. A detail is one short line that starts with the class: ``http_5xx: 503 Service
Unavailable``, ``timeout: no response headers within 2.0s``, ``missing_field: $.data.id``.

In the order a call meets them:

* ``classify_exception``: the call raised before the response headers were in (DNS, connect, TLS,
  timeouts, redirects, an unparseable response);
* ``classify_status``: a status the caller does not accept;
* ``body_too_large`` / ``body_read_failure``: reading the body went wrong;
* ``empty_body``, ``parse_json``, ``field_failure``: what the body says (an empty 2xx, malformed JSON,
  a required field missing or null; selecting the field is the caller's part: the probes use RFC 9535
  JSON paths, a service may just index a dict);
* ``too_slow``: a success that took longer than allowed.

A detail may quote the response (a JSON value, an exception's text): redact it before it leaves the
process (the probes pass every detail through ``integration_kit.redact.Redactor.text``).
"""

from __future__ import annotations

import codecs
import json
import os
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import aiohttp

from integration_kit.errors import ErrorClass
from integration_kit.header_values import used_up_limit

Failure = tuple[ErrorClass, str]
Stage = Literal["connect", "headers", "body"]  # what a call was waiting for

_REASON_CHARS = 120


def classify_exception(
    exc: BaseException,
    *,
    stage: Stage = "headers",
    budget: float | None = None,
    connect_timeout: float | None = None,
    max_redirects: int | None = None,
) -> Failure:
    """Class and detail of a call that raised before its response headers were in.

    ``stage``: what the call was waiting for when a ``TimeoutError`` (the caller's deadline) hit;
    ``budget``: seconds the call had until that deadline; ``connect_timeout``: aiohttp's
    ``ClientTimeout.connect`` of the call; ``max_redirects``: the redirects the caller allows. They only
    make the detail more precise.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ErrorClass.TIMEOUT, f"timeout: connect did not complete{within_budget(connect_timeout)}"
    if isinstance(exc, TimeoutError):  # the caller's deadline
        if stage == "connect":
            return ErrorClass.TIMEOUT, f"timeout: connect did not complete{within_budget(budget, ' (deadline)')}"
        return ErrorClass.TIMEOUT, f"timeout: no response headers{within_budget(budget)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ErrorClass.DNS, f"dns: {exc.host} did not resolve ({describe(exc)})"
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch | ssl.SSLError):
        return ErrorClass.TLS, f"tls: {describe(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ErrorClass.CONNECT, f"connect: {exc.host}:{exc.port}: {describe(exc)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ErrorClass.CONNECT, "connect: server closed the connection before responding"
    if isinstance(exc, aiohttp.TooManyRedirects):
        limit = "too many" if max_redirects is None else f"more than {max_redirects}"
        return ErrorClass.UNEXPECTED_STATUS, f"unexpected_status: {limit} redirects"
    if isinstance(exc, aiohttp.RedirectClientError | aiohttp.NonHttpUrlClientError):
        return ErrorClass.UNEXPECTED_STATUS, "unexpected_status: redirect to an invalid or non-HTTP URL"
    if isinstance(exc, aiohttp.ClientResponseError):  # the response could not be parsed as HTTP
        return ErrorClass.UNEXPECTED_STATUS, f"unexpected_status: invalid HTTP response ({_short(exc.message)})"
    return ErrorClass.CONNECT, f"connect: {describe(exc)} before the response"


def status_class(status: int) -> ErrorClass:
    """Class of a status the caller does not accept."""
    if status in (401, 403):
        return ErrorClass.AUTH
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if 400 <= status < 500:
        return ErrorClass.HTTP_4XX
    if 500 <= status < 600:
        return ErrorClass.HTTP_5XX
    return ErrorClass.UNEXPECTED_STATUS


def classify_status(status: int, reason: str | None = None, headers: Mapping[str, str] | None = None) -> Failure:
    """``http_5xx: 503 Service Unavailable`` for a status the caller does not accept.

    With the response's ``headers`` (case-insensitive), a 403 that is a rate limit is ``rate_limited``,
    not ``auth``: GitHub refuses a used-up primary limit with 403 and ``x-ratelimit-remaining: 0``, and
    its secondary limits with 403 and ``Retry-After``. Called ``auth``, it would page at once as refused
    credentials, and it would not be retried once the limit has reset.
    """
    error_class = status_class(status)
    if status == 403 and headers is not None and (sign := _rate_limit_sign(headers)) is not None:
        return ErrorClass.RATE_LIMITED, f"rate_limited: {status} {reason or 'Forbidden'} ({sign})"
    return error_class, f"{error_class}: {status} {reason or ''}".rstrip()


def _rate_limit_sign(headers: Mapping[str, str]) -> str | None:
    """What in ``headers`` says a refusal is a rate limit, as the detail shows it; None when nothing."""
    if (retry_after := headers.get("Retry-After")) is not None:
        return f"retry-after: {retry_after.strip()[:40]}"
    used_up = used_up_limit(headers)
    return None if used_up is None else f"{used_up[0]}: 0"


def body_too_large(cap: int, *, declared: int | None = None) -> Failure:
    """A body over ``cap`` bytes: announced by Content-Length (``declared``) or found while reading."""
    if declared is not None:
        return ErrorClass.BODY_TOO_LARGE, f"body_too_large: Content-Length {declared} over the {cap}-byte cap"
    return ErrorClass.BODY_TOO_LARGE, f"body_too_large: over the {cap}-byte cap, stopped reading"


def body_read_failure(exc: BaseException, *, size: int, budget: float | None = None) -> Failure:
    """Reading the body raised after ``size`` bytes: the caller's deadline (``TimeoutError``; ``budget``
    seconds it had) or the connection went away."""
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT, f"timeout: body not complete{within_budget(budget)} ({size} bytes read)"
    return ErrorClass.DISCONNECTED, f"disconnected: connection closed after {size} body bytes ({describe(exc)})"


def empty_body(status: int, body: bytes, *, method: str = "GET") -> Failure | None:
    """A 2xx that should carry a body but is empty (or whitespace). 204, 205 and HEAD carry none."""
    if 200 <= status < 300 and status not in (204, 205) and method != "HEAD" and (not body or body.isspace()):
        return ErrorClass.EMPTY_BODY, f"empty_body: {status} with an empty body"
    return None


def parse_json(body: bytes) -> tuple[Any, Failure | None]:
    """``(data, None)`` for a UTF-8 JSON body (a BOM is tolerated), ``(None, malformed_json)`` otherwise."""
    try:
        # The utf-8-sig codec is Python code, the plain one C: it runs only when there is a BOM to drop.
        text = body.decode("utf-8-sig") if body.startswith(codecs.BOM_UTF8) else body.decode()
    except UnicodeDecodeError as exc:
        detail = f"malformed_json: body is not UTF-8 ({exc.reason} at byte {exc.start})"
        return None, (ErrorClass.MALFORMED_JSON, detail)
    try:
        return _loads(text), None
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return None, (ErrorClass.MALFORMED_JSON, f"malformed_json: {reason}{where}")


_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_JSON_WHITESPACE = " \t\n\r"  # json.decoder.WHITESPACE: str methods are cheaper than its regex here


def _loads(text: str) -> Any:
    """``json.loads(text)``, the same value or the same error, three Python frames shorter (loads,
    ``JSONDecoder.decode``, ``raw_decode``: a third of the cost for a small body, and the kit parses
    one on every call): decode's own steps, on the C scanner they end in."""
    if text.startswith("\ufeff"):  # a BOM left after utf-8-sig dropped one: json.loads' own error
        return json.loads(text)
    try:
        data, end = _scan(text, len(text) - len(text.lstrip(_JSON_WHITESPACE)))
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", text, err.value) from None
    if end != len(text) and (rest := text[end:].lstrip(_JSON_WHITESPACE)):
        raise json.JSONDecodeError("Extra data", text, len(text) - len(rest))
    return data


def field_failure(path: str, values: Sequence[Any], *, required: bool = True, not_null: bool = False) -> Failure | None:
    """``missing_field`` when a ``required`` field (``path`` names it in the detail) selected no value,
    ``null_field`` when ``not_null`` and a selected value is null."""
    if not values:
        return (ErrorClass.MISSING_FIELD, f"missing_field: {path}") if required else None
    if not_null and any(value is None for value in values):
        return ErrorClass.NULL_FIELD, f"null_field: {path}"
    return None


def too_slow(duration: float, limit: float) -> Failure | None:
    """A success that took ``duration`` seconds where ``limit`` were allowed."""
    if duration > limit:
        return ErrorClass.TOO_SLOW, f"too_slow: {format_seconds(duration)}, max {format_seconds(limit)}"
    return None


def describe(exc: BaseException) -> str:
    """The most specific short reason in an aiohttp exception chain."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        return getattr(cert_error, "verify_message", None) or getattr(cert_error, "reason", None) or str(cert_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return _short(str(exc)) or type(exc).__name__


def _short(text: str) -> str:
    """An exception's text as a detail's one short line: aiohttp's parser errors span several (the reply's
    first bytes, a caret under the bad one), and a detail is one line wherever it is shown."""
    text = " ".join(line.strip() for line in text.splitlines() if line.strip() and set(line.strip()) != {"^"})
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def format_seconds(seconds: float) -> str:
    """``2.0s``, ``350ms``: durations in details."""
    return f"{seconds:.1f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"


def within_budget(seconds: float | None, suffix: str = "") -> str:
    """The detail's ``" within 2.0s"`` (then ``suffix``) for the seconds a call had, ``" (deadline passed)"``
    when it had none: it started at or after its deadline (a loaded machine woke it late), and a negative
    time would only puzzle the reader."""
    if seconds is None:
        return suffix
    if seconds <= 0:
        return " (deadline passed)"
    return f" within {format_seconds(seconds)}{suffix}"
