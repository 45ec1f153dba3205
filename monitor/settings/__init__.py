"""Configuration: a YAML file, ``${VAR}``/``${VAR:-default}`` expanded from the environment, validated
whole at load time. Every problem is collected (not just the first) and names its path, e.g.
``integrations.stripe.checks[0].timeout: expected a duration like 500ms, 30s, 5m or 4h, got 'soon'``.

Environment variables prefixed ``IM_`` override keys (``IM_MONITOR__LISTEN=127.0.0.1:9000``), as
pydantic-settings does for nested models.

The config models of the parts live where the parts do (checks/, alerts/config.py) or, for the daemon's
own parts, beside this module (``monitor/settings/quota.py``), below the components that read them.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from alerts.config import AlertingConfig, AlertRulesConfig
from alerts.notifier_config import empty_is_none
from alerts.rules import unknown_alert
from checks import PROBES
from checks.auth_config import AUTH_KIND_NAMES, AuthConfig

if TYPE_CHECKING:
    # The real type is the discriminated union of every kind in PROBES, built at import time, which
    # mypy cannot follow; every member is a CheckConfigBase.
    from checks.base import CheckConfigBase as CheckConfig
else:
    from checks import CheckConfig
from alerts.webhook_config import WebhookConfig
from integration_kit.durations import Duration
from monitor.metrics import DURATION_BUCKETS
from monitor.settings.cluster import ClusterConfig
from monitor.settings.compact import compacted
from monitor.settings.quota import HeadersQuotaConfig, QuotaConfig
from monitor.settings.sharing import share_equal_parts, sharing_parts
from monitor.settings.source import (
    MAX_FILE_BYTES,
    Expansion,
    Unreadable,
    decode,
    expand_env,
    join_path,
    load_yaml,
    tree_problems,
)
from monitor.settings.traffic import TrafficConfig

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class ConfigError(Exception):
    """Raised with every problem of a config; ``problems`` holds ``(path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class MonitorSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "0.0.0.0:9478"
    redis_url: SecretStr | None = None
    evaluation_interval: Duration = Field(default=15.0, gt=0, description="alert evaluation and Redis reads")
    max_concurrency: int = Field(default=64, ge=1, description="probes in flight at once, all checks")
    jitter: float = Field(default=0.1, ge=0, le=1, description="share of the interval used as random jitter")
    shutdown_grace: Duration = Field(default=10.0, description="how long SIGTERM waits for in-flight probes")
    log_format: str = Field(default="text", pattern="^(text|json)$")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    api_token: SecretStr | None = Field(
        default=None, description="bearer token for POST/DELETE on /api/* (needed unless listen is loopback)"
    )
    status_details: bool = Field(
        default=True, description="false: /api/status leaves out response excerpts, request details, key names"
    )
    external_url: str | None = Field(
        default=None, description="the URL people reach this monitor at (links in alerts); default from listen"
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    probe_duration_buckets: tuple[Duration, ...] = Field(
        default=DURATION_BUCKETS, max_length=30,
        description="each check's integration_probe_duration_seconds bucket bounds; [] keeps count, sum, +Inf",
    )

    @field_validator("probe_duration_buckets")
    @classmethod
    def _increasing_bounds(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        # Each bound is one series per check: 13 of a check's ~25 with the defaults.
        if any(bound <= 0 for bound in value) or any(a >= b for a, b in itertools.pairwise(value)):
            raise ValueError(f"expected bounds above 0s in increasing order, such as [100ms, 1s, 5s], "
                             f"got {list(value)}")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    _empty_is_none = field_validator("redis_url", "api_token", "external_url", mode="before")(empty_is_none)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("external_url")
    @classmethod
    def _external_url_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"expected an http:// or https:// URL without query, such as https://monitor.example.com, "
                             f"got {value!r}")
        return value.rstrip("/")

    @field_validator("cluster")
    @classmethod
    def _cluster_needs_redis(cls, value: ClusterConfig, info: ValidationInfo) -> ClusterConfig:
        if value.enabled and "redis_url" in info.data and info.data["redis_url"] is None:
            raise ValueError("enabled is true but monitor.redis_url is not set: replicas find each other in Redis")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    @property
    def public_url(self) -> str:
        """``external_url``, or ``http://HOST:PORT`` from ``listen`` (the machine's name for a wildcard address,
        as Prometheus does for its own external URL)."""
        if self.external_url:
            return self.external_url
        host, port = self.host_port
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def clustered(self) -> bool:
        """Whether this daemon coordinates with its replicas (``cluster.enabled``, default: Redis is set)."""
        enabled = self.cluster.enabled
        return self.redis_url is not None if enabled is None else enabled


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9478`` for IPv6) → (host, port); ValueError naming what was expected."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT such as 0.0.0.0:9478, got {value!r}")
    return host.strip("[]"), int(port)


class IntegrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    notes: Path | None = Field(default=None, description="markdown file of the vendor's quirks")
    runbook_url: str | None = None
    auth: AuthConfig | None = Field(default=None, description="every check's auth unless it has its own")
    checks: list[CheckConfig] = Field(default_factory=list)
    quotas: list[QuotaConfig] = Field(default_factory=list)
    webhooks: WebhookConfig | None = None
    traffic: TrafficConfig | None = Field(default=None, description="read the services' real-traffic counters")
    alerts: AlertRulesConfig = AlertRulesConfig()
    probe_backoff_above: float = Field(
        default=0.90, gt=0, description="quota usage ratio above which this integration's probes slow down"
    )

    @model_validator(mode="after")
    def _references(self) -> IntegrationConfig:
        problems = reference_problems(
            [c.name for c in self.checks], [(q.name, q.check if isinstance(q, HeadersQuotaConfig) else None)
                                            for q in self.quotas]
        )
        if problems:
            raise _ReferenceProblem("; ".join(f"{path}: {msg}" for path, msg in problems))
        if self.auth is not None:
            # Checks without their own auth take the integration's: each check config is then complete
            # on its own (a run, the `probe` command and a reload need nothing else), and checks sharing
            # one auth share its token (the token cache keys on the credential, not on the check).
            inherited = [
                c.model_copy(update={"auth": self.auth})
                if "auth" in type(c).model_fields and getattr(c, "auth", None) is None else c
                for c in self.checks
            ]
            object.__setattr__(self, "checks", inherited)  # frozen model: set once, while validating
        share_equal_parts(self.checks)  # checks by the thousand hold alike (monitor/settings/sharing.py)
        return self


class _ReferenceProblem(ValueError):
    """A cross-reference error inside an integration. ``parse_config`` finds these itself, on the raw
    data and with exact paths, so they show even when another field of the integration is invalid."""


def reference_problems(check_names: list[Any], quotas: list[tuple[Any, Any]]) -> list[tuple[str, str]]:
    """Duplicate check or quota names and headers quotas naming an unknown check, as (relative path,
    message). A quota's name is its ``quota`` label and part of its alert's key, whatever its source:
    two quotas of one integration under one name would overwrite each other's series and alerts.

    ``quotas`` holds (name, check) pairs, check None for quotas that do not read a check's headers.
    """
    problems, first = _duplicate_names("checks", "check", check_names)
    problems += _duplicate_names("quotas", "quota", [name for name, _ in quotas])[0]
    known = ", ".join(str(n) for n in first) or "none"
    for i, (name, check) in enumerate(quotas):
        if isinstance(check, str) and check not in first:
            problems.append((
                f"quotas[{i}].check",
                f"quota {name!r} reads the headers of check {check!r}, which is not defined (checks: {known})",
            ))
    return problems


def _duplicate_names(section: str, what: str, names: list[Any]) -> tuple[list[tuple[str, str]], dict[Any, int]]:
    """Problems for names given twice in ``section`` (a list of ``what``), and where each name came first."""
    problems: list[tuple[str, str]] = []
    first: dict[Any, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str):
            continue  # validation says what is wrong with it
        if name in first:
            problems.append((f"{section}[{i}].name", f"duplicate {what} name {name!r} (also {section}[{first[name]}])"))
        else:
            first[name] = i
    return problems, first


def _raw_reference_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    integrations = data.get("integrations")
    if not isinstance(integrations, Mapping):
        return []
    problems: list[tuple[str, str]] = []
    for name, integ in integrations.items():
        if not isinstance(integ, Mapping):
            continue
        checks = integ.get("checks")
        quotas = integ.get("quotas")
        check_names = [c.get("name") for c in checks if isinstance(c, Mapping)] if isinstance(checks, list) else []
        quota_refs = [
            (q.get("name"), q.get("check") if q.get("source") == "headers" else None) if isinstance(q, Mapping)
            else (None, None)
            for q in (quotas if isinstance(quotas, list) else [])
        ]
        base = join_path("integrations", name)
        problems += [(f"{base}.{path}", msg) for path, msg in reference_problems(check_names, quota_refs)]
    return problems


