"""Auth on checks against a real OAuth2 vendor on loopback (tests/oauth2_server.py): client credentials and
refresh grants, tokens cached and renewed before expiry, one refresh-and-retry after a 401, token
endpoint failures reported as such, the token phase; Basic and HMAC signing; secrets never shown."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from oauth2_server import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, OAuth2Server
from targets import Reply, Target
from test_alert_engine import Clock

from checks.base import ProbeContext
from checks.http import HttpCheckConfig, make_session, probe
from integration_kit.errors import ErrorClass
from integration_kit.redact import MASK, Redactor
from integration_kit.results import CheckResult
from integration_kit.token_cache import TokenCache

E = ErrorClass


@pytest.fixture
async def vendor() -> AsyncIterator[OAuth2Server]:
    async with OAuth2Server() as server:
        yield server


def client_credentials(server: OAuth2Server, **fields: Any) -> dict[str, Any]:
    return {"kind": "oauth2_client_credentials", "token_url": server.token_url, "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "scopes": "read:me write:none", **fields}


def make_check(url: str, auth: dict[str, Any] | None, **fields: Any) -> HttpCheckConfig:
    return HttpCheckConfig.model_validate({"name": "me", "kind": "http", "url": url, "auth": auth, **fields})


class Daemonish:
    """What the daemon hands probes: one session, one redactor, one token cache for every run."""

    def __init__(self, *checks: HttpCheckConfig, clock: Callable[[], float] = time.time) -> None:
        self.redactor = Redactor([s for c in checks for s in c.secret_values()])
        self.tokens = TokenCache(on_secret=self.redactor.rotate, clock=clock)

    async def run(self, check: HttpCheckConfig) -> CheckResult:
        async with make_session(limit=0) as session:
            ctx = ProbeContext(integration="crm", redactor=self.redactor, session=session, tokens=self.tokens)
            return await probe(check, ctx)


def shown(result: CheckResult) -> str:
    """Every text of a result that leaves the process."""
    request = result.request
    parts = [result.detail, result.response_excerpt or ""]
    if request is not None:
        parts += [request.url, json.dumps(dict(request.headers)), request.body_excerpt or ""]
    return "\n".join(parts)


# --- client credentials ------------------------------------------------------------------------------


async def test_token_is_fetched_once_and_shared_by_runs(vendor: OAuth2Server) -> None:
    check = make_check(vendor.url("/api/me"), client_credentials(vendor), expect={"json": {"$.id": {"equals": "me"}}})
    daemon = Daemonish(check)
    first = await daemon.run(check)
    second = await daemon.run(check)
    assert first.ok and second.ok, (first, second)
    assert len(vendor.token_requests) == 1
    request = vendor.token_requests[0]
    assert request.form == {"grant_type": "client_credentials", "scope": "read:me write:none"}
    assert request.authorization == "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert vendor.api_hits == [f"Bearer {vendor.issued[0]}"] * 2
    assert first.phases["token"] > 0  # the fetch
    assert second.phases["token"] == 0.0  # from memory
    assert first.attempts == second.attempts == 1


async def test_client_auth_in_the_body_and_extra_params(vendor: OAuth2Server) -> None:
    auth = client_credentials(vendor, client_auth="body", audience="https://api.example.com",
                              extra_params={"resource": "crm"}, scopes=[])
    result = await Daemonish().run(make_check(vendor.url("/api/me"), auth))
    assert result.ok, result
    [request] = vendor.token_requests
    assert request.authorization is None
    assert request.form == {"grant_type": "client_credentials", "audience": "https://api.example.com",
                            "resource": "crm", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


async def test_expiring_tokens_are_renewed_before_expiry_never_used_expired(vendor: OAuth2Server) -> None:
    # The vendor and the token cache on one fake clock, 25 s a run: what a token had left when the vendor saw
    # it is then the product's choice alone, not what a loaded machine took between the token and the call.
    clock = Clock()
    vendor.lifetime, vendor.clock = 100, clock
    check = make_check(vendor.url("/api/me"), client_credentials(vendor, refresh_margin="30s"))
    daemon = Daemonish(check, clock=clock)
    results = []
    for _ in range(7):
        results.append(await daemon.run(check))
        clock.now += 25
    # Every run used a live token (no 401, no refresh-and-retry), one with at least the 30 s margin left:
    # fetched at 0, 75 and 150 s (at 75 s the first had 25 s left, less than the margin).
    assert all(r.ok and r.attempts == 1 for r in results), results
    assert len(vendor.token_requests) == 3
    assert min(vendor.api_left) >= 30, vendor.api_left
    assert vendor.api_hits == [f"Bearer {vendor.issued[n]}" for n in (0, 0, 0, 1, 1, 1, 2)]


async def test_expires_in_as_a_string_is_understood(vendor: OAuth2Server) -> None:
    vendor.lifetime, vendor.expires_in_as_string = 120, True
    check = make_check(vendor.url("/api/me"), client_credentials(vendor))
    daemon = Daemonish(check)
    assert (await daemon.run(check)).ok
    [status] = daemon.tokens.status()
    assert 110 < status["expires_at"] - status["obtained_at"] <= 120


async def test_token_revoked_mid_run_costs_one_refresh_and_no_failure(vendor: OAuth2Server) -> None:
    check = make_check(vendor.url("/api/me"), client_credentials(vendor))
    daemon = Daemonish(check)
    assert (await daemon.run(check)).ok
    vendor.revoke_all()  # the vendor drops its tokens long before expires_in
    result = await daemon.run(check)
    assert result.ok, result
    assert result.error_class is None
    assert result.attempt_classes == (E.AUTH, None)  # the 401, then the retry with a new token: counted
    assert len(vendor.token_requests) == 2
    assert vendor.api_hits == [f"Bearer {vendor.issued[0]}"] * 2 + [f"Bearer {vendor.issued[1]}"]


async def test_a_401_that_persists_is_auth_after_exactly_one_refresh(vendor: OAuth2Server, target: Target) -> None:
    target.route("/api/me", Reply(status=401, json={"error": "invalid_token"}))
    check = make_check(target.url("/api/me"), client_credentials(vendor), retry={"attempts": 3})
    result = await Daemonish(check).run(check)
    assert result.error_class is E.AUTH and result.detail == "auth: 401 Unauthorized", result
    assert len(vendor.token_requests) == 2  # the first token and the one refresh
    assert len(target.hits("/api/me")) == 2
    assert result.attempt_classes == (E.AUTH, E.AUTH)


async def test_403_is_not_a_reason_to_refresh(vendor: OAuth2Server, target: Target) -> None:
    target.route("/api/me", Reply(status=403, json={"error": "insufficient_scope"}))
    result = await Daemonish().run(make_check(target.url("/api/me"), client_credentials(vendor)))
    assert result.error_class is E.AUTH
    assert len(vendor.token_requests) == 1 and len(target.hits("/api/me")) == 1


# --- the token endpoint fails --------------------------------------------------------------------------


async def test_invalid_client_says_token_endpoint_and_shows_the_redacted_token_request(
    vendor: OAuth2Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = client_credentials(vendor, client_secret="cs_CANARY_wrong_secret_0b7a", client_auth="body")
    check = make_check(vendor.url("/api/me"), auth, retry={"attempts": 3})
    result = await Daemonish(check).run(check)
    assert result.error_class is E.AUTH
    assert result.detail == "auth: token endpoint: invalid_client (Client authentication failed)"
    assert result.attempts == 1  # auth is not retried
    assert vendor.api_hits == []  # the API was never called without a token
    request = result.request
    assert request is not None and request.method == "POST" and request.url == vendor.token_url
    assert request.body_excerpt == (
        f"grant_type=client_credentials&scope=read%3Ame+write%3Anone&client_id={CLIENT_ID}&client_secret={MASK}"
    )
    assert "cs_CANARY" not in shown(result) and "cs_CANARY" not in caplog.text
    assert result.status_code == 401
    assert "invalid_client" in (result.response_excerpt or "")


@pytest.mark.parametrize(
    ("status", "body", "error_class", "detail"),
    [
        (400, {"error": "invalid_scope", "error_description": "scope write:none is not allowed"}, E.AUTH,
         "auth: token endpoint: invalid_scope (scope write:none is not allowed)"),
        (400, {"error": "unauthorized_client"}, E.AUTH, "auth: token endpoint: unauthorized_client"),
        (503, {"error": "temporarily_unavailable"}, E.HTTP_5XX,
         "http_5xx: token endpoint: 503 temporarily_unavailable"),
        (502, {"message": "bad gateway"}, E.HTTP_5XX, "http_5xx: token endpoint: 502 Bad Gateway"),
        (429, {}, E.RATE_LIMITED, "rate_limited: token endpoint: 429 Too Many Requests"),
        (200, {"token_type": "bearer"}, E.MISSING_FIELD, "missing_field: token endpoint: access_token"),
    ],
)
async def test_token_endpoint_failures_are_classified(
    vendor: OAuth2Server, status: int, body: dict[str, Any], error_class: ErrorClass, detail: str
) -> None:
    vendor.fail_with = [(status, body)]
    result = await Daemonish().run(make_check(vendor.url("/api/me"), client_credentials(vendor)))
    assert (result.error_class, result.detail) == (error_class, detail)


async def test_a_retryable_token_failure_is_retried_by_the_check_policy(vendor: OAuth2Server) -> None:
    vendor.fail_with = [(503, {"error": "server_error"})]
    check = make_check(vendor.url("/api/me"), client_credentials(vendor),
                       retry={"attempts": 2, "backoff": "10ms", "max_backoff": "10ms"})
    result = await Daemonish(check).run(check)
    assert result.ok, result
    assert result.attempt_classes == (E.HTTP_5XX, None)


async def test_slow_token_endpoint_times_out_within_the_check_deadline(vendor: OAuth2Server) -> None:
    vendor.delay = 2.0
    check = make_check(vendor.url("/api/me"), client_credentials(vendor), timeout="400ms")
    result = await Daemonish(check).run(check)
    assert result.error_class is E.TIMEOUT
    assert result.detail.startswith("timeout: token endpoint: no token within"), result.detail
    assert result.phases["token"] > 0.35
    # The deadline ended the token request, not the vendor's answer (no token was issued: it would come 1.6 s
    # after the deadline, on this loop); a bound on seconds would measure the machine.
    assert vendor.token_requests and vendor.issued == []
    assert vendor.api_hits == []


async def test_concurrent_checks_share_one_token_fetch(vendor: OAuth2Server) -> None:
    vendor.delay = 0.2  # every check asks while the first fetch is still in flight
    checks = [make_check(vendor.url("/api/me"), client_credentials(vendor), name=f"c{i}") for i in range(5)]
    daemon = Daemonish(*checks)
    results = await asyncio.gather(*(daemon.run(c) for c in checks))
    assert all(r.ok for r in results), results
    assert len(vendor.token_requests) == 1
    assert all(r.phases["token"] >= 0.15 for r in results)  # each waited for the shared fetch


# --- refresh token grant --------------------------------------------------------------------------------


async def test_rotated_refresh_tokens_are_followed_and_never_shown(
    vendor: OAuth2Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Each run refreshes because the token cache's clock says the last token is past its renewal time, not
    # because the vendor refused it: with a 0.3 s lifetime on the vendor's clock, a loaded machine could take
    # longer than that from the token's issue to the API call, and the 401's refresh-and-retry added a link.
    vendor.rotate, vendor.lifetime = True, 60
    auth = {"kind": "oauth2_refresh_token", "token_url": vendor.token_url, "refresh_token": REFRESH_TOKEN,
            "client_id": CLIENT_ID}
    check = make_check(vendor.url("/api/me"), auth)
    clock = Clock()
    daemon = Daemonish(check, clock=clock)
    for _ in range(3):
        result = await daemon.run(check)
        assert result.ok and result.attempts == 1, result  # a live token every time: no 401, no retry
        clock.now += 60  # past the token's lifetime on the cache's clock: the next run refreshes
    presented = [r.form["refresh_token"] for r in vendor.token_requests]
    assert presented == [REFRESH_TOKEN, *vendor.refresh_tokens[:2]]  # each rotated one used once, in turn
    for secret in (vendor.refresh_tokens[-1], vendor.issued[-1]):  # learnt at run time: masked from then on
        assert daemon.redactor.text(f"x {secret} y") == f"x {MASK} y"
        assert secret not in caplog.text


async def test_a_rotated_away_refresh_token_is_invalid_grant(vendor: OAuth2Server) -> None:
    vendor.rotate = True
    auth = {"kind": "oauth2_refresh_token", "token_url": vendor.token_url, "refresh_token": REFRESH_TOKEN,
            "client_id": CLIENT_ID}
    check = make_check(vendor.url("/api/me"), auth)
    assert (await Daemonish(check).run(check)).ok
    # Another process with only the configured (now rotated away) refresh token and no shared cache:
    result = await Daemonish(check).run(check)
    assert result.error_class is E.AUTH
    assert result.detail == "auth: token endpoint: invalid_grant (refresh token is invalid or was rotated)"


# --- basic and hmac -------------------------------------------------------------------------------------


async def test_basic_auth_header_is_sent_and_masked(target: Target) -> None:
    target.route("/basic", Reply(status=500, body="nope"))
    check = make_check(target.url("/basic"), {"kind": "basic", "username": "probe", "password": "pw_CANARY_b4s1c"})
    result = await Daemonish(check).run(check)
    [hit] = target.hits("/basic")
    assert hit.headers["Authorization"] == "Basic " + base64.b64encode(b"probe:pw_CANARY_b4s1c").decode()
    assert result.request is not None and result.request.headers["Authorization"] == MASK
    assert "b4s1c" not in shown(result) and "cHJvYmU6cHdfQ0FOQVJZX2I0czFj" not in shown(result)


async def test_hmac_signature_as_coinbase_defines_it(target: Target) -> None:
    key = base64.b64encode(b"k_CANARY_hmac_key_91").decode()
    target.route("/orders", Reply(status=201, json={"id": "o1"}))
    check = make_check(
        target.url("/orders") + "?limit=1",
        {"kind": "hmac", "key": key, "key_encoding": "base64", "header": "CB-ACCESS-SIGN", "encoding": "base64",
         "message": "{timestamp}{method}{path_query}{body}", "timestamp_header": "CB-ACCESS-TIMESTAMP",
         "headers": {"CB-ACCESS-KEY": "key-id-CANARY-33"}},
        method="POST", json={"size": "1"},
    )
    result = await Daemonish(check).run(check)
    assert result.ok, result
    [hit] = target.hits("/orders")
    timestamp = hit.headers["CB-ACCESS-TIMESTAMP"]
    message = f"{timestamp}POST/orders?limit=1" + hit.body.decode()
    expected = base64.b64encode(hmac.new(b"k_CANARY_hmac_key_91", message.encode(), hashlib.sha256).digest()).decode()
    assert hit.headers["CB-ACCESS-SIGN"] == expected
    assert hit.headers["CB-ACCESS-KEY"] == "key-id-CANARY-33"


async def test_hmac_hex_digest_with_prefix_nonce_and_iso_timestamp(target: Target) -> None:
    target.route("/sig", Reply(status=500, body="nope"))
    check = make_check(
        target.url("/sig"),
        {"kind": "hmac", "key": "secret-CANARY-hex", "header": "X-Signature", "prefix": "sha256=",
         "message": "{method}\n{path}\n{timestamp}\n{nonce}\n{body_sha256}", "timestamp_header": "X-Timestamp",
         "timestamp_format": "iso8601", "nonce_header": "X-Nonce"},
    )
    result = await Daemonish(check).run(check)
    [hit] = target.hits("/sig")
    message = f"GET\n/sig\n{hit.headers['X-Timestamp']}\n{hit.headers['X-Nonce']}\n{hashlib.sha256(b'').hexdigest()}"
    digest = hmac.new(b"secret-CANARY-hex", message.encode(), hashlib.sha256).hexdigest()
    assert hit.headers["X-Signature"] == f"sha256={digest}"
    assert result.request is not None and result.request.headers["X-Signature"] == MASK


async def test_auth_none_sends_no_credentials(target: Target) -> None:
    check = make_check(target.url("/ok"), {"kind": "none"})
    assert (await Daemonish(check).run(check)).ok
    assert "Authorization" not in target.hits("/ok")[0].headers
