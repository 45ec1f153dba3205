"""The HTTP probe against real misbehaving servers on 127.0.0.1: one test per error class (README, "Checks"),
retries, deadlines, redirects, TLS, timing phases and redaction."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import json
import math
import re
import time
from typing import Any

import aiohttp
import pytest
from targets import DOC, Reply, SilentServer, Target, closed_port, tls_server_context
from waiting import until

import checks.http
import integration_kit.retry
from checks.auth_config import BasicAuth
from checks.base import ProbeContext
from checks.http import HttpCheckConfig, make_session, probe
from integration_kit.errors import ErrorClass
from integration_kit.ratelimit_headers import observed_quota
from integration_kit.redact import Redactor
from integration_kit.results import CheckResult

E = ErrorClass


def make_check(url: str, **fields: Any) -> HttpCheckConfig:
    return HttpCheckConfig.model_validate({"name": "t", "kind": "http", "url": url, **fields})


async def run(check: HttpCheckConfig, session: aiohttp.ClientSession | None = None) -> CheckResult:
    ctx = ProbeContext(integration="acme", redactor=Redactor(check.secret_values()), session=session)
    return await probe(check, ctx)


def assert_failed(result: CheckResult, error_class: ErrorClass, detail_start: str) -> None:
    assert not result.ok, result
    assert result.error_class is error_class, result
    assert result.detail.startswith(detail_start), result.detail
    assert result.request is not None


def assert_timed_out(result: CheckResult, awaited: str, timeout_ms: int) -> None:
    """A deadline's detail names what was awaited and the time the attempt had: the run's timeout less what
    passed before the attempt began (its setup: a millisecond, more on a loaded machine, where a test that
    expected exactly the timeout once read 'within 693ms' of 700)."""
    assert_failed(result, E.TIMEOUT, f"timeout: {awaited} within ")
    had = re.match(rf"timeout: {awaited} within (\d+)ms", result.detail)
    assert had is not None, result.detail
    assert timeout_ms / 2 <= int(had.group(1)) <= timeout_ms, result.detail


# --- success and timing -----------------------------------------------------------------------------


async def test_success_with_json_assertions_and_phases(target: Target) -> None:
    check = make_check(
        target.url("/ok").replace("127.0.0.1", "localhost"),  # a name, so there is a DNS phase
        expect={
            "json": {
                "$.data.id": {"type": "string", "regex": "^ch_", "non_empty": True},
                "$.data.amount": {"type": "integer", "equals": 1200},
                "$.data.tags[*]": {"type": "string"},
                "$.livemode": {"not_null": True, "equals": False},
                "$.nothing": {"equals": None},
                "$.optional": {"present": False, "type": "string"},
            },
            "max_latency": "5s",
        },
    )
    result = await run(check)
    assert result.ok and result.error_class is None and result.detail == "", result
    assert result.status_code == 200
    assert result.attempts == 1 and result.attempt_classes == (None,)
    assert set(result.phases) == {"dns", "connect", "ttfb", "transfer"}
    assert all(v >= 0 for v in result.phases.values())
    assert sum(result.phases.values()) <= result.duration <= result.total_duration
    assert result.request is None and result.response_excerpt is None
    assert result.body_bytes == len(json.dumps(DOC))
    assert result.tls_expiry is None


async def test_request_is_sent_as_configured(target: Target) -> None:
    url = target.route("/submit", Reply(status=201, json={"ok": True}))
    check = make_check(
        url + "?fixed=1",
        method="post",
        headers={"X-Api-Version": "2024-01-01"},
        query={"page": "2"},
        json={"amount": 5},
        expect={"status": [201]},
    )
    result = await run(check)
    assert result.ok, result
    (hit,) = target.hits("/submit")
    assert hit.method == "POST"
    assert hit.query == {"fixed": "1", "page": "2"}
    assert hit.headers["X-Api-Version"] == "2024-01-01"
    assert hit.headers["Content-Type"] == "application/json"
    assert json.loads(hit.body) == {"amount": 5}

    raw = make_check(url, method="PUT", body="a=1&b=2", headers={"Content-Type": "text/plain"},
                     expect={"status": ["2xx"]})
    assert (await run(raw)).ok
    assert target.hits("/submit")[-1].body == b"a=1&b=2"


async def test_shared_session_gives_a_fresh_connection_per_run(target: Target) -> None:
    check = make_check(target.url("/ok"))
    async with make_session(limit=4) as session:
        first = await run(check, session)
        second = await run(check, session)
    assert first.ok and second.ok
    # Each run connected anew (connect measured both times) on its own client port.
    assert "connect" in first.phases and "connect" in second.phases
    assert session.closed


# --- one test per error class ----------------------------------------------------------------------


async def test_dns() -> None:
    result = await run(make_check("http://api.integration-monitor.invalid/v1", timeout="5s"))
    assert_failed(result, E.DNS, "dns: api.integration-monitor.invalid did not resolve")
    assert result.attempts == 1  # attempts default to 1


async def test_connect_refused() -> None:
    port = closed_port()
    result = await run(make_check(f"http://127.0.0.1:{port}/", timeout="5s"))
    assert_failed(result, E.CONNECT, f"connect: 127.0.0.1:{port}")
    assert result.status_code is None


async def test_connect_server_closes_before_responding(target: Target) -> None:
    url = target.route("/hangup", Reply(close_before_response=True))
    result = await run(make_check(url))
    assert_failed(result, E.CONNECT, "connect: server closed the connection before responding")
    assert len(target.hits("/hangup")) == 1  # aiohttp's silent resend is off: one attempt, one request


async def test_tls_untrusted_certificate() -> None:
    context, _ca = tls_server_context()
    async with Target(ssl_context=context) as target:
        result = await run(make_check(target.url("/ok")))
    assert_failed(result, E.TLS, "tls: ")
    assert "certificate" in result.detail
    assert result.tls_expiry is None


async def test_tls_expiry_read_with_verification_off() -> None:
    not_after = dt.datetime(2031, 5, 17, 12, 0, tzinfo=dt.UTC)
    context, _ca = tls_server_context(not_after=not_after)
    async with Target(ssl_context=context) as target:
        result = await run(make_check(target.url("/ok"), verify_tls=False))
    assert result.ok, result
    assert result.tls_expiry == not_after.timestamp()
    assert {"connect", "tls", "ttfb", "transfer"} <= set(result.phases)
    assert result.phases["tls"] > 0


async def test_timeout_connect() -> None:
    # TCP connects but the TLS handshake never gets an answer: the connect step cannot complete.
    async with SilentServer() as server:
        check = make_check(f"https://127.0.0.1:{server.port}/", connect_timeout="300ms", timeout="5s")
        result = await run(check)
    # The connect's own limit ended the run, not its 5 s deadline (that one's detail reads "within 5.0s
    # (deadline)"), in its one attempt.
    assert_failed(result, E.TIMEOUT, "timeout: connect did not complete within 300ms")
    assert result.detail == "timeout: connect did not complete within 300ms", result.detail
    assert result.attempt_classes == (E.TIMEOUT,), result


async def test_the_connect_timeout_ends_with_the_connect(target: Target) -> None:
    # Response headers after 3 x connect_timeout, well inside the run's timeout: the connect's limit must not
    # hold the rest of the attempt.
    url = target.route("/slow-headers", Reply(delay=0.9))
    result = await run(make_check(url, connect_timeout="300ms", timeout="5s", expect={"body_required": False}))
    assert result.ok, result
    assert result.phases["ttfb"] >= 0.85


async def test_timeout_waiting_for_headers(target: Target) -> None:
    url = target.route("/stall", Reply(delay=5))
    result = await run(make_check(url, timeout="500ms"))
    assert_timed_out(result, "no response headers", 500)
    assert result.total_duration >= 0.45
    # The deadline ended the wait, not the vendor's answer (the target runs on this loop: the deadline, due
    # first, is met first however late the loop wakes; a bound on seconds would measure the machine).
    assert target.answered("/stall") == 0


async def test_probes_sharing_one_deadlines_each_end_at_their_own(target: Target) -> None:
    """The daemon's probes share one ``Deadlines`` (one timer for every attempt in flight): an attempt
    entered later with an earlier deadline still ends at its own, one entered first with a later deadline
    is not ended early by the other's expiry, and one that answers in time is left alone."""
    ctx = ProbeContext(integration="acme", redactor=Redactor())
    stall = target.route("/stall", Reply(delay=5))
    late = target.route("/late", Reply(delay=1.2, json={"ok": True}))
    slow_run = asyncio.create_task(probe(make_check(stall, timeout="2s"), ctx))
    answered = asyncio.create_task(probe(make_check(late, timeout="5s"), ctx))
    await until(lambda: len(ctx.deadlines.scopes) == 2, "both attempts in flight")  # the timer: 2 s
    short = await probe(make_check(stall, timeout="500ms"), ctx)
    # Ended by its own deadline, not by the timer set for the other's: before the late answer came, due 0.7 s
    # after that deadline (the target runs on this loop). Judged by that order, not by seconds on the clock.
    late_answers_by_then = target.answered("/late")
    slow, ok = await slow_run, await answered
    assert_timed_out(short, "no response headers", 500)
    assert short.total_duration >= 0.45, short
    assert late_answers_by_then == 0
    assert_failed(slow, E.TIMEOUT, "timeout: no response headers within ")
    assert slow.total_duration >= 1.95, slow
    assert ok.ok and ok.status_code == 200, ok
    assert not ctx.deadlines.scopes  # every scope left


