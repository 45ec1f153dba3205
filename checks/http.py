"""HTTP probe: one request (with retries) against an integration's API, classified per SPEC.md.

Config model only for now; the probe itself is implemented in this module as ``probe(check, ctx)``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import jsonpath_rfc9535
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from checks.base import CheckConfigBase
from monitor.durations import Duration

JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]
_STATUS_RANGE = re.compile(r"^([1-5])xx$|^(\d{3})-(\d{3})$")


class JsonAssertion(BaseModel):
    """Assertions on the node(s) a JSON path selects. A path must be present unless ``present: false``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    present: bool = True
    not_null: bool = False
    type: JsonType | None = None
    equals: Any = None
    regex: re.Pattern[str] | None = None
    non_empty: bool = False

    @field_validator("regex", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value


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
                jsonpath_rfc9535.compile(path)
            except jsonpath_rfc9535.JSONPathError as exc:
                raise ValueError(f"invalid JSON path {path!r}: {exc}") from None
        return value

    def status_ok(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.status)


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

    def secret_values(self) -> list[str]:
        """Every header and query value: they often hold credentials and are never shown."""
        return [v.get_secret_value() for v in (*self.headers.values(), *self.query.values())]


async def probe(check: HttpCheckConfig, ctx: Any) -> Any:  # replaced by the real probe
    raise NotImplementedError
