"""Every form a secret can take in what the product writes, to search for it (tests/test_redact.py,
tests/test_secret_canary.py): URL percent-encoding with either quoting function and either hex case,
``+`` for a space, double-encoding, yarl's query and path encodings, JSON with or without
``ensure_ascii`` (and JSON inside JSON), ``repr``, HTML and Slack escaping, a metric label's tamed
form, and the secret's bytes base64-encoded (either alphabet, any byte alignment) or hex-encoded (any
case) inside a longer text, raw or after its JSON or URL escaping."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

from yarl import URL

from alerts.message import escape as slack_escape
from integration_kit.redact import MASK, MIN_ENCODED_LEN, MIN_SECRET_LEN


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def _yarl_query(secret: str) -> str:
    return URL("http://h/").with_query({"p": secret}).raw_query_string.removeprefix("p=")


def _yarl_path(secret: str) -> str:
    url = URL.build(scheme="http", host="h", path="/" + secret)
    # yarl normalises dot segments ("a/." → "a/"): that is another string, not an encoding of this one.
    return url.raw_path.removeprefix("/") if url.path == "/" + secret else secret


def stable_middle(encode: Callable[[bytes], bytes], secret: bytes, lead: int) -> str:
    """What every encoding of ``secret`` behind ``lead`` other bytes holds whatever the bytes around it:
    the characters on which two encodings with opposite surroundings (all bits 0, all bits 1) agree."""
    trail = 3 - (lead + len(secret)) % 3  # and no padding, which would agree
    zeros = encode(bytes(lead) + secret + bytes(trail)).decode()
    ones = encode(b"\xff" * lead + secret + b"\xff" * trail).decode()
    return "".join(a for a, b in zip(zeros, ones, strict=True) if a == b)


BYTE_ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "base64": base64.b64encode,
    "base64url": base64.urlsafe_b64encode,
    "hex": lambda b: b.hex().encode(),
    "HEX": lambda b: b.hex().upper().encode(),
    "HeX": lambda b: "".join(c if i % 3 else c.upper() for i, c in enumerate(b.hex())).encode(),  # mixed case
}


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "quote": lambda s: quote(s, safe=""),
    "quote-default": quote,
    "quote-lower-hex": lambda s: _lower_hex(quote(s, safe="")),
    "quote_plus": quote_plus,
    "double": lambda s: quote(quote(s, safe=""), safe=""),
    "yarl-query": _yarl_query,
    "yarl-path": _yarl_path,
    "json": lambda s: json.dumps(s)[1:-1],
    "json-utf8": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "json-in-json": lambda s: json.dumps(json.dumps(s))[1:-1],
    "repr": lambda s: repr(s)[1:-1],
    "html": lambda s: html.escape(s, quote=True),
    "slack": slack_escape,
    # As a metric label value (a vendor naming a rate-limit policy after a key it was sent): tamed, cut.
    "label": lambda s: re.sub(r"[^A-Za-z0-9_.:-]+", "_", s.strip())[:48],
}


# The escapes a secret may have been through before a vendor echoed it base64- or hex-encoded (the body
# or URL of a request it was sent).
ESCAPED_THEN_ENCODED = ("raw", "json", "json-utf8", "quote", "quote-default", "quote_plus", "yarl-query")


def _encoded_forms(secret: str) -> dict[str, str]:
    """Each stable middle, hex ones in lower case (searched for in any case: ``leaks``)."""
    out = {}
    for escape in ESCAPED_THEN_ENCODED:
        data = ENCODINGS[escape](secret).encode("utf-8", "surrogatepass")
        for lead in range(3):
            for name in ("base64", "base64url"):
                out[f"{escape}+{name}-{lead}"] = stable_middle(BYTE_ENCODINGS[name], data, lead)
        out[f"{escape}+hex"] = data.hex()
    return out


def forms(secret: str) -> dict[str, str]:
    """Encoding name → the secret as that encoding writes it (but forms shorter than the redactor's
    minimum: the label form of ``"ab;;"`` is ``"ab_"``, which no one could tell from text)."""
    written = {name: encode(secret) for name, encode in ENCODINGS.items()}
    shown = {name: form for name, form in written.items() if len(form) >= MIN_SECRET_LEN}
    # Base64 and hex forms are searched for from the redactor's minimum for them (why: its module doc).
    shown.update({name: form for name, form in _encoded_forms(secret).items() if len(form) >= MIN_ENCODED_LEN})
    return shown


def visible(text: str) -> str:
    """The text with the masks cut out, so a secret cannot appear to be formed by a mask's letters."""
    return text.replace(MASK, "\x00")


def leaks(text: str, secrets: Iterable[str]) -> list[str]:
    """Each ``secret (encoding)`` found in ``text``."""
    shown = visible(text)
    folded = shown.lower()  # (hex forms, in any case)
    return [f"{secret!r} ({name}: {form!r})" for secret in secrets for name, form in forms(secret).items()
            if form in (folded if name.endswith("+hex") else shown)]