async def test_timeout_slow_drip_body(target: Target) -> None:
    url = target.route("/drip", Reply(body=b"x" * 100, drip=0.05, chunk=1))  # 5 s for the whole body
    result = await run(make_check(url, timeout="700ms"))
    assert_timed_out(result, "body not complete", 700)
    assert result.detail.endswith(f" ({result.body_bytes} bytes read)"), result.detail
    assert result.status_code == 200
    assert result.body_bytes is not None and 0 < result.body_bytes < 100  # the deadline, not the body's end


async def test_disconnected_mid_body(target: Target) -> None:
    url = target.route("/cut", Reply(body=b"y" * 1000, truncate_at=100))
    result = await run(make_check(url))
    assert_failed(result, E.DISCONNECTED, "disconnected: connection closed after 100 body bytes")


async def test_http_5xx_keeps_a_redacted_excerpt(target: Target) -> None:
    url = target.route("/down", Reply(status=503, body="upstream overloaded " + "z" * 5000))
    result = await run(make_check(url))
    assert_failed(result, E.HTTP_5XX, "http_5xx: 503 Service Unavailable")
    assert result.detail == "http_5xx: 503 Service Unavailable"
    assert result.status_code == 503
    assert result.response_excerpt is not None
    assert result.response_excerpt.startswith("upstream overloaded")
    assert len(result.response_excerpt) == checks.http.EXCERPT_BYTES


