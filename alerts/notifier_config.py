"""Config models of the notifier plug-ins (``alerting.slack``, ``alerting.alertmanager``, ``alerting.console``).

Kept apart from alerts/config.py (rules) so both can change independently; AlertingConfig imports these.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from alerts.model import Severity
from integration_kit.durations import Duration
from integration_kit.oauth2 import basic_authorization

_SLACK_TOKEN = re.compile(r"^xox[bp]-[A-Za-z0-9-]+$")


class NotifierConfigBase(BaseModel):
    """What every notifier plug-in accepts (see alerts/notifiers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_severity: Severity = Field(
        default=Severity.INFO, description="alerts below this severity are not sent by this notifier"
    )


def empty_is_none(value: Any) -> Any:
    """A ``mode="before"`` validator: an empty string (an unset ``${VAR:-}``) means "not set"."""
    return None if value == "" else value


def _http_url(value: str, what: str) -> str:
    """https, or http to a loopback address only (the tests' fake Slack)."""
    url = urlsplit(value)
    if url.scheme == "https" and url.hostname:
        return value
    if url.scheme == "http" and url.hostname in ("127.0.0.1", "localhost", "::1"):
        return value
    raise ValueError(f"{what} must be an https:// URL (http:// only to 127.0.0.1 for tests)")


class SlackConfig(NotifierConfigBase):
    """Bot-token mode (``token`` + ``channel``: post, update, thread) or incoming webhook (``webhook_url``).

    Both empty (e.g. ``token: "${SLACK_BOT_TOKEN:-}"`` with the variable unset) means Slack is off.
    """

    token: SecretStr | None = None
    channel: str | None = None
    webhook_url: SecretStr | None = None
    base_url: str | None = Field(default=None, description="Slack Web API base URL (tests: loopback)")
    timeout: Duration = Field(default=10.0, description="per request")

    _empty_is_none = field_validator("token", "webhook_url", "channel", "base_url", mode="before")(empty_is_none)

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SLACK_TOKEN.match(value.get_secret_value()):
            raise ValueError("expected a Slack bot or user token starting with xoxb- or xoxp-")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _http_url(value.get_secret_value(), "webhook_url")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "base_url")

    @model_validator(mode="after")
    def _mode(self) -> SlackConfig:
        if self.token is not None and self.webhook_url is not None:
            raise ValueError("set either token (bot mode) or webhook_url (incoming webhook), not both")
        if self.token is not None and not self.channel:
            raise ValueError('channel is required with token (e.g. "#integration-alerts" or a channel ID)')
        if self.webhook_url is not None and self.channel:
            raise ValueError("channel is fixed by the incoming webhook itself; remove channel or use a token")
        return self

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.webhook_url is not None


class ConsoleConfig(NotifierConfigBase):
    """Prints notifications; the default when no other notifier is configured."""

    stream: Literal["stdout", "stderr", "log"] = "stdout"


# Prometheus label names; names starting with __ are reserved for Prometheus' own use.
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Labels the monitor sets on every alert it posts to Alertmanager (alerts/notifiers/alertmanager/payload.py).
ALERTMANAGER_OWN_LABELS = frozenset(
    {"alertname", "integration", "check", "quota", "target", "severity", "rule", "sender"}
)


def _alertmanager_url(url: str) -> str:
    """A base URL (an empty one is allowed here and dropped by the model: an unset ``${VAR:-}``)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:  # checked first: never echo them
        raise ValueError("credentials do not belong in the URL: use basic_auth or bearer_token")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL such as http://alertmanager:9093, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"expected a base URL without query or fragment, got {url!r}")
    return url.rstrip("/")


AlertmanagerUrl = Annotated[str, AfterValidator(_alertmanager_url)]


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1)
    password: SecretStr

    @property
    def header(self) -> str:
        """The ``Authorization`` value (RFC 7617, UTF-8)."""
        return basic_authorization(self.username, self.password.get_secret_value())

    def secret_values(self) -> list[str]:
        """The password, and the header made of it: an Alertmanager (or a proxy) that echoes the request
        in an error would show it base64-encoded."""
        return [self.password.get_secret_value(), self.header]


class AlertmanagerConfig(NotifierConfigBase):
    """Posts the current alerts to Alertmanager's ``/api/v2/alerts`` on every evaluation (as Prometheus does),
    to every URL (an Alertmanager cluster does not share alerts between its members; each needs them).

    ``urls`` entries that are empty (``"${ALERTMANAGER_URL:-}"`` with the variable unset) are dropped; none
    left means the Alertmanager route is off.
    """

    urls: tuple[AlertmanagerUrl, ...] = Field(
        description="Alertmanager base URLs (http:// or https://, with the path prefix if it has one)"
    )
    basic_auth: BasicAuth | None = None
    bearer_token: SecretStr | None = None
    timeout: Duration = Field(default=10.0, gt=0, description="per request")
    verify_tls: bool = True
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the Alertmanager's certificate")
    labels: dict[str, str] = Field(
        default_factory=dict, description="extra labels on every alert (team, environment…); the same on every replica"
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _drop_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        urls = tuple(url for url in value if url)
        if len(set(urls)) != len(urls):
            raise ValueError("the same URL is listed twice")
        return urls

    _empty_is_none = field_validator("bearer_token", mode="before")(empty_is_none)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, label_value in value.items():
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"label name {name!r} must match [A-Za-z_][A-Za-z0-9_]* and not start with __")
            if name in ALERTMANAGER_OWN_LABELS:
                raise ValueError(f"label {name!r} is set by the monitor itself; choose another name")
            if not label_value:
                raise ValueError(f"label {name!r} has an empty value (Alertmanager treats it as absent)")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA file not found: {value}")
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(f"{value} is not a readable PEM CA bundle ({exc})") from None
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> AlertmanagerConfig:
        if self.basic_auth is not None and self.bearer_token is not None:
            raise ValueError("set either basic_auth or bearer_token, not both")
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file is only used with verify_tls: true")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.urls)
