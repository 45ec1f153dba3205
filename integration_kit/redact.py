"""Secret redaction: one place that knows what a secret looks like.

Used for every text that leaves the process (logs, /api/status, Slack, `probe` output). Secrets are
(a) values the config marks secret or that sit in sensitive headers, (b) URL passwords, (c) query
parameters and headers whose names say they carry credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from yarl import URL

MASK = "[REDACTED]"

_SENSITIVE_NAME = re.compile(
    r"(authorization|cookie|token|secret|passw(or)?d|api[-_]?key|apikey|signature|credential|session|"
    r"private|access[-_]?key|client[-_]?secret|sig$|^key$|^auth)",
    re.IGNORECASE,
)
# Values shorter than this are not registered as secrets: masking "1" everywhere would destroy text.
_MIN_SECRET_LEN = 4


def is_sensitive_name(name: str) -> bool:
    return bool(_SENSITIVE_NAME.search(name))


class Redactor:
    """Masks known secret values and credential-bearing fields. Cheap to call; safe on any text."""

    __slots__ = ("_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if not secret or len(secret) < _MIN_SECRET_LEN:
                continue
            self._secrets.add(secret)
            # "Bearer abc" in a header: also mask the token alone, it travels without the scheme too.
            scheme, _, token = secret.partition(" ")
            if token and scheme.lower() in {"bearer", "basic", "token", "bot"} and len(token) >= _MIN_SECRET_LEN:
                self._secrets.add(token)
        if self._secrets:
            # Longest first so a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def text(self, value: str) -> str:
        if self._pattern is None or not value:
            return value
        return self._pattern.sub(MASK, value)

    def url(self, value: str | URL) -> str:
        try:
            url = value if isinstance(value, URL) else URL(value)
        except (ValueError, TypeError):
            return self.text(str(value))
        if url.password is not None:
            url = url.with_password(MASK)
        if url.query:
            query = [(k, MASK if is_sensitive_name(k) else v) for k, v in url.query.items()]
            url = url.with_query(query)
        # yarl percent-encodes the mask's brackets in a query; show it as written everywhere else.
        return self.text(str(url).replace("%5BREDACTED%5D", MASK))

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {k: (MASK if is_sensitive_name(k) else self.text(v)) for k, v in headers.items()}