async def test_rate_limited(target: Target) -> None:
    url = target.route("/busy", Reply(status=429))
    assert_failed(await run(make_check(url)), E.RATE_LIMITED, "rate_limited: 429 Too Many Requests")


@pytest.mark.parametrize("status", [401, 403])
async def test_auth(target: Target, status: int) -> None:
    url = target.route("/secret", Reply(status=status))
    assert_failed(await run(make_check(url)), E.AUTH, f"auth: {status} ")


async def test_a_403_refusing_for_a_used_up_rate_limit_is_rate_limited_not_auth(target: Target) -> None:
    # GitHub refuses a used-up primary limit with 403, x-ratelimit-remaining: 0 and the epoch it resets at: a
    # rate limit (no auth page), and no retry before that reset (it ends past the deadline: one request).
    reset = str(int(time.time()) + 600)
    used_up = {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    url = target.route("/primary", Reply(status=403, headers=used_up, json={"message": "API rate limit exceeded"}))
    result = await run(make_check(url, retry=RETRY, timeout="2s"))
    assert_failed(result, E.RATE_LIMITED, "rate_limited: 403 Forbidden (x-ratelimit-remaining: 0)")
    assert result.attempts == 1 and len(target.hits("/primary")) == 1

    # Its secondary limits: 403 with Retry-After, honoured like a 429's; the retry after it succeeds.
    url = target.route("/secondary", Reply(status=403, headers={"Retry-After": "0.5"}), Reply(json=DOC))
    result = await run(make_check(url, retry=RETRY, timeout="5s"))
    assert result.ok and result.attempt_classes == (E.RATE_LIMITED, None), result
    first, second = target.hits("/secondary")
    assert second.at - first.at >= 0.5

    # A used-up limit whose reset is a delay (Discord's reset-after) is waited for too.
    used_up = {"x-ratelimit-remaining": "0", "x-ratelimit-reset-after": "0.5"}
    url = target.route("/reset-after", Reply(status=403, headers=used_up), Reply(json=DOC))
    result = await run(make_check(url, retry=RETRY, timeout="5s"))
    assert result.ok and result.attempt_classes == (E.RATE_LIMITED, None), result
    first, second = target.hits("/reset-after")
    assert second.at - first.at >= 0.5

    # A 403 whose limit is not used up is refused credentials, as any other 403.
    url = target.route("/forbidden", Reply(status=403, headers={"x-ratelimit-remaining": "59"}))
    assert_failed(await run(make_check(url, retry=RETRY)), E.AUTH, "auth: 403 Forbidden")


async def test_http_4xx_unless_expected(target: Target) -> None:
    url = target.route("/gone", Reply(status=404, json={"error": "no such thing"}))
    assert_failed(await run(make_check(url)), E.HTTP_4XX, "http_4xx: 404 Not Found")
    result = await run(make_check(url, expect={"status": [200, 404]}))
    assert result.ok and result.status_code == 404, result


async def test_unexpected_status(target: Target) -> None:
    url = target.route("/accepted", Reply(status=202, json={"queued": True}))
    result = await run(make_check(url, expect={"status": [200]}))
    assert_failed(result, E.UNEXPECTED_STATUS, "unexpected_status: 202 Accepted")


async def test_empty_body(target: Target) -> None:
    url = target.route("/empty", Reply(status=200, body=b""))
    assert_failed(await run(make_check(url)), E.EMPTY_BODY, "empty_body: 200 with an empty body")
    assert (await run(make_check(url, expect={"body_required": False}))).ok
    # A HEAD has no body by definition.
    assert (await run(make_check(url, method="HEAD"))).ok


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"data": ', "malformed_json: Expecting value at line 1 column 10"),
        (b"<html>maintenance</html>", "malformed_json: Expecting value"),
        ('{"name": "café"}'.encode("latin-1"), "malformed_json: body is not UTF-8"),
    ],
)
async def test_malformed_json(target: Target, body: bytes, detail: str) -> None:
    url = target.route("/bad", Reply(body=body))
    result = await run(make_check(url, expect={"json": {"$.name": {}}}))
    assert_failed(result, E.MALFORMED_JSON, detail)


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        ("application/json", b'{"data": ', "malformed_json: Expecting value at line 1 column 10"),
        ("application/problem+json; charset=utf-8", b"<html>maintenance</html>", "malformed_json: Expecting value"),
        ("application/json; charset=iso-8859-1", '{"n": "é"}'.encode("latin-1"), "malformed_json: body is not UTF-8"),
    ],
)
async def test_a_body_that_says_it_is_json_must_be_json_without_assertions_too(
    target: Target, content_type: str, body: bytes, detail: str
) -> None:
    """A check with no ``expect.json``: a 200 whose Content-Type says JSON and whose body is not is
    ``malformed_json`` (as the kit's client judges it by default); a body that does not say so is not parsed."""
    url = target.route("/bad", Reply(body=body, headers={"Content-Type": content_type}))
    assert_failed(await run(make_check(url)), E.MALFORMED_JSON, detail)
    plain = target.route("/page", Reply(body=body, headers={"Content-Type": "text/html"}))
    assert (await run(make_check(plain))).ok


