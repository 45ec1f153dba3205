"""Config of an HTTP check (``kind: http``): what to send and what to expect, validated at load time.

Everything a run needs that can be derived from the config (URL with query, plain headers, encoded
body, compiled JSON paths, SSL context, client timeout) is computed once per config object and cached
(``HttpCheckConfig.request_plan``, ``Expectation.compiled_json``), so a run only sends, reads and
compares.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal

import aiohttp
import jsonpath_rfc9535
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from checks.auth_config import AuthConfig, absolute_http_url
from checks.base import CheckConfigBase
from checks.json_assertions import JsonAssertion, JsonPath, compile_path
from checks.timing import ssl_context
from integration_kit.durations import Duration
from integration_kit.oauth2 import basic_authorization
from integration_kit.redact import HARMLESS_HEADERS, is_sensitive_name

__all__ = ["Expectation", "HttpCallFields", "HttpCheckConfig", "HttpRequestFields", "RequestPlan"]

_STATUS_RANGE = re.compile(r"^([1-5])xx$|^(\d{3})-(\d{3})$")


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: tuple[tuple[int, int], ...] = Field(
        default=((200, 299),), description="codes (200), ranges ('200-299') or classes ('2xx')"
    )
    json_: dict[str, JsonAssertion] = Field(default_factory=dict, alias="json")
    body_required: bool = Field(default=True, description="a 2xx with an empty body is `empty_body`")
    max_latency: Duration | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        items = value if isinstance(value, list | tuple) else [value]
        out: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
                out.append((item, item))
                continue
            match = _STATUS_RANGE.match(str(item).strip()) if isinstance(item, str) else None
            if match and match.group(1):
                base = int(match.group(1)) * 100
                out.append((base, base + 99))
            elif match and 100 <= int(match.group(2)) <= int(match.group(3)) <= 599:
                out.append((int(match.group(2)), int(match.group(3))))
            else:
                raise ValueError(
                    f"expected HTTP status codes (200), ranges ('200-299') or classes ('2xx'), got {item!r}"
                )
        return tuple(out)

    @field_validator("json_", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        for path in value if isinstance(value, dict) else ():
            try:
                compile_path(path)  # cached: the run reuses this compiled query
            except jsonpath_rfc9535.JSONPathError as exc:
                raise ValueError(f"invalid JSON path {path!r}: {exc}") from None
        return value

    def status_ok(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.status)

    @cached_property
    def compiled_json(self) -> tuple[tuple[str, JsonPath, JsonAssertion], ...]:
        return tuple((path, compile_path(path), assertion) for path, assertion in self.json_.items())


class HttpRequestFields(BaseModel):
    """Where a request goes and how it connects: shared by every kind that sends HTTP requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    connect_timeout: Duration = 5.0
    follow_redirects: bool = True
    max_redirects: int = Field(default=10, ge=0)
    verify_tls: bool = True
    auth: AuthConfig | None = Field(default=None, description="none given: the integration's auth, if any")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return absolute_http_url(value)

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpRequestFields:
        url = URL(self.url)
        if url.user is None and url.password is None:
            return self
        if any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("credentials in the url (user:password@) and an Authorization header: keep one")
        if self.auth is not None and self.auth.kind != "none":
            raise ValueError("credentials in the url (user:password@) and auth: keep one")
        return self

    def secret_values(self) -> list[str]:
        """Header and query values are secret unless the header is one that never carries credentials
        (``integration_kit.redact.HARMLESS_HEADERS``, the short, closed list); credentials in the URL and
        the Basic header made of them, and the values of the URL's credential-named query parameters
        (``?token=…``); and every credential of ``auth``."""
        headers = [v for k, v in self.headers.items() if k.lower() not in HARMLESS_HEADERS]
        own = [v.get_secret_value() for v in (*headers, *self.url_params().values())]
        url = URL(self.url)  # parsed once here: at 50,000 checks a second parse of each URL cost ~0.9 s
        if url.user is not None or url.password is not None:
            own += [url.user or "", url.password or "", _url_basic(url)]
        own += [v for k, v in url.query.items() if is_sensitive_name(k)]
        return own + (self.auth.secret_values() if self.auth is not None else [])

    def url_params(self) -> Mapping[str, SecretStr]:
        """Query parameters added to the URL (a kind whose config has them says so)."""
        return {}

    def targets(self) -> tuple[str, ...]:
        """The URLs the check's requests go to, as configured (``CheckConfigBase.targets``)."""
        return (self.url,)

    def plan(
        self, method: str, data: bytes | None, content_type: str | None = None, *, url: URL | None = None,
        headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
    ) -> RequestPlan:
        """The request with this URL, query and headers (or the given ones: a flow step's, with its
        templates filled in); holds secrets in the clear: never shown.

        Credentials in the URL become its Authorization header (what aiohttp would send), so that an
        auth header added per attempt (an integration's ``auth:``) replaces them instead of making
        aiohttp refuse the request."""
        if headers is None:
            headers = {k: v.get_secret_value() for k, v in self.headers.items()}
        headers = dict(headers)
        if content_type is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = content_type
        if url is None:
            url = URL(self.url)
        if url.user is not None or url.password is not None:
            headers["Authorization"] = _url_basic(url)
            url = url.with_user(None)
        if params is None:
            params = {k: v.get_secret_value() for k, v in self.url_params().items()}
        if params:
            url = url.update_query(params)
        return RequestPlan(
            method=method,
            url=url,
            headers=headers,
            data=data,
            ssl=ssl_context(self.verify_tls),
            timeout=_connect_timeout(self.connect_timeout),
        )


@lru_cache(maxsize=64)
def _connect_timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    """One (frozen) timeout object per connect timeout, not one per check's plan (80 B each)."""
    return aiohttp.ClientTimeout(total=None, connect=seconds)


def _url_basic(url: URL) -> str:
    return basic_authorization(url.user or "", url.password or "")


class HttpCallFields(HttpRequestFields):
    """One plain HTTP request and what its response must look like."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    query: dict[str, SecretStr] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    expect: Expectation = Field(default_factory=Expectation)

    def url_params(self) -> Mapping[str, SecretStr]:
        return self.query

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_body(self) -> HttpCallFields:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        return self

    @cached_property
    def request_plan(self) -> RequestPlan:
        """What every run sends, derived once. Holds secrets in the clear: never shown anywhere."""
        if self.json_body is not None:
            return self.plan(self.method, json.dumps(self.json_body, separators=(",", ":")).encode(),
                             "application/json")
        return self.plan(self.method, None if self.body is None else self.body.encode())


class HttpCheckConfig(HttpCallFields, CheckConfigBase):
    kind: Literal["http"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestPlan:
    method: str
    url: URL
    headers: Mapping[str, str]
    data: bytes | None
    ssl: ssl.SSLContext
    timeout: aiohttp.ClientTimeout
