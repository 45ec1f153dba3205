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
from functools import cached_property
from typing import Any, Literal

import aiohttp
import jsonpath_rfc9535
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from checks.base import CheckConfigBase
from checks.json_assertions import JsonAssertion, compile_path
from checks.timing import ssl_context
from integration_kit.durations import Duration
from integration_kit.redact import HARMLESS_HEADERS

__all__ = ["Expectation", "HttpCheckConfig", "RequestPlan"]

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
    def compiled_json(self) -> tuple[tuple[str, jsonpath_rfc9535.JSONPathQuery, JsonAssertion], ...]:
        return tuple((path, compile_path(path), assertion) for path, assertion in self.json_.items())


class HttpCheckConfig(CheckConfigBase):
    kind: Literal["http"]
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: str
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    query: dict[str, SecretStr] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    connect_timeout: Duration = 5.0
    follow_redirects: bool = True
    max_redirects: int = Field(default=10, ge=0)
    verify_tls: bool = True
    expect: Expectation = Expectation()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"expected an http(s) URL, got {value!r}: {exc}") from None
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError(f"expected an absolute http:// or https:// URL with a host, got {value!r}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_body(self) -> HttpCheckConfig:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        return self

    @cached_property
    def request_plan(self) -> RequestPlan:
        """What every run sends, derived once. Holds secrets in the clear: never shown anywhere."""
        headers = {k: v.get_secret_value() for k, v in self.headers.items()}
        data: bytes | None = None
        if self.json_body is not None:
            data = json.dumps(self.json_body, separators=(",", ":")).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        elif self.body is not None:
            data = self.body.encode()
        url = URL(self.url)
        if self.query:
            url = url.update_query({k: v.get_secret_value() for k, v in self.query.items()})
        return RequestPlan(
            method=self.method,
            url=url,
            headers=headers,
            data=data,
            ssl=ssl_context(self.verify_tls),
            timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout),
        )

    def secret_values(self) -> list[str]:
        """Header and query values are secret unless the header is one that never carries credentials
        (``integration_kit.redact.HARMLESS_HEADERS``, the short, closed list)."""
        headers = [v for k, v in self.headers.items() if k.lower() not in HARMLESS_HEADERS]
        return [v.get_secret_value() for v in (*headers, *self.query.values())]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestPlan:
    method: str
    url: URL
    headers: Mapping[str, str]
    data: bytes | None
    ssl: ssl.SSLContext
    timeout: aiohttp.ClientTimeout