async def test_missing_field(target: Target) -> None:
    check = make_check(target.url("/ok"), expect={"json": {"$.data.amount": {}, "$.data.customer.id": {}}})
    result = await run(check)
    assert_failed(result, E.MISSING_FIELD, "missing_field: $.data.customer.id")
    assert result.detail == "missing_field: $.data.customer.id"
    assert result.response_excerpt is not None and '"livemode"' in result.response_excerpt


async def test_null_field(target: Target) -> None:
    result = await run(make_check(target.url("/ok"), expect={"json": {"$.nothing": {"not_null": True}}}))
    assert_failed(result, E.NULL_FIELD, "null_field: $.nothing")


@pytest.mark.parametrize(
    ("path", "assertion", "detail"),
    [
        ("$.data.amount", {"type": "string"}, "assertion_failed: $.data.amount is number, expected string"),
        ("$.livemode", {"equals": 0}, "assertion_failed: $.livemode is false, expected 0"),
        ("$.data.currency", {"equals": "eur"}, 'assertion_failed: $.data.currency is "usd", expected "eur"'),
        ("$.data.id", {"regex": "^cus_"}, 'assertion_failed: $.data.id is "ch_1", does not match /^cus_/'),
        ("$.empty_list", {"non_empty": True}, "assertion_failed: $.empty_list is empty"),
        ("$.data.tags[*]", {"type": "integer"}, "assertion_failed: $.data.tags[*] is string, expected integer"),
    ],
)
async def test_assertion_failed(target: Target, path: str, assertion: dict[str, Any], detail: str) -> None:
    result = await run(make_check(target.url("/ok"), expect={"json": {path: assertion}}))
    assert_failed(result, E.ASSERTION_FAILED, detail)
    assert result.detail == detail


