"""Config models of the notifier plug-ins (``alerting.slack``, ``alerting.console``).

Kept apart from alerts/config.py (rules) so both can change independently; AlertingConfig imports these.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from alerts.model import Severity
from integration_kit.durations import Duration

_SLACK_TOKEN = re.compile(r"^xox[bp]-[A-Za-z0-9-]+$")


class NotifierConfigBase(BaseModel):
    """What every notifier plug-in accepts (see alerts/notifiers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_severity: Severity = Field(
        default=Severity.INFO, description="alerts below this severity are not sent by this notifier"
    )


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

    @field_validator("token", "webhook_url", "channel", "base_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

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
