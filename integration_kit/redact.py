"""Secret redaction: one place that knows what a secret looks like, in every form the product writes it.

Used for every text that leaves the process (logs, /api/status, Slack, `probe` output). Secrets are
(a) values the config marks secret or that sit in credential-bearing headers and query parameters,
(b) URL user info, (c) query parameters and headers whose names say they carry credentials.

A registered secret is masked in every encoding the product (or a library it logs through) can give
it: raw, percent-encoded (any hex case, ``+`` or ``%20`` for a space, even double-encoded), JSON string
escapes (``\\u00e9``, ``\\"``), Python ``repr`` escapes (``\\x01``, ``\\'``) and HTML / Slack entities
(``&amp;``), in any mix.

It is also masked where a vendor echoes its bytes encoded (``base64(api_key)`` in an error body, a
JWT-like blob that holds it): in base64, standard and URL-safe alphabets, padded or not, at any of the
three byte alignments inside a longer base64 text, as secret scanners search it — by the *stable
middle*, the characters whose six bits all come from the secret, whatever bytes surround it — and in
hex, in any case (mixed too); both also of the secret's JSON and URL escapes (``escaped_forms``: the
body or URL of a request echoed back encoded). Each escape that changes the secret adds its base64 and
hex forms to the one pattern every text is searched with: 14 secrets with ``/ + =`` in them cost 1.33 x
the instructions on a 2 KB text (bench/redact_text.py), URL-safe ones none. Those forms must be at
least ``MIN_ENCODED_LEN`` characters long: the middle leaves
out up to four bits at either end of the secret, so a short secret's middle is also found in the
encoding of other text that merely shares most of its bits ("test" behind one byte gives ``Rlc3``, which
the base64 of "the destination" holds too); eight characters are 48 bits of the secret, which no other
text matches by chance (every secret of seven bytes or more has them at every alignment).

Structure is masked without registration: ``Redactor.url`` masks the user info and *every* query value
of a URL it is given (a request the product sent or was redirected to);
``Redactor.text`` masks the user info of any URL in the text and query values whose parameter name
says they carry credentials (``?token=…``); ``Redactor.headers`` masks every header value but the
harmless ones (``Accept``, ``Content-Type``…).
"""

from __future__ import annotations

import base64
import json
import re
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from functools import lru_cache
from urllib.parse import quote, quote_plus, unquote

from yarl import URL

MASK = "[REDACTED]"

_SENSITIVE_NAME = re.compile(
    r"(authorization|cookie|token|secret|passw(or)?d|api[-_]?key|apikey|signature|credential|session|"
    r"private|access[-_]?key|client[-_]?secret|sig$|^key$|^auth)",
    re.IGNORECASE,
)
# Values shorter than this are not registered as secrets: masking "1" everywhere would destroy text.
# (Short values are still masked where structure says they are secret: header values, query values.)
MIN_SECRET_LEN = 4
# Base64 and hex forms shorter than this are not searched for (why: the module doc).
MIN_ENCODED_LEN = 8
ROTATED_GENERATIONS = 2  # values of a rotating secret that stay masked: the current one and the one before
# Request headers that never carry credentials; every other header value is treated as a secret:
# vendors put API keys in headers of every name (X-Api-Key, Stripe-Account, X-Shopify-Access-Token…),
# so the list of harmless ones is the short, closed one.
HARMLESS_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "cache-control", "content-type", "user-agent", "connection"}
)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")
_TOKEN_SCHEMES = frozenset({"bearer", "basic", "token", "bot"})

# ``scheme://userinfo@`` anywhere in a text (user info ends at the first character it cannot hold).
_USERINFO = re.compile(r"://[^\s/?#@\"'<>\\]+@")
# ``?name=value`` / ``&name=value``: the value up to the next separator. Inside an escaped string (JSON,
# repr: a vendor's error body that echoes the URL, in /api/status' serialised document) an escaped quote
# (any run of backslashes before a quote) ends it too: masking a backslash of it with the value would
# break the document. Other escapes (of an "é", a newline) are part of the value.
_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s\"'<>#?\\]{1,100})=((?:[^&;\s\"'<>#\\]|\\++(?![\\\"']))*)")