async def test_body_too_large_stops_reading_a_50mb_stream(target: Target) -> None:
    size = 50 * 1024 * 1024
    url = target.route("/huge", Reply(stream_bytes=size))
    cap = 1024 * 1024
    result = await run(make_check(url, expect={"max_body_bytes": cap, "body_required": False}))
    assert_failed(result, E.BODY_TOO_LARGE, f"body_too_large: over the {cap}-byte cap")
    assert result.body_bytes is not None and cap < result.body_bytes <= cap + 256 * 1024
    # The server could only push what the socket buffers took before the probe hung up.
    assert target.bytes_sent["/huge"] < size // 4


async def test_body_too_large_by_content_length(target: Target) -> None:
    url = target.route("/big", Reply(body=b"0" * 5000))
    result = await run(make_check(url, expect={"max_body_bytes": 1000}))
    assert_failed(result, E.BODY_TOO_LARGE, "body_too_large: Content-Length 5000 over the 1000-byte cap")


async def test_too_slow(target: Target) -> None:
    url = target.route("/sluggish", Reply(json=DOC, delay=0.3))
    result = await run(make_check(url, expect={"max_latency": "100ms"}))
    assert_failed(result, E.TOO_SLOW, "too_slow: ")
    assert result.detail.endswith("max 100ms")
    assert result.status_code == 200 and result.duration >= 0.29


async def test_invalid_http_response() -> None:
    # Not an error class of its own: a response that is not HTTP is outside anything expected.
    async with SilentServer(greeting=b"SSH-2.0-OpenSSH_9.6\r\n") as server:
        url = f"http://127.0.0.1:{server.port}/"
        result = await run(make_check(url, timeout="2s"))
    assert_failed(result, E.UNEXPECTED_STATUS, "unexpected_status: invalid HTTP response (Bad status line")
    # One short line, as every detail (aiohttp's parser error spans four: the bytes, a caret under them).
    assert "\n" not in result.detail and len(result.detail) <= 200, result.detail


# --- retries ---------------------------------------------------------------------------------------

RETRY = {"attempts": 3, "backoff": "10ms", "max_backoff": "50ms"}


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float | None, float | None]]:
    """What the retry runner decided after each failed attempt: (the Retry-After the attempt read, the wait
    before the next attempt or None: no next attempt). That the runner then waits what it decided is
    tests/test_retry.py's (on a fake clock)."""
    seen: list[tuple[float | None, float | None]] = []
    decide = integration_kit.retry.wait_before_retry

    def spy(policy: Any, outcome: Any, attempts: int, **kwargs: Any) -> float | None:
        wait = decide(policy, outcome, attempts, **kwargs)
        if outcome.error_class is not None:
            seen.append((outcome.retry_after, wait))
        return wait

    monkeypatch.setattr(integration_kit.retry, "wait_before_retry", spy)
    return seen


