"""The kit's aiohttp middleware against a vendor on loopback that misbehaves on purpose: the probes'
classes, retries under the probes' policy (Retry-After honoured, never past the deadline), the typed
error with the request redacted — in the error and in the logs."""

from __future__ import annotations

import base64
import itertools
import logging
import time

import aiohttp
import pytest
from targets import DOC, Reply, Target, closed_port

from integration_kit.calls import CallError
from integration_kit.client import Integration
from integration_kit.errors import ErrorClass
from integration_kit.retry import RetryPolicy

CANARY = "sk_live_CANARY_9f8e7d6c5b4a"
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


def vendor(**options: object) -> Integration:
    settings: dict[str, object] = {"retry": FAST, "timeout": 5.0, "secrets": [CANARY], **options}
    return Integration("payments", **settings)  # type: ignore[arg-type]


async def test_a_good_answer_passes_through_and_the_body_stays_readable(target: Target) -> None:
    kit = vendor()
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http, http.get(target.url("/ok")) as resp:
        assert resp.status == 200
        assert await resp.json() == DOC  # the middleware read it to check it; the caller reads it again
    assert kit.stats.calls == 1 and kit.stats.failed == 0


async def test_a_503_is_retried_and_the_retry_succeeds(target: Target) -> None:
    url = target.route("/flaky", Reply(status=503), Reply(json={"id": "x"}))
    kit = vendor()
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http, http.get(url) as resp:
        assert (resp.status, await resp.json()) == (200, {"id": "x"})
    assert len(target.hits("/flaky")) == 2


@pytest.mark.parametrize("status", [429, 403])  # a 403 with Retry-After is a rate limit too (GitHub's secondary)
async def test_retry_after_is_honoured(target: Target, status: int) -> None:
    url = target.route("/limited", Reply(status=status, headers={"Retry-After": "0.4"}), Reply(json={}))
    kit = vendor()
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http, http.get(url) as resp:
        assert resp.status == 200
    first, second = target.hits("/limited")
    assert second.at - first.at >= 0.4


async def test_a_403_for_a_used_up_rate_limit_is_rate_limited_and_not_retried_before_its_reset(target: Target) -> None:
    kit = vendor()
    used_up = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 600)}
    url = target.route("/primary", Reply(status=403, headers=used_up))
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
        with pytest.raises(CallError) as caught:
            await http.get(url)
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert "rate_limited: 403 Forbidden (x-ratelimit-remaining: 0)" in str(caught.value)
    assert len(target.hits("/primary")) == 1  # the reset ends past the deadline: no retry before it


async def test_retries_stop_at_the_deadline(target: Target) -> None:
    url = target.route("/down", Reply(status=503, headers={"Retry-After": "0.3"}))
    kit = vendor(retry=RetryPolicy(attempts=50, backoff=0.01, max_backoff=0.05), timeout=1.15)
    called = time.monotonic()  # the loop's clock, the deadline's
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
        with pytest.raises(CallError) as caught:
            await http.get(url)
    ended = time.monotonic()
    err = caught.value
    # The vendor's 503; or the deadline's timeout if a loaded machine still had the last attempt in flight then
    # (the deadline ends an attempt too: it had 0.25 s for an answer that comes at once).
    assert (err.error_class, err.status) in {(ErrorClass.HTTP_5XX, 503), (ErrorClass.TIMEOUT, None)}, err
    assert err.retryable
    # Judged by the attempts the vendor saw, not by the machine's speed (a loaded machine wakes late: the
    # fourth attempt once woke 62 ms past a 1 s deadline; a bound on the call's seconds measures the machine).
    # Retry-After honoured: 0.3 s apart at least, so the 1.15 s deadline leaves room for four attempts at most
    # (0, 0.3, 0.6, 0.9; the next wait would end at 1.2) where 50 were allowed; fewer if the loop woke late.
    hits = target.hits("/down")
    assert err.attempts == len(hits) <= 4
    assert all(later.at - earlier.at >= 0.3 for earlier, later in itertools.pairwise(hits))
    # And it gave up for the deadline, not before: one more wait would have ended at or past it. (That no wait
    # runs past the deadline is the retry runner's decision, tested on a fake clock in test_retry.py.)
    assert ended + 0.3 >= called + 1.15
    assert f"({len(hits)} attempts)" in str(err)


