"""The kit's classifier used directly, as an integration service would: a plain aiohttp call against
real servers on 127.0.0.1, no probe config involved."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict
from targets import Reply, Target, closed_port

from integration_kit.classify import (
    body_read_failure,
    classify_exception,
    classify_status,
    describe,
    empty_body,
    field_failure,
    parse_json,
    too_slow,
)
from integration_kit.errors import ErrorClass
from integration_kit.header_values import first_number
from integration_kit.retry import rate_limit_wait

E = ErrorClass


async def test_a_refused_connection_is_connect() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError) as raised:
            await session.get(f"http://127.0.0.1:{closed_port()}/")
    error_class, detail = classify_exception(raised.value)
    assert error_class is E.CONNECT and detail.startswith("connect: 127.0.0.1:"), detail


async def test_a_service_call_classified_like_a_probe(target: Target) -> None:
    url = target.route("/x", Reply(status=503), Reply(status=200, body=""), Reply(json={"data": {"id": None}}))
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert classify_status(resp.status, resp.reason) == (E.HTTP_5XX, "http_5xx: 503 Service Unavailable")
        async with session.get(url) as resp:
            assert empty_body(resp.status, await resp.read()) == (E.EMPTY_BODY, "empty_body: 200 with an empty body")
        async with session.get(url) as resp:
            data, failure = parse_json(await resp.read())
    assert failure is None
    assert field_failure("data.id", [data["data"]["id"]], not_null=True) == (E.NULL_FIELD, "null_field: data.id")
    assert field_failure("data.name", []) == (E.MISSING_FIELD, "missing_field: data.name")
    assert field_failure("data.name", [], required=False) is None


async def test_a_call_that_starts_past_its_deadline_says_so_not_a_negative_time(target: Target) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() - 0.062  # a loaded machine woke the attempt 62 ms late
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError) as raised:
            async with asyncio.timeout_at(deadline):
                await session.get(target.url("/ok"))
    budget = deadline - loop.time()
    assert classify_exception(raised.value, budget=budget) == (
        E.TIMEOUT, "timeout: no response headers (deadline passed)"
    )
    assert classify_exception(raised.value, stage="connect", budget=budget)[1] == (
        "timeout: connect did not complete (deadline passed)"
    )
    assert body_read_failure(raised.value, size=0, budget=budget)[1] == (
        "timeout: body not complete (deadline passed) (0 bytes read)"
    )
    assert classify_exception(raised.value, budget=2.0)[1] == "timeout: no response headers within 2.0s"
    assert classify_exception(raised.value, stage="connect", budget=0.35)[1] == (
        "timeout: connect did not complete within 350ms (deadline)"
    )


def test_status_classes() -> None:
    assert [classify_status(s)[0] for s in (401, 403, 429, 404, 500, 302)] == [
        E.AUTH, E.AUTH, E.RATE_LIMITED, E.HTTP_4XX, E.HTTP_5XX, E.UNEXPECTED_STATUS
    ]


def test_bodies() -> None:
    assert empty_body(204, b"") is None and empty_body(200, b"", method="HEAD") is None
    assert empty_body(200, b"  \n") == (E.EMPTY_BODY, "empty_body: 200 with an empty body")
    assert parse_json(b"\xef\xbb\xbf[1]") == ([1], None)
    assert parse_json(b'{"a": ')[1] == (E.MALFORMED_JSON, "malformed_json: Expecting value at line 1 column 7")
    assert parse_json(b"\xff")[1] == (
        E.MALFORMED_JSON, "malformed_json: body is not UTF-8 (invalid start byte at byte 0)"
    )
    assert too_slow(1.5, 2.0) is None and too_slow(2.5, 2.0) == (E.TOO_SLOW, "too_slow: 2.5s, max 2.0s")


@given(st.binary(max_size=64))
def test_any_body_parses_or_is_malformed(body: bytes) -> None:
    _, failure = parse_json(body)
    assert failure is None or failure[0] is E.MALFORMED_JSON


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _stdlib(text: str) -> tuple[str, object]:
    try:
        return "value", json.loads(text)
    except ValueError as exc:
        return "error", str(exc)


@given(
    st.one_of(
        st.text(max_size=40),  # mostly not JSON
        st.tuples(st.sampled_from(["", " ", "\n\t\r", "\x0b", "\u00a0", "\ufeff", "\ufeff\ufeff"]), _JSON_VALUES,
                  st.sampled_from(["", " ", "\n", "\r\n\t ", "\x0b", " \u00a0", "x", " 1", "]"]))
        .map(lambda t: t[0] + json.dumps(t[1]) + t[2]),  # JSON, with BOMs, whitespace (JSON's or not), junk
    )
)
def test_parse_json_answers_what_json_loads_answers(text: str) -> None:
    """parse_json skips json.loads' wrappers (a body is parsed on every call of the kit): the same value,
    or the same error at the same place, for any text."""
    expected = _stdlib(text.removeprefix("\ufeff"))  # one BOM is the body's (utf-8-sig drops it)
    data, failure = parse_json(text.encode())
    if expected[0] == "value":
        assert failure is None and json.dumps(data) == json.dumps(expected[1])
    else:
        assert failure is not None and failure[0] is E.MALFORMED_JSON
        message, _, where = str(expected[1]).partition(": line ")
        line, column = where.split(" column ")[0], where.split(" column ")[1].split(" ")[0]
        assert failure[1] == f"malformed_json: {message} at line {line} column {column}"


_RATE_FIELDS = st.sampled_from(
    ["Retry-After", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-reset-after", "x-rate-limit-remaining",
     "x-rate-limit-reset", "ratelimit-remaining", "ratelimit-reset", "x-other"]
)


@given(st.dictionaries(_RATE_FIELDS, st.text(max_size=12), max_size=5))
def test_a_403_is_auth_or_a_rate_limit_whatever_its_headers_say(fields: dict[str, str]) -> None:
    headers = CIMultiDict(fields)
    error_class, detail = classify_status(403, "Forbidden", headers)
    used_up = any(
        (v := first_number(headers.get(f))) is not None and v <= 0
        for f in ("x-ratelimit-remaining", "x-rate-limit-remaining", "ratelimit-remaining")
    )
    expected = E.RATE_LIMITED if "Retry-After" in headers or used_up else E.AUTH
    assert error_class is expected and detail.startswith(f"{expected}: 403 Forbidden"), (fields, detail)
    wait = rate_limit_wait(headers, now=1_800_000_000.0)
    assert wait is None or wait >= 0


@given(st.text(max_size=300))
def test_an_exception_is_described_in_one_short_line(text: str) -> None:
    described = describe(ValueError(text))
    assert "\n" not in described and "\r" not in described and 0 < len(described) <= 120