async def test_5xx_then_200_succeeds_on_the_second_attempt(target: Target) -> None:
    url = target.route("/flaky", Reply(status=503), Reply(json=DOC))
    result = await run(make_check(url, retry=RETRY))
    assert result.ok, result
    assert result.attempts == 2 and result.retries == 1
    assert result.attempt_classes == (E.HTTP_5XX, None)
    assert len(target.hits("/flaky")) == 2
    assert result.total_duration >= result.duration


async def test_auth_is_not_retried(target: Target) -> None:
    url = target.route("/denied", Reply(status=401), Reply(json=DOC))
    result = await run(make_check(url, retry=RETRY))
    assert_failed(result, E.AUTH, "auth: 401 Unauthorized")
    assert result.attempts == 1 and len(target.hits("/denied")) == 1


async def test_retry_on_overrides_the_retryable_classes(target: Target) -> None:
    url = target.route("/denied", Reply(status=401), Reply(json=DOC))
    result = await run(make_check(url, retry={**RETRY, "retry_on": ["auth"]}))
    assert result.ok and result.attempt_classes == (E.AUTH, None)


async def test_all_attempts_fail_and_are_counted(target: Target) -> None:
    url = target.route("/down", Reply(status=500))
    result = await run(make_check(url, retry=RETRY))
    assert_failed(result, E.HTTP_5XX, "http_5xx: 500")
    assert result.attempts == 3 and result.attempt_classes == (E.HTTP_5XX,) * 3
    assert len(target.hits("/down")) == 3


@pytest.mark.parametrize("retry_after", ["1", "0.6"])
async def test_retry_after_seconds_honoured(
    target: Target, retry_after: str, decisions: list[tuple[float | None, float | None]]
) -> None:
    url = target.route("/limited", Reply(status=429, headers={"Retry-After": retry_after}), Reply(json=DOC))
    result = await run(make_check(url, retry=RETRY, timeout="5s"))
    assert result.ok and result.attempt_classes == (E.RATE_LIMITED, None), result
    # The wait is the Retry-After, to the millisecond: not rounded up, nor added to the backoff (≤ 50 ms).
    assert decisions == [(float(retry_after), float(retry_after))]
    first, second = target.hits("/limited")
    assert second.at - first.at >= float(retry_after)  # and the retry came after it


async def test_retry_after_http_date_honoured(
    target: Target, decisions: list[tuple[float | None, float | None]]
) -> None:
    # Whole seconds only in an HTTP-date: name a second at least 1 s ahead.
    when = math.ceil(time.time()) + 1
    header = email.utils.formatdate(when, usegmt=True)
    url = target.route("/limited", Reply(status=503, headers={"Retry-After": header}), Reply(json=DOC))
    result = await run(make_check(url, retry=RETRY, timeout="6s"))
    assert result.ok and result.attempt_classes == (E.HTTP_5XX, None), result
    first, second = target.hits("/limited")
    assert second.wall >= when - 0.02  # clock granularity only
    # The wait decided is what was left until that date when the answer was read (read after the request
    # came in: no more than ``when - first.wall``), not more: a date read an hour or a second off, say.
    [(asked, wait)] = decisions
    assert asked is not None and wait == asked and 0 < asked <= when - first.wall, (asked, when - first.wall)


async def test_retry_after_past_the_deadline_stops_at_once(
    target: Target, decisions: list[tuple[float | None, float | None]]
) -> None:
    url = target.route("/limited", Reply(status=429, headers={"Retry-After": "30"}), Reply(json=DOC))
    result = await run(make_check(url, retry=RETRY, timeout="2s"))
    assert_failed(result, E.RATE_LIMITED, "rate_limited: 429")
    # Decided at once after the first answer: no wait (a wait until the deadline, or a shorter one than
    # asked, would be a decision here), so no second attempt.
    assert decisions == [(30.0, None)]
    assert result.attempts == 1 and len(target.hits("/limited")) == 1


