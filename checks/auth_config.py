"""Config of ``auth:`` — how a check's requests prove who they are — validated at load time.

``auth:`` is set on an integration (every check of it inherits it) or on a check (its own, or
``{kind: none}`` to opt out). Kinds:

* ``oauth2_client_credentials`` — RFC 6749 §4.4: client id + secret for an access token;
* ``oauth2_refresh_token`` — RFC 6749 §6: a refresh token (rotated ones are followed) for an access token;
* ``basic`` — HTTP Basic, user and password;
* ``hmac`` — a signature of parts of each request in a header (``integration_kit.signing``);
* ``none``.

The OAuth2 protocol, token cache and signing live in the kit (``integration_kit.oauth2``,
``token_cache``, ``signing``): these models only validate and hand over. Every credential is a secret
(``secret_values``), the Basic header and the token request's Basic header included.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from yarl import URL

from integration_kit.durations import Duration
from integration_kit.oauth2 import TokenGrant, basic_authorization
from integration_kit.signing import RequestSigner, decode_key, template_parts

_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$"  # an RFC 9110 token


def absolute_http_url(value: str) -> str:
    """The URL checks accept: absolute http(s) with a host; ValueError naming what was expected."""
    try:
        url = URL(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"expected an http(s) URL, got {value!r}: {exc}") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(f"expected an absolute http:// or https:// URL with a host, got {value!r}")
    return value


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def secret_values(self) -> list[str]:
        return []


class _OAuth2(_Auth):
    token_url: str
    scopes: tuple[str, ...] = Field(default=(), description="requested scopes (sent space-separated)")
    audience: str | None = None
    extra_params: dict[str, str] = Field(default_factory=dict, description="more form fields of the token request")
    client_auth: Literal["header", "body"] = Field(
        default="header", description="client id and secret as HTTP Basic (RFC 6749 §2.3.1) or as form fields"
    )
    refresh_margin: Duration = Field(
        default=60.0, description="renew this long before expiry (at most half the lifetime)"
    )
    default_lifetime: Duration = Field(
        default=3600.0, gt=0, description="lifetime of a token whose response has no expires_in"
    )
    timeout: Duration = Field(default=10.0, gt=0,
                              description="of one token request (the check's deadline still applies)")
    verify_tls: bool = True

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        return absolute_http_url(value)

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value

    def _grant(self, **fields: Any) -> TokenGrant:
        return TokenGrant(
            token_url=self.token_url, client_auth=self.client_auth, scopes=self.scopes, audience=self.audience,
            extra_params=tuple(self.extra_params.items()), refresh_margin=self.refresh_margin,
            default_lifetime=self.default_lifetime, timeout=self.timeout, **fields,
        )


class OAuth2ClientCredentials(_OAuth2):
    kind: Literal["oauth2_client_credentials"]
    client_id: str = Field(min_length=1)
    client_secret: SecretStr

    @cached_property
    def grant(self) -> TokenGrant:
        return self._grant(grant_type="client_credentials", client_id=self.client_id,
                           client_secret=self.client_secret.get_secret_value())

    def secret_values(self) -> list[str]:
        return self.grant.secrets()


class OAuth2RefreshToken(_OAuth2):
    kind: Literal["oauth2_refresh_token"]
    refresh_token: SecretStr
    client_id: str | None = None
    client_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _client(self) -> OAuth2RefreshToken:
        if self.client_secret is not None and not self.client_id:
            raise ValueError("client_secret needs a client_id")
        if not self.refresh_token.get_secret_value():
            raise ValueError("refresh_token is empty")
        return self

    @cached_property
    def grant(self) -> TokenGrant:
        secret = self.client_secret.get_secret_value() if self.client_secret is not None else None
        return self._grant(grant_type="refresh_token", client_id=self.client_id, client_secret=secret,
                           refresh_token=self.refresh_token.get_secret_value())

    def secret_values(self) -> list[str]:
        return self.grant.secrets()


class BasicAuth(_Auth):
    kind: Literal["basic"]
    username: str
    password: SecretStr

    @cached_property
    def header(self) -> str:
        return basic_authorization(self.username, self.password.get_secret_value())

    def secret_values(self) -> list[str]:
        return [self.password.get_secret_value(), self.header]


class HmacAuth(_Auth):
    kind: Literal["hmac"]
    key_encoding: Literal["text", "base64", "hex"] = "text"
    key: SecretStr
    algorithm: Literal["sha1", "sha256", "sha384", "sha512"] = "sha256"
    header: str = Field(pattern=_HEADER_NAME, description="the header that carries the signature")
    message: str = Field(description="what is signed: a template of {method} {path} {query} {body} {timestamp}…")
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="written before the digest, e.g. 'sha256='")
    timestamp_header: str | None = Field(default=None, pattern=_HEADER_NAME)
    timestamp_format: Literal["unix", "unix_ms", "iso8601"] = "unix"
    nonce_header: str | None = Field(default=None, pattern=_HEADER_NAME)
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="sent as they are (a key id…); secrets")

    @field_validator("message")
    @classmethod
    def _message(cls, value: str) -> str:
        template_parts(value)
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        decode_key(value.get_secret_value(), info.data.get("key_encoding", "text"))
        return value

    @cached_property
    def signer(self) -> RequestSigner:
        return RequestSigner(
            key=decode_key(self.key.get_secret_value(), self.key_encoding), template=self.message,
            header=self.header, algorithm=self.algorithm, encoding=self.encoding, prefix=self.prefix,
            timestamp_header=self.timestamp_header, timestamp_format=self.timestamp_format,
            nonce_header=self.nonce_header,
        )

    def secret_values(self) -> list[str]:
        return [self.key.get_secret_value(), *(v.get_secret_value() for v in self.headers.values())]


class NoAuth(_Auth):
    kind: Literal["none"]


AUTH_KINDS = (OAuth2ClientCredentials, OAuth2RefreshToken, BasicAuth, HmacAuth, NoAuth)
AUTH_KIND_NAMES = ("oauth2_client_credentials", "oauth2_refresh_token", "basic", "hmac", "none")
AuthConfig = Annotated[
    OAuth2ClientCredentials | OAuth2RefreshToken | BasicAuth | HmacAuth | NoAuth, Field(discriminator="kind")
]
OAuth2Config = OAuth2ClientCredentials | OAuth2RefreshToken

__all__ = [
    "AUTH_KINDS", "AUTH_KIND_NAMES", "AuthConfig", "BasicAuth", "HmacAuth", "NoAuth", "OAuth2ClientCredentials",
    "OAuth2Config", "OAuth2RefreshToken", "absolute_http_url",
]