async def test_a_non_retryable_failure_raises_once_with_the_request_redacted(target: Target, caplog) -> None:
    url = target.route("/charge", Reply(status=404, json={"error": f"no charge for key {CANARY}"}))
    kit = vendor()
    headers = {"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY[3:], "Accept": "application/json"}
    with caplog.at_level(logging.DEBUG, logger="integration_kit"):
        async with aiohttp.ClientSession(middlewares=(kit.middleware,), headers=headers) as http:
            with pytest.raises(CallError) as caught:
                await http.get(url, params={"api_key": CANARY, "limit": "3"})
    err = caught.value
    assert len(target.hits("/charge")) == 1  # a 404 is not retried
    assert (err.error_class, err.status, err.attempts, err.retryable) == (ErrorClass.HTTP_4XX, 404, 1, False)
    assert err.detail == "http_4xx: 404 Not Found"
    assert err.request.method == "GET"
    assert err.request.url.endswith("/charge?api_key=[REDACTED]&limit=[REDACTED]")  # every query value
    assert err.request.headers["Authorization"] == err.request.headers["X-Api-Key"] == "[REDACTED]"
    assert err.request.headers["Accept"] == "application/json"
    assert err.response_excerpt is not None and "no charge for key [REDACTED]" in err.response_excerpt
    shown = " ".join([str(err), repr(err), repr(err.request), err.response_excerpt, caplog.text])
    assert CANARY not in shown and CANARY[3:] not in shown
    assert f"payments: GET {err.request.url} failed: http_4xx: 404 Not Found (1 attempt)" in caplog.text


async def test_credentials_the_request_carried_are_masked_where_the_vendor_echoes_them_unlisted(
    target: Target, caplog
) -> None:
    """``secrets`` left empty, as a service that relies on the request's own redaction does: the
    Authorization header, a key in a header of any name, a URL password and a token query value are
    masked in the excerpt too when the vendor's error page repeats the request (they leaked there)."""
    url = target.route("/me", Reply(status=401, echo=True))
    kit = vendor(secrets=())
    token, key = "tok_UNLISTED_1a2b3c", "key_UNLISTED_4d5e6f"
    password, query_token = "pw_UNLISTED_7g8h", "qt_UNLISTED_9i0j"
    calls = [  # aiohttp refuses an Authorization header beside a URL password: two calls
        ({"Authorization": f"Bearer {token}", "X-Vendor-Key": key}, url, {"access_token": query_token}),
        ({}, url.replace("http://", f"http://svc:{password}@"), {}),
    ]
    errors: list[CallError] = []
    with caplog.at_level(logging.DEBUG, logger="integration_kit"):
        for headers, to, params in calls:
            async with aiohttp.ClientSession(middlewares=(kit.middleware,), headers=headers) as http:
                with pytest.raises(CallError) as caught:
                    await http.get(to, params=params)
            errors.append(caught.value)
    shown = caplog.text
    for err in errors:
        assert err.error_class == ErrorClass.AUTH
        assert err.response_excerpt is not None and "[REDACTED]" in err.response_excerpt
        shown += " ".join([str(err), repr(err), err.response_excerpt])
    basic = base64.b64encode(f"svc:{password}".encode()).decode()  # what aiohttp sends for a URL password
    for secret in (token, key, password, query_token, basic):
        assert secret not in shown, secret


@pytest.mark.parametrize(
    ("reply", "options", "error_class", "detail"),
    [
        (Reply(body=b"", headers={"Content-Type": "application/json"}), {}, ErrorClass.EMPTY_BODY,
         "empty_body: 200 with an empty body"),
        (Reply(body=b'{"id": ', headers={"Content-Type": "application/json"}), {}, ErrorClass.MALFORMED_JSON,
         "malformed_json: Expecting value at line 1 column 8"),
        (Reply(json={"data": {}}), {"required": ("data.id",)}, ErrorClass.MISSING_FIELD,
         "missing_field: data.id"),
        (Reply(json={"items": [{"email": None}]}), {"not_null": ("items.0.email",)}, ErrorClass.NULL_FIELD,
         "null_field: items.0.email"),
        (Reply(body=b"plain text"), {"json": True}, ErrorClass.MALFORMED_JSON,
         "malformed_json: Expecting value at line 1 column 1"),
    ],
)
async def test_the_body_is_checked_like_a_probe_checks_it(
    target: Target, reply: Reply, options: dict[str, object], error_class: ErrorClass, detail: str
) -> None:
    url = target.route("/body", reply)
    kit = vendor()
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
        with pytest.raises(CallError) as caught:
            await http.get(url, middlewares=kit.expect(**options))  # type: ignore[arg-type]
    assert (caught.value.error_class, caught.value.detail) == (error_class, detail)
    assert len(target.hits("/body")) == 1  # contract violations are not retried


async def test_a_hanging_vendor_is_a_timeout_within_the_deadline(target: Target) -> None:
    url = target.route("/slow", Reply(json={}, delay=3.0))
    kit = vendor(timeout=0.5)
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
        with pytest.raises(CallError) as caught:
            await http.get(url)
    assert caught.value.error_class is ErrorClass.TIMEOUT
    assert caught.value.detail.startswith("timeout: no response headers within")
    assert target.hits("/slow") and target.answered("/slow") == 0  # the deadline ended the wait, not the vendor


async def test_a_refused_connection_is_retried_then_raised_as_connect() -> None:
    kit = vendor()
    async with aiohttp.ClientSession(middlewares=(kit.middleware,)) as http:
        with pytest.raises(CallError) as caught:
            await http.get(f"http://127.0.0.1:{closed_port()}/x")
    assert (caught.value.error_class, caught.value.attempts) == (ErrorClass.CONNECT, 3)
    assert kit.stats.calls == 1 and kit.stats.failed == 1


async def test_an_accepted_status_list_makes_a_404_an_answer(target: Target) -> None:
    url = target.route("/lookup", Reply(status=404, json={"error": "not found"}))
    kit = vendor()
    async with (
        aiohttp.ClientSession(middlewares=(kit.middleware,)) as http,
        http.get(url, middlewares=kit.expect(status=(200, 404))) as resp,
    ):
        assert resp.status == 404