async def test_deadline_honoured_under_retries(target: Target) -> None:
    # Two slow failures, then a vendor that hangs: the third attempt has what is left of the run's one deadline
    # (at most 0.6 s: the two answers took 0.2 s each), not a deadline of its own, and that deadline ends it.
    # Judged by the attempt's own account of its time and by the answers the vendor gave, not by seconds on
    # the clock (a bound on the run's duration measures the machine).
    url = target.route("/slow-fail", Reply(status=502, delay=0.2), Reply(status=502, delay=0.2), Reply(delay=5))
    check = make_check(url, timeout="1s", retry={"attempts": 20, "backoff": "100ms", "max_backoff": "200ms"})
    result = await run(check)
    assert len(result.attempt_classes) == result.attempts
    # A loop that woke late may have no third attempt (the next wait would have ended past the deadline), or
    # may see the deadline end the second (its answer not read in time): the last attempt is then the cut one.
    failed = result.attempt_classes.count(E.HTTP_5XX)
    assert 1 <= failed <= 2 and result.attempt_classes[:failed] == (E.HTTP_5XX,) * failed, result
    assert result.attempt_classes[failed:] in {(), (E.TIMEOUT,)}, result
    if result.attempt_classes[-1] is E.TIMEOUT:  # it had what the answers before it left of the 1 s
        had = re.fullmatch(r"timeout: no response headers (?:within (\d+)ms|\(deadline passed\))", result.detail)
        assert had is not None and int(had[1] or 0) <= 1000 - 200 * failed, result.detail
    # The hanging attempt was cut, seconds before its answer was due (a cut second attempt may have been answered).
    assert failed <= target.answered("/slow-fail") <= 2
    # The last attempt may be cut by the deadline before its request reaches the server.
    assert result.attempts - 1 <= len(target.hits("/slow-fail")) <= result.attempts


# --- redirects -------------------------------------------------------------------------------------


async def test_redirect_followed(target: Target) -> None:
    url = target.route("/old", Reply(status=302, headers={"Location": "/ok"}))
    result = await run(make_check(url, expect={"json": {"$.data.id": {}}}))
    assert result.ok and result.status_code == 200, result
    assert len(target.hits("/ok")) == 1


async def test_redirect_not_followed(target: Target) -> None:
    url = target.route("/old", Reply(status=301, headers={"Location": "/ok?token=hunter22"}))
    result = await run(make_check(url, follow_redirects=False))
    assert_failed(result, E.UNEXPECTED_STATUS, "unexpected_status: 301 Moved Permanently -> /ok?token=")
    assert "hunter22" not in result.detail
    assert not target.hits("/ok")
    ok = await run(make_check(url, follow_redirects=False, expect={"status": [301], "body_required": False}))
    assert ok.ok and ok.status_code == 301


async def test_too_many_redirects(target: Target) -> None:
    url = target.route("/loop", Reply(status=307, headers={"Location": "/loop"}))
    result = await run(make_check(url, max_redirects=3))
    assert_failed(result, E.UNEXPECTED_STATUS, "unexpected_status: more than 3 redirects")
    assert len(target.hits("/loop")) == 4  # the request and three redirects followed


async def test_credentials_in_the_url_are_sent_as_basic_and_an_inherited_auth_replaces_them(target: Target) -> None:
    """A check with user:password@ in its URL under an integration whose auth sets Authorization made
    aiohttp refuse every request ("Cannot combine AUTHORIZATION header…"): the probe raised on every run."""
    url = target.url("/ok").replace("http://", "http://probe:pw%2Fsecret@")
    assert (await run(make_check(url))).ok
    assert target.hits("/ok")[-1].headers["Authorization"] == "Basic " + base64.b64encode(b"probe:pw/secret").decode()
    inherited = make_check(url).model_copy(update={"auth": BasicAuth(kind="basic", username="u", password="p")})
    result = await run(inherited)
    assert result.ok, result
    assert target.hits("/ok")[-1].headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert "pw/secret" not in str(result) and "probe" not in (result.request.url if result.request else "")


SECRET_HEADERS = {"Authorization": "Bearer sk_redirect_1", "X-Api-Key": "xk_redirect_2", "Stripe-Account": "acct_3"}