def _expand(secrets: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET_LEN:
            continue
        out.add(secret)
        # Made into a label value (a vendor that names a rate-limit policy after the key it was sent).
        if len(label := label_value(secret)) >= MIN_SECRET_LEN:
            out.add(label)
        # "Bearer abc" in a header: also mask the token alone, it travels without the scheme too.
        scheme, _, token = secret.partition(" ")
        if token and scheme.lower() in _TOKEN_SCHEMES and len(token) >= MIN_SECRET_LEN:
            out.add(token)
    return out


def label_value(raw: str, *, limit: int = 48) -> str:
    """A text a vendor sent, tamed to be a metric label value (rate-limit policy names): short, and
    only ``A-Z a-z 0-9 _ . : -`` (runs of anything else become ``_``). Secrets are masked in this form
    too, so that a label can be checked with ``Redactor.text``."""
    return _LABEL_UNSAFE.sub("_", raw.strip())[:limit]


def is_sensitive_name(name: str) -> bool:
    return bool(_SENSITIVE_NAME.search(name))


@lru_cache(maxsize=4096)
def _char_forms(char: str) -> str:
    """Regex source matching one character in each form an encoder the product uses may give it."""
    if char in _UNRESERVED:
        return re.escape(char)  # no encoder we use (URL, JSON, repr, HTML) ever rewrites these
    forms = {char}
    if char == " ":
        forms.add("+")  # application/x-www-form-urlencoded, urllib.parse.quote_plus
    if char == "/":
        forms.add("\\/")  # JSON may escape a solidus
    forms.update(_escapes(char))
    # An escape's backslash may itself be escaped, once per level of nesting (JSON inside JSON).
    source = [re.escape(f).replace("\\\\", "\\\\+") for f in sorted(forms, key=len, reverse=True)]
    # Percent-encoding of the UTF-8 bytes, any hex case, optionally double-encoded (%252B).
    source.append("".join(f"%(?:25)?{_hex(b)}" for b in char.encode("utf-8", "surrogatepass")))
    return "(?:" + "|".join(source) + ")"


def _escapes(char: str) -> set[str]:
    """JSON, Python repr and HTML escapes of one character."""
    code = ord(char)
    out = set()
    json_short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
    repr_short = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    html = {"&": ("&amp;",), "<": ("&lt;",), ">": ("&gt;",), '"': ("&quot;",), "'": ("&#x27;", "&#39;")}
    for table in (json_short, repr_short):
        if char in table:
            out.add(table[char])
    out.update(html.get(char, ()))
    if code < 0x20 or code >= 0x7F:
        if code > 0xFFFF:  # JSON writes it as a surrogate pair, repr as \U0001f600
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            out.update({f"\\u{high:04x}\\u{low:04x}", f"\\u{high:04X}\\u{low:04X}", f"\\U{code:08x}"})
        else:
            out.update({f"\\u{code:04x}", f"\\u{code:04X}"})
        if code <= 0xFF:
            out.update({f"\\x{code:02x}", f"\\x{code:02X}"})
    return out


def _hex(byte: int) -> str:
    return "".join(f"[{d.lower()}{d}]" if d.isalpha() else d for d in f"{byte:02X}")


def secret_pattern(secret: str) -> str:
    """Regex source matching ``secret`` in every form the product may write it (see the module doc)."""
    return "".join(_char_forms(c) for c in secret)


def base64_middles(secret: str) -> set[str]:
    """The stable middles of the secret's UTF-8 bytes base64-encoded behind 0, 1 or 2 other bytes (mod
    3), in both alphabets: what any base64 text that holds the secret contains, whatever surrounds it."""
    data = secret.encode("utf-8", "surrogatepass")
    out = set()
    for lead in range(3):
        encoded = base64.b64encode(bytes(lead) + data).decode("ascii")
        # Characters whose 6-bit cell lies wholly within the secret's bits [8 * lead, 8 * (lead + n)).
        middle = encoded[-(-8 * lead // 6) : 8 * (lead + len(data)) // 6]
        if len(middle) >= MIN_ENCODED_LEN:
            out.update({middle, middle.translate(_URLSAFE)})
    return out


_URLSAFE = str.maketrans("+/", "-_")


def escaped_forms(secret: str) -> set[str]:
    """The secret as a JSON string and as a URL component write it, where that differs from the secret:
    what a vendor base64-encodes when it echoes a request body or URL it was sent (``"a+b/c"`` in JSON
    stays ``a+b/c``, in a form body it is ``a%2Bb%2Fc``: another base64 text)."""
    out = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
           quote(secret, safe="", errors="surrogatepass"),  # a query value or form field (urlencode)
           quote_plus(secret, safe="", errors="surrogatepass"),
           quote(secret, errors="surrogatepass")}  # a path (quote keeps "/")
    with suppress(ValueError, UnicodeError):  # (yarl refuses some texts; quote above covers them)
        out.add(URL("http://h/").with_query({"p": secret}).raw_query_string.removeprefix("p="))
    out.discard(secret)
    return out


def _hex_pattern(hex_form: str) -> str:
    """Regex source matching lower-case hex ``hex_form`` in any case, each letter a class of its two
    cases (a branch that starts with a literal or a class is skipped at the first character that does
    not match; a (?i:…) group made redaction ten times slower)."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in hex_form)


def _encoded_alternatives(secret: str) -> dict[str, int]:
    """Regex source → the shortest text it matches, for the secret's base64 and hex forms, and the base64
    forms of its JSON and URL escapes."""
    out: dict[str, int] = {}
    for form in (secret, *escaped_forms(secret)):
        out.update({secret_pattern(m): len(m) for m in base64_middles(form)})  # "+" and "/" may be escaped too
        hex_form = form.encode("utf-8", "surrogatepass").hex()
        if len(hex_form) >= MIN_ENCODED_LEN:
            out[_hex_pattern(hex_form)] = len(hex_form)
    return out


class Redactor:
    """Masks known secret values and credential-bearing fields. Cheap to call; safe on any text."""

    __slots__ = ("_pattern", "_rotating", "_secrets", "generation")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._rotating: dict[str, deque[frozenset[str]]] = {}
        self._pattern: re.Pattern[str] | None = None
        # Changes whenever the secrets masked do: a text redacted under another generation may need it again.
        self.generation = 0
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        before = len(self._secrets)
        self._secrets |= _expand(secrets)
        if len(self._secrets) != before:
            self._compile()

    def rotate(self, slot: str, secrets: Iterable[str], *, keep: int = ROTATED_GENERATIONS) -> None:
        """Secrets that change at run time (a fetched access token, a rotated refresh token): the
        ``slot`` keeps its last ``keep`` generations, so a long-running process masks the current value
        and the one before it without the list growing with every rotation."""
        generation = frozenset(_expand(secrets))
        slots = self._rotating.setdefault(slot, deque(maxlen=keep))
        if generation and generation not in slots:
            slots.append(generation)
            self._compile()

    def _compile(self) -> None:
        self.generation += 1
        every = self._secrets.union(*(g for slots in self._rotating.values() for g in slots))
        if every:
            alternatives = {secret_pattern(s): len(s) for s in every}
            for secret in every:
                alternatives.update(_encoded_alternatives(secret))
            # Longest first so a secret containing another (or its encoding) is masked whole.
            ordered = sorted(alternatives, key=lambda source: (-alternatives[source], source))
            self._pattern = re.compile("|".join(ordered))

    def text(self, value: str) -> str:
        if not value:
            return value
        if self._pattern is not None:
            value = self._pattern.sub(MASK, value)
        if "://" in value:
            value = _USERINFO.sub(f"://{MASK}@", value)
        if "=" in value:
            value = _QUERY_PARAM.sub(_mask_sensitive_param, value)
        return value

    def url(self, value: str | URL) -> str:
        """A URL the product requested or was sent to: user info and every query value masked."""
        try:
            url = value if isinstance(value, URL) else URL(value)
            if url.user is not None or url.password is not None:
                url = url.with_user(MASK).with_password(None)
            if url.query:
                url = url.with_query([(k, MASK if v else v) for k, v in url.query.items()])
            if url.fragment:
                url = url.with_fragment(MASK)
            shown = str(url)
        except (ValueError, TypeError):
            return self.text(_mask_all_query_values(str(value)))
        # yarl percent-encodes the mask's brackets; show it as written everywhere else.
        return self.text(shown.replace("%5BREDACTED%5D", MASK))

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Request headers to show: every value masked but those of the harmless headers."""
        return {k: self.text(v) if k.lower() in HARMLESS_HEADERS else MASK for k, v in headers.items()}


def request_secrets(url: str | URL, headers: Mapping[str, str]) -> frozenset[str]:
    """The secrets a request itself carries, whether or not they were listed: the values of its
    headers but the harmless ones and Host, its URL's password and its sensitive query values. A
    vendor's error body may echo them ("invalid token …"), so a failure's excerpt masks them too."""
    out = {v for k, v in headers.items() if k.lower() not in HARMLESS_HEADERS and k.lower() != "host"}
    with suppress(ValueError, TypeError):
        parsed = url if isinstance(url, URL) else URL(url)
        if parsed.password:
            out.add(parsed.password)
        out.update(v for k, v in parsed.query.items() if v and is_sensitive_name(k))
    return frozenset(v for v in out if len(v) >= MIN_SECRET_LEN)


@lru_cache(maxsize=64)  # a failing vendor fails every call with the same credentials: compiled once
def redactor_of(secrets: frozenset[str]) -> Redactor:
    return Redactor(secrets)


def _mask_sensitive_param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    if not value or value == MASK or not is_sensitive_name(unquote(name)):
        return match.group(0)
    return f"{sep}{name}={MASK}"


def _mask_all_query_values(text: str) -> str:
    head, sep, query = text.partition("?")
    if not sep:
        return text
    return head + sep + re.sub(r"=([^&;#]*)", lambda m: f"={MASK}" if m.group(1) else "=", query)