def _raw_silence_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Config-file silences naming an integration the config lacks or an alert no rule raises: they would
    mute nothing, silently (the silence command and /api/silences refuse the same)."""
    alerting, integrations = data.get("alerting"), data.get("integrations")
    silences = alerting.get("silences") if isinstance(alerting, Mapping) else None
    if not isinstance(silences, list):
        return []
    known = integrations if isinstance(integrations, Mapping) else {}
    problems: list[tuple[str, str]] = []
    for i, silence in enumerate(silences):
        if not isinstance(silence, Mapping):
            continue  # validation says what is wrong with it
        integration, alert = silence.get("integration", "*"), silence.get("alert", "*")
        if isinstance(integration, str) and integration not in ("*", "") and integration not in known:
            names = ", ".join(str(n) for n in known) or "none"
            problems.append((f"alerting.silences[{i}].integration",
                             f"unknown integration {integration!r} (configured: {names})"))
        if isinstance(alert, str) and alert and (problem := unknown_alert(alert)) is not None:
            problems.append((f"alerting.silences[{i}].alert", problem))
    return problems


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix="IM_", env_nested_delimiter="__", case_sensitive=False
    )

    monitor: MonitorSection = MonitorSection()
    # The name is checked as the key (not by a validator of the whole mapping, which runs only once every
    # integration in it is valid: a bad name went unsaid beside any other problem).
    integrations: dict[Annotated[str, StringConstraints(pattern=_NAME)], IntegrationConfig] = Field(
        default_factory=dict
    )
    alerting: AlertingConfig = AlertingConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: IM_* overrides what the file says.
        return env_settings, init_settings

    def secret_values(self) -> list[str]:
        """Every configured secret value, for the redactor."""
        return [secret for name in type(self).model_fields for secret in _secrets(getattr(self, name))]

    def iter_checks(self) -> Iterator[tuple[str, Any]]:
        for integration, cfg in self.integrations.items():
            for check in cfg.checks:
                yield integration, check


def _secrets(model: Any) -> Iterator[str]:
    if isinstance(model, SecretStr):
        yield model.get_secret_value()
    elif isinstance(model, BaseModel) and callable(own := getattr(model, "secret_values", None)):
        yield from own()  # the model knows which of its values are secret
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            yield from _secrets(getattr(model, name))
    elif isinstance(model, Mapping):
        for v in model.values():
            yield from _secrets(v)
    elif isinstance(model, list | tuple):
        for v in model:
            yield from _secrets(v)


def _loc_to_path(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn pydantic's loc into ``a.b[0].c``, dropping the discriminator tags pydantic inserts."""
    path, node = "", data
    for part in loc:
        if part == "[key]":  # the mapping's key itself is wrong: the path so far names it
            continue
        if isinstance(node, list) and isinstance(part, int):
            path, node = f"{path}[{part}]", node[part] if part < len(node) else None
        elif isinstance(node, dict) and part in node:
            path, node = join_path(path, part), node[part]
        elif isinstance(node, dict) and isinstance(part, str) and (
            part in PROBES or part in ("redis", "headers") or part in AUTH_KIND_NAMES
        ):
            continue  # union tag: config.kind / source selected this branch
        else:
            path, node = join_path(path, part), None
    return path


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error["msg"])
    msg = msg.removeprefix("Value error, ")
    if error["type"] == "string_pattern_mismatch" and (said := _pattern_said(error)) is not None:
        return said
    if error["type"] == "extra_forbidden":
        return "unknown key (not allowed here; check the spelling)"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "model_type":  # pydantic names the class that reads the section: say what it is
        shown = error.get("input")
        got = _as_written(shown) if isinstance(shown, str | int | float | bool) or shown is None else (
            "a list" if isinstance(shown, list) else type(shown).__name__)
        return f"expected a mapping (key: value lines), got {got}"
    if error["type"] == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"unknown value {ctx.get('tag')!r}, expected one of: {ctx.get('expected_tags')}"
    if error["type"] == "union_tag_not_found":
        return f"required key is missing (it selects the kind of entry: {_tags(error)})"
    if "input" in error and error["type"] not in ("value_error", "assertion_error"):
        shown = error["input"]
        if isinstance(shown, str | int | float | bool) or shown is None:
            return f"{msg}, got {_as_written(shown)}"
    return msg


# ``^[A-Za-z0-9_.-]{1,64}$``: the names' patterns, said in words ("1 to 64 characters of A-Z a-z 0-9 _ . -")
_CHARACTERS = re.compile(r"\^\[([^\]]+)\]\{(\d+),(\d+)\}\$")
_ONE_OF = re.compile(r"\^\(([\w|]+)\)\$")