async def test_configured_headers_are_not_sent_to_another_origin(target: Target) -> None:
    """Finding 3: aiohttp drops only Authorization on a cross-origin redirect; X-Api-Key and friends went
    to whatever host the redirect named. Another port on 127.0.0.1 is another origin."""
    async with Target() as elsewhere:
        url = target.route("/old", Reply(status=302, headers={"Location": elsewhere.url("/ok")}))
        headers = {**SECRET_HEADERS, "Accept": "application/json"}
        result = await run(make_check(url, headers=headers))
        assert result.ok, result
    (hit,) = elsewhere.hits("/ok")
    assert not {k.lower() for k in SECRET_HEADERS} & {k.lower() for k in hit.headers}, dict(hit.headers)
    assert hit.headers["Accept"] == "application/json"  # harmless headers still say what we want
    (first,) = target.hits("/old")
    assert all(first.headers[k] == v for k, v in SECRET_HEADERS.items())


async def test_once_a_redirect_chain_left_the_origin_it_never_gets_the_headers_back(target: Target) -> None:
    async with Target() as elsewhere:
        back = elsewhere.route("/bounce", Reply(status=307, headers={"Location": target.url("/ok")}))
        url = target.route("/old", Reply(status=302, headers={"Location": back}))
        assert (await run(make_check(url, headers=SECRET_HEADERS))).ok
    (hit,) = target.hits("/ok")
    assert not {k.lower() for k in SECRET_HEADERS} & {k.lower() for k in hit.headers}


async def test_same_origin_redirect_keeps_the_headers(target: Target) -> None:
    url = target.route("/old", Reply(status=301, headers={"Location": "/ok"}))
    assert (await run(make_check(url, headers=SECRET_HEADERS))).ok
    (hit,) = target.hits("/ok")
    assert all(hit.headers[k] == v for k, v in SECRET_HEADERS.items())


# --- secrets and quota -----------------------------------------------------------------------------


async def test_canary_secret_never_in_the_result(target: Target) -> None:
    canary = "CANARY-7f3a9c1e"
    # The vendor echoes what it got: the excerpt would carry the secrets if nothing masked them.
    url = target.route("/echo-error", Reply(status=500, body=f"bad key {canary}-q, auth Bearer {canary}-h"))
    check = make_check(
        url,
        headers={"Authorization": f"Bearer {canary}-h", "X-Tenant": f"{canary}-t"},
        query={"api_key": f"{canary}-q", "plain": f"{canary}-p"},
        method="POST",
        body=f"secret={canary}-h",
    )
    result = await run(check)
    assert result.error_class is E.HTTP_5XX
    (hit,) = target.hits("/echo-error")
    assert hit.headers["Authorization"] == f"Bearer {canary}-h" and hit.query["api_key"] == f"{canary}-q"
    assert result.request is not None and result.response_excerpt is not None
    assert canary not in repr(result)
    assert "[REDACTED]" in result.request.url and "[REDACTED]" in result.response_excerpt
    assert result.request.headers["Authorization"] == "[REDACTED]"


async def test_secret_straddling_the_excerpt_cut_is_not_half_shown(target: Target) -> None:
    canary = "CANARY-straddle-0123456789"
    body = "a" * (checks.http.EXCERPT_BYTES - 10) + canary
    url = target.route("/long-error", Reply(status=500, body=body))
    result = await run(make_check(url, headers={"X-Key": canary}))
    assert result.response_excerpt is not None
    assert len(result.response_excerpt) == checks.http.EXCERPT_BYTES
    assert canary[:10] not in result.response_excerpt


async def test_rate_limit_headers_of_the_final_response_become_quota(target: Target) -> None:
    # The probe keeps what it saw (the final response's rate-limit fields, nothing else); the quota side
    # parses them.
    url = target.route(
        "/limits",
        Reply(status=503, headers={"X-RateLimit-Remaining": "4991"}),
        Reply(json=DOC, headers={"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4990", "X-Request-Id": "r1"}),
    )
    result = await run(make_check(url, retry=RETRY))
    assert result.ok
    assert result.rate_limit_headers == (("x-ratelimit-limit", "5000"), ("x-ratelimit-remaining", "4990"))
    [observation] = observed_quota(result)
    assert (observation.policy, observation.used, observation.limit) == ("default", 10, 5000)
