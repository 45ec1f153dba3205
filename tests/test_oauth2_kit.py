"""The kit's auth pieces without a network: token responses (RFC 6749 §5.1), grants, the rotating
secrets of the redactor and the HMAC signing template, proven with hypothesis where they parse input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from yarl import URL

from integration_kit.errors import ErrorClass
from integration_kit.oauth2 import Token, TokenError, TokenGrant, parse_token_response
from integration_kit.redact import MASK, Redactor
from integration_kit.signing import RequestSigner, decode_key, template_parts

NOW = 1_700_000_000.0


def parse(body: Any) -> Token:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_token_response(raw, obtained_at=NOW, default_lifetime=900)


def test_a_token_response_becomes_a_token() -> None:
    token = parse({"access_token": "at1", "token_type": "bearer", "expires_in": 3599, "refresh_token": "rt2",
                   "scope": "a b"})
    assert token == Token(access_token="at1", token_type="bearer", expires_at=NOW + 3599, obtained_at=NOW,
                          refresh_token="rt2", scope="a b")
    assert token.authorization() == "Bearer at1"
    assert token.renew_at(60) == NOW + 3599 - 60
    assert token.renew_at(3000) == NOW + 3599 / 2  # never more than half the lifetime early


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [("3600", 3600), (120.5, 120.5), (None, 900), ("soon", 900), (0, 900), (-5, 900), (True, 900), ("nan", 900)],
)
def test_expires_in_forms(expires_in: Any, lifetime: float) -> None:
    assert parse({"access_token": "a", "expires_in": expires_in}).expires_at == NOW + lifetime


@pytest.mark.parametrize(
    ("body", "failure"),
    [
        ({"token_type": "bearer"}, (ErrorClass.MISSING_FIELD, "missing_field: token endpoint: access_token")),
        ({"access_token": None}, (ErrorClass.NULL_FIELD, "null_field: token endpoint: access_token")),
        ({"access_token": 5},
         (ErrorClass.ASSERTION_FAILED, "assertion_failed: token endpoint: access_token is not a string")),
        ([1], (ErrorClass.MALFORMED_JSON, "malformed_json: token endpoint: response is not a JSON object")),
        (b"<html>", (ErrorClass.MALFORMED_JSON, "malformed_json: token endpoint: Expecting value at line 1 column 1")),
    ],
)
def test_what_is_not_a_token_response(body: Any, failure: tuple[ErrorClass, str]) -> None:
    with pytest.raises(TokenError) as info:
        parse(body)
    assert info.value.failure == failure


@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["access_token", "expires_in", "token_type", "refresh_token", "scope", "x"]), inner, max_size=5),
    max_leaves=12,
).map(lambda v: json.dumps(v).encode()))
@example(b'{"access_token": "0", "expires_in": 9e-23}')  # a lifetime too short to move the clock: none at all
def test_any_body_is_a_token_or_a_classified_token_error(body: bytes) -> None:
    try:
        token = parse(body)
    except TokenError as exc:
        error_class, detail = exc.failure
        assert detail.startswith(f"{error_class}: token endpoint: ")
        return
    assert isinstance(token.access_token, str) and token.access_token
    assert token.expires_at > NOW
    assert Token.from_json(token.to_json()) == Token(
        access_token=token.access_token, token_type=token.token_type, expires_at=token.expires_at,
        obtained_at=NOW, scope=token.scope,
    )


@given(st.text(max_size=40))
def test_token_from_json_never_raises(text: str) -> None:
    assert Token.from_json(text) is None or isinstance(Token.from_json(text), Token)


def test_grant_form_headers_and_secrets() -> None:
    grant = TokenGrant(token_url="https://auth.example.com/token", client_id="id:1", client_secret="s/ecret+",
                       scopes=("a", "b"), audience="aud", extra_params=(("resource", "r"),))
    assert grant.form() == [("grant_type", "client_credentials"), ("scope", "a b"), ("audience", "aud"),
                            ("resource", "r")]
    # RFC 6749 §2.3.1: form-encoded before Basic encoding
    assert grant.headers()["Authorization"] == "Basic aWQlM0ExOnMlMkZlY3JldCUyQg=="
    assert set(grant.secrets()) == {"s/ecret+", "Basic aWQlM0ExOnMlMkZlY3JldCUyQg=="}
    other = TokenGrant(token_url=grant.token_url, client_id="id:1", client_secret="rotated")
    assert grant.fingerprint() != other.fingerprint()  # a changed secret is a new cache slot
    public = TokenGrant(token_url=grant.token_url, grant_type="refresh_token", client_id="app", refresh_token="rt")
    assert public.form("rt2") == [("grant_type", "refresh_token"), ("refresh_token", "rt2"), ("client_id", "app")]
    assert "Authorization" not in public.headers()
    with pytest.raises(ValueError, match="needs a refresh token"):
        TokenGrant(token_url=grant.token_url, grant_type="refresh_token")


def test_rotating_secrets_stay_masked_for_two_generations_and_the_list_stays_short() -> None:
    redactor = Redactor(["static-secret"])
    for n in range(1000):
        redactor.rotate("oauth2:crm:access", [f"access-token-{n:04d}"])
    text = "static-secret access-token-0999 access-token-0998 access-token-0997"
    assert redactor.text(text) == f"{MASK} {MASK} {MASK} access-token-0997"
    three = Redactor(["static-secret", "access-token-0998", "access-token-0999"])._pattern  # not 1001 secrets
    assert redactor._pattern is not None and three is not None and redactor._pattern.pattern == three.pattern


def test_signing_template_and_key_validation() -> None:
    assert template_parts("{timestamp}\n{method}{path_query}{body}") == ["timestamp", "method", "path_query", "body"]
    with pytest.raises(ValueError, match=r"unknown signing part \{url\}"):
        template_parts("{url}")
    with pytest.raises(ValueError, match="malformed signing template"):
        template_parts("{method")
    with pytest.raises(ValueError, match="not valid hex"):
        decode_key("zz", "hex")
    signer = RequestSigner(key=b"k", template="{method} {path} {query} {host} {body_md5}", header="X-Sig")
    message = signer.message("post", URL("http://h:8080/a%20b?x=1&y=2"), b"", now=NOW, nonce="n")
    assert message == "POST /a%20b x=1&y=2 h:8080 d41d8cd98f00b204e9800998ecf8427e"
