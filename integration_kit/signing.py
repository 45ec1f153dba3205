"""HMAC request signing as vendors define it: a message built from parts of the request, signed with a
shared key, sent in a header (Coinbase's ``CB-ACCESS-SIGN``, Bitstamp's ``X-Auth-Signature``, many B2B
APIs' ``X-Signature``).

Vendors differ in which parts they sign, in what order, how the key is given and how the digest is
written, so the message is a template of named parts and everything else is a parameter:

``{method}`` (upper case), ``{path}`` (as sent, percent-encoded), ``{query}`` (the raw query string,
without ``?``), ``{path_query}`` (path plus ``?query`` when there is one), ``{host}`` (host[:port] as in
the Host header), ``{body}`` (the body as text, empty when none), ``{body_sha256}`` / ``{body_md5}``
(hex digests of the body), ``{timestamp}`` (in ``timestamp_format``), ``{nonce}`` (random hex, fresh
per request). ``\\n`` and other characters between them are literal.

Example, Coinbase Exchange: ``template="{timestamp}{method}{path_query}{body}"``, key base64, digest
base64, ``timestamp_header="CB-ACCESS-TIMESTAMP"``.

Standard library only; the probes' ``hmac`` auth and any integration service can use it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from yarl import URL

Algorithm = Literal["sha1", "sha256", "sha384", "sha512"]
KeyEncoding = Literal["text", "base64", "hex"]
DigestEncoding = Literal["hex", "base64"]
TimestampFormat = Literal["unix", "unix_ms", "iso8601"]

PARTS = frozenset({"method", "path", "query", "path_query", "host", "body", "body_sha256", "body_md5",
                   "timestamp", "nonce"})


def template_parts(template: str) -> list[str]:
    """The parts a template names, in order; ValueError naming an unknown part or a malformed brace."""
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"malformed signing template {template!r}: {exc}") from None
    unknown = [name for name in fields if name not in PARTS]
    if unknown:
        raise ValueError(f"unknown signing part {{{unknown[0]}}}; expected one of: "
                         + ", ".join("{" + p + "}" for p in sorted(PARTS)))
    return fields


def decode_key(key: str, encoding: KeyEncoding) -> bytes:
    """The signing key's bytes; ValueError when it is not valid in ``encoding`` (never quoting it)."""
    if encoding == "text":
        return key.encode()
    try:
        return base64.b64decode(key, validate=True) if encoding == "base64" else bytes.fromhex(key)
    except (binascii.Error, ValueError):
        raise ValueError(f"the key is not valid {encoding}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSigner:
    """Signs one request: ``headers(method, url, body)`` → the signature header and, if configured, the
    timestamp and nonce headers it signed. Holds the key: never show it."""

    key: bytes
    template: str
    header: str
    algorithm: Algorithm = "sha256"
    encoding: DigestEncoding = "hex"
    prefix: str = ""  # written before the digest: "sha256=", "HMAC "…
    timestamp_header: str | None = None
    timestamp_format: TimestampFormat = "unix"
    nonce_header: str | None = None

    def __post_init__(self) -> None:
        template_parts(self.template)

    def message(self, method: str, url: URL, body: bytes | None, *, now: float, nonce: str) -> str:
        data = body or b""
        query = url.raw_query_string
        values = {
            "method": method.upper(),
            "path": url.raw_path,
            "query": query,
            "path_query": url.raw_path + (f"?{query}" if query else ""),
            "host": url.raw_authority,
            "body": data.decode("utf-8", errors="replace"),
            "body_sha256": hashlib.sha256(data).hexdigest(),
            "body_md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "timestamp": format_timestamp(now, self.timestamp_format),
            "nonce": nonce,
        }
        return self.template.format_map(values)

    def sign(self, message: str) -> str:
        digest = hmac.new(self.key, message.encode(), self.algorithm).digest()
        text = digest.hex() if self.encoding == "hex" else base64.b64encode(digest).decode("ascii")
        return self.prefix + text

    def headers(
        self, method: str, url: URL, body: bytes | None, *, clock: Callable[[], float] = time.time
    ) -> dict[str, str]:
        now, nonce = clock(), secrets.token_hex(16)
        out = {self.header: self.sign(self.message(method, url, body, now=now, nonce=nonce))}
        if self.timestamp_header:
            out[self.timestamp_header] = format_timestamp(now, self.timestamp_format)
        if self.nonce_header:
            out[self.nonce_header] = nonce
        return out


def format_timestamp(now: float, fmt: TimestampFormat) -> str:
    if fmt == "unix":
        return str(int(now))
    if fmt == "unix_ms":
        return str(int(now * 1000))
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["PARTS", "RequestSigner", "decode_key", "format_timestamp", "template_parts"]