def _pattern_said(error: Mapping[str, Any]) -> str | None:
    pattern, shown = str(error.get("ctx", {}).get("pattern", "")), error.get("input")
    got = f", got {_as_written(shown)}" if isinstance(shown, str) else ""
    if (chars := _CHARACTERS.fullmatch(pattern)) is not None:
        listed = " ".join(re.findall(r"[^-]-[^-]|.", chars.group(1)))
        return f"expected {chars.group(2)} to {chars.group(3)} characters of {listed}{got}"
    if (choices := _ONE_OF.fullmatch(pattern)) is not None:
        return f"expected one of {', '.join(choices.group(1).split('|'))}{got}"
    return None


def _as_written(value: str | float | bool | None) -> str:
    """A scalar as the YAML that gave it reads (``null``, ``true``), not as Python shows it (``None``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _tags(error: Mapping[str, Any]) -> str:
    discriminator = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
    if discriminator != "kind":
        values: Sequence[str] = ["redis", "headers"]
    elif "auth" in error.get("loc", ()):
        values = AUTH_KIND_NAMES
    else:
        values = sorted(PROBES)
    return ", ".join(repr(v) for v in values)


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    """Parse and validate config text. Raises ConfigError listing every problem; never anything else.

    ``base_dir`` (the config file's directory) resolves relative ``notes`` paths and checks they exist.
    Problem messages never show a value that came from the environment (see monitor/settings/source.py).
    """
    env = os.environ if env is None else env
    with _collector_paused():
        # Copied once parsed, away from the parse's garbage: at 10,000 checks 35 MB less RSS (compact.py).
        return compacted(lambda: _parse(text, source, env, base_dir))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a config is parsed: a big config is hundreds of thousands of
    live containers, and every collection pass walked them again (50,000 checks: 22 s → 13 s). Nothing
    parsing makes needs it; it runs again afterwards (unless it was off already)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _parse(text: str, source: str, env: Mapping[str, str], base_dir: Path | None) -> Config:
    try:
        raw, duplicates = load_yaml(text)
    except Unreadable as exc:
        raise ConfigError(source, [("", str(exc))]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [("", f"expected a mapping at the top level, got {type(raw).__name__}")])
    raw, tree = tree_problems(raw)
    expansion = Expansion()
    data = expand_env(raw, env, expansion)
    if base_dir is not None:
        data = _resolve_notes(data, base_dir)
    reported = [*expansion.problems, *tree]
    with sharing_parts():
        config, validation = _validate(data, reported)
    problems = [*duplicates, *reported, *validation, *_raw_reference_problems(data), *_raw_notes_problems(data),
                *_raw_silence_problems(data)]
    if problems or config is None:
        raise ConfigError(source, expansion.hide(problems, env) or [("", "the config is not valid")])
    return config


def _validate(data: dict[str, Any], reported: list[tuple[str, str]]) -> tuple[Config | None, list[tuple[str, str]]]:
    """The validated config, or the validation problems not already ``reported`` (at or within their path)."""
    try:
        return Config(**data), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if isinstance(error.get("ctx", {}).get("error"), _ReferenceProblem):
                continue  # reported from the raw data, with a more precise path
            path = _loc_to_path(error["loc"], data)
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                path = join_path(path, str(error.get("ctx", {}).get("discriminator", "kind")).strip("'"))
            if any(_within(path, known) for known, _ in reported):
                continue  # a consequence of a problem already reported (an unset variable, say)
            problems.append((path, _message(error)))
        return None, problems
    except Exception as exc:  # e.g. an IM_* override pydantic-settings cannot parse
        return None, [("", f"cannot validate the config: {exc}")]


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith((parent + ".", parent + "["))


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read config file: {exc.strerror}")]) from None
    try:
        text = decode(data)
    except Unreadable as exc:
        raise ConfigError(str(path), [("", str(exc))]) from None
    return parse_config(text, source=str(path), env=env, base_dir=path.parent)


def _resolve_notes(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Notes paths are relative to the config file."""
    integrations = data.get("integrations")
    if not isinstance(integrations, dict):
        return data
    resolved = {}
    for name, integ in integrations.items():
        notes = integ.get("notes") if isinstance(integ, dict) else None
        if isinstance(notes, str) and notes and not Path(notes).is_absolute():
            integ = {**integ, "notes": str(base / notes)}
        resolved[name] = integ
    return {**data, "integrations": resolved}


def _raw_notes_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    integrations = data.get("integrations")
    if not isinstance(integrations, Mapping):
        return []
    return [
        (f"{join_path('integrations', name)}.notes", f"notes file not found: {integ['notes']}")
        for name, integ in integrations.items()
        if isinstance(integ, Mapping) and isinstance(integ.get("notes"), str) and not _is_file(integ["notes"])
    ]


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a NUL byte in the name, a name too long
        return False
