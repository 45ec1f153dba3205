"""The kit's OAuth2 token client on its own (``integration_kit.oauth2.request_token``): what a token
endpoint answers — RFC 6749 error codes, statuses, Retry-After, a connection closed or a reply too slow —
becomes one error class and a detail that names the token endpoint.

The endpoint is a real aiohttp server on loopback (tests/targets.py) answering as scripted. The same
cases through a check (auth headers, caching, the 401 retry, redaction) are in tests/test_auth.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from targets import Reply, Target

from integration_kit.errors import ErrorClass
from integration_kit.oauth2 import TokenError, TokenGrant, request_token


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def failure_of(session: aiohttp.ClientSession, target: Target, reply: Reply, *, within: float = 2.0
                     ) -> TokenError:
    """The TokenError of one token request answered by ``reply``; ``within``: the grant's timeout."""
    target.route("/token", reply)
    grant = TokenGrant(token_url=target.url("/token"), client_id="monitor", client_secret="s3cr3t-client",
                       timeout=within)
    with pytest.raises(TokenError) as raised:
        await request_token(session, grant)
    return raised.value


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, {"error": "invalid_grant"}, (ErrorClass.AUTH, "auth: token endpoint: invalid_grant")),
    (403, {"error": "access_denied"}, (ErrorClass.AUTH, "auth: token endpoint: access_denied")),
    (400, {"error": "made_up_code"}, (ErrorClass.AUTH, "auth: token endpoint: made_up_code")),  # a 400 with a code
    (400, {"error": "temporarily_unavailable"},  # some endpoints send the server's trouble with a 400
     (ErrorClass.HTTP_5XX, "http_5xx: token endpoint: 400 temporarily_unavailable")),
    (500, {"error": "server_error", "error_description": "db down"},
     (ErrorClass.HTTP_5XX, "http_5xx: token endpoint: 500 server_error (db down)")),
    (404, "not found", (ErrorClass.HTTP_4XX, "http_4xx: token endpoint: 404 Not Found")),
    (418, {"error": "made_up_code"}, (ErrorClass.HTTP_4XX, "http_4xx: token endpoint: 418 I'm a Teapot")),
    (302, "", (ErrorClass.UNEXPECTED_STATUS, "unexpected_status: token endpoint: 302 Found")),  # never followed
])
async def test_error_answers_map_to_one_class(
    session: aiohttp.ClientSession, target: Target, status: int, body: Any, expected: tuple[ErrorClass, str]
) -> None:
    reply = Reply(status=status, body=body) if isinstance(body, str) else Reply(status=status, json=body)
    error = await failure_of(session, target, reply)
    assert error.failure == expected and error.status == status
    assert error.excerpt == reply.payload()[:2048]


async def test_retry_after_of_a_throttled_token_request(session: aiohttp.ClientSession, target: Target) -> None:
    error = await failure_of(session, target, Reply(status=429, headers={"Retry-After": "7"}))
    assert error.failure == (ErrorClass.RATE_LIMITED, "rate_limited: token endpoint: 429 Too Many Requests")
    assert error.retry_after == 7.0


async def test_a_connection_closed_before_the_answer(session: aiohttp.ClientSession, target: Target) -> None:
    error = await failure_of(session, target, Reply(close_before_response=True))
    assert error.failure == (ErrorClass.CONNECT,
                             "connect: token endpoint: server closed the connection before responding")
    assert error.status is None


async def test_a_token_answer_sent_in_pieces_is_read_whole(session: aiohttp.ClientSession, target: Target) -> None:
    """A token response that arrives in several pieces (chunked here, 8 bytes at a time; any response
    larger than a segment): its first piece was parsed as the whole answer, ``malformed_json``."""
    target.route("/token", Reply(json={"access_token": "t0k3n-in-pieces", "token_type": "Bearer",
                                       "expires_in": 3600}, drip=0.01, chunk=8))
    grant = TokenGrant(token_url=target.url("/token"), client_id="monitor", client_secret="s3cr3t-client")
    token = await request_token(session, grant)
    assert token.access_token == "t0k3n-in-pieces"


@pytest.mark.parametrize("reply", [
    Reply(delay=2.0, json={"access_token": "late"}),  # no headers in time
    Reply(json={"access_token": "late", "token_type": "Bearer"}, drip=0.5, chunk=8),  # headers, then a slow body
], ids=["headers", "body"])
async def test_an_answer_slower_than_the_timeout(session: aiohttp.ClientSession, target: Target, reply: Reply) -> None:
    """The grant's ``timeout`` bounds the whole request: what did not come in time is the token (the
    README's wording, the check's deadline's too), whatever part of the answer was late."""
    error = await failure_of(session, target, reply, within=0.2)
    assert error.failure == (ErrorClass.TIMEOUT, "timeout: token endpoint: no token within 200ms")
