"""The redactor (integration_kit/redact.py): a secret never leaves in any form the product writes it.

Hypothesis picks any secret (of the registered length), any place (URL query, user info, header, body,
exception message, log line) and any encoding the product or a library it logs through produces (URL
percent-encoding with either quoting function and either hex case, ``+`` for a space, double-encoding,
yarl's encodings, JSON with or without ``ensure_ascii``, ``repr``, HTML and Slack escaping), and the
secret's bytes base64- or hex-encoded inside a longer encoded text, behind any other bytes.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from urllib.parse import quote, quote_plus

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from leaks import BYTE_ENCODINGS, ENCODINGS, ESCAPED_THEN_ENCODED, leaks, stable_middle
from yarl import URL

from integration_kit.redact import MASK, MIN_ENCODED_LEN, MIN_SECRET_LEN, Redactor
from monitor.logs import setup_logging

secrets = st.text(min_size=MIN_SECRET_LEN, max_size=40).filter(lambda s: s.strip() == s and "\x00" not in s)
surroundings = st.text(max_size=30)


def assert_masked(secret: str, text: str) -> None:
    found = leaks(text, [secret])
    assert not found, f"secret visible: {found} in {text!r}"


@settings(max_examples=300, deadline=None)
@given(secret=secrets, encoding=st.sampled_from(sorted(ENCODINGS)), before=surroundings, after=surroundings)
@example(secret="CANARY.../+==", encoding="yarl-query", before="cursor=", after="")
@example(secret="CANARY.../+==", encoding="quote", before="", after="")
@example(secret="pa ss word", encoding="quote_plus", before="x=", after="&y=1")
def test_a_registered_secret_is_masked_in_every_encoding_at_any_position(
    secret: str, encoding: str, before: str, after: str
) -> None:
    redactor = Redactor([secret])
    assert_masked(secret, redactor.text(before + ENCODINGS[encoding](secret) + after))


@settings(max_examples=200, deadline=None)
@given(secret=secrets, name=st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"), registered=st.booleans())
def test_every_query_value_and_the_user_info_of_a_url_are_masked(secret: str, name: str, registered: bool) -> None:
    """Registered or not, with a name that looks like a credential or not: a shown URL masks them all."""
    skeleton = f"https://api.example.com/v1/x?{name}=&limit=10"
    assume(not any(encode(secret) in skeleton for encode in ENCODINGS.values()))  # ("http" is no leak)
    redactor = Redactor([secret] if registered else [])
    for url in (
        URL("https://api.example.com/v1/x").with_query({name: secret, "limit": "10"}),
        URL("https://api.example.com/v1/x").update_query({name: secret}),
        URL.build(scheme="https", host="api.example.com", user=secret, password=secret, path="/v1"),
        URL.build(scheme="https", host="api.example.com", user=secret, path="/v1"),
    ):
        shown = redactor.url(url)
        assert "api.example.com" in shown
        assert_masked(secret, shown)
        assert_masked(secret, redactor.url(str(url)))


@settings(max_examples=200, deadline=None)
@given(secret=secrets, header=st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,20}\Z"))
def test_every_header_value_but_harmless_ones_is_masked(secret: str, header: str) -> None:
    shown = Redactor().headers({header: secret, "Accept": "application/json"})
    assert shown["Accept"] == "application/json"
    if header.lower() not in ("accept", "accept-encoding", "accept-language", "cache-control", "content-type",
                              "user-agent", "connection"):
        assert shown[header] == MASK
    # A registered secret is masked even in a harmless header.
    assert_masked(secret, json.dumps(Redactor([secret]).headers({"Accept": f"text/{secret}"})))


@settings(max_examples=150, deadline=None)
@given(secret=secrets, fmt=st.sampled_from(["text", "json"]), where=st.sampled_from(["message", "arg", "exception"]))
def test_a_secret_in_a_log_line_or_exception_never_reaches_the_log(secret: str, fmt: str, where: str) -> None:
    # What the log line holds whatever the secret (field names, logger, level, traceback frames) is no leak.
    skeleton = log_once("\x07" * MIN_SECRET_LEN, fmt, where)
    assume(not any(encode(secret) in skeleton for encode in ENCODINGS.values()))
    assert_masked(secret, log_once(secret, fmt, where))


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")


def log_once(secret: str, fmt: str, where: str) -> str:
    """The log output of one record quoting ``secret`` (its timestamp cut out: it changes every time)."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = setup_logging(Redactor([secret]), fmt=fmt, level="DEBUG", stream=stream)
    log = logging.getLogger("test.redact")
    try:
        if where == "message":
            log.debug("calling %s?cursor=%s", "https://x.test/v1", quote(secret, safe=""))
        elif where == "arg":
            log.warning("vendor said %r", {"echo": secret, "encoded": quote_plus(secret)})
        else:
            try:
                raise KeyError(secret)
            except KeyError:
                log.exception("lookup failed")
    finally:
        root.removeHandler(handler)
        setup_logging_levels_back(level)
    return _TIMESTAMP.sub("", stream.getvalue())


def setup_logging_levels_back(level: int) -> None:
    """Undo what setup_logging(level="DEBUG") set, so later tests (caplog) see the usual levels."""
    logging.getLogger().setLevel(level)
    for name in ("apscheduler", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_percent_encoded_query_value_with_reserved_characters_is_masked() -> None:
    """Finding 1: ``cursor=CANARY.../+==`` left the redactor percent-encoded (``.../%2B%3D%3D``)."""
    canary = "CANARY_q7.../+=="
    redactor = Redactor([canary])
    url = URL("https://api.example.com/v1/list").update_query({"cursor": canary})
    assert "%2B%3D%3D" in str(url)  # the form the probe really sends
    for shown in (redactor.url(url), redactor.text(str(url)), redactor.text(f"GET {url} failed")):
        assert "CANARY" not in shown, shown


def test_url_masks_every_query_value_as_documented() -> None:
    """The README: every query value is a secret, whatever the parameter is called."""
    shown = Redactor().url("https://u:pw@api.example.com/v1?cursor=abc123&limit=10&flag#frag")
    assert shown == f"https://{MASK}@api.example.com/v1?cursor={MASK}&limit={MASK}&flag=#{MASK}"
    assert "abc123" not in shown and "pw" not in shown


def test_text_masks_user_info_and_credential_parameters_of_any_url_it_holds() -> None:
    text = Redactor().text('redirected to "https://admin:hunter2@evil.test/x?access_token=abc123&page=2" (302)')
    assert "hunter2" not in text and "abc123" not in text and "admin" not in text
    assert "page=2" in text  # a parameter whose name carries no credential stays readable in free text


@settings(max_examples=200, deadline=None)
@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Z", "C"),
                                            exclude_characters="&;#\"'<>\\"), min_size=1, max_size=20),
       levels=st.integers(min_value=1, max_value=3))
@example(value="abc", levels=2)  # an error body that echoes the URL, inside /api/status' JSON
@example(value="cl\u00e9/+=", levels=1)
def test_masking_a_parameter_in_json_text_keeps_the_json_valid(value: str, levels: int) -> None:
    """A credential parameter inside a JSON string is masked without eating the backslash of the escape
    after it (``api_key=[REDACTED]\\"``): /api/status is serialised, then redacted as a whole."""
    document: object = {"url": f"https://api.example.com/v1?api_key={value}", "page": 2}
    for _ in range(levels):
        document = {"excerpt": json.dumps(document)}
    shown = Redactor().text(json.dumps(document))
    inner = json.loads(shown)
    for _ in range(levels):
        inner = json.loads(inner["excerpt"])
    assert inner == {"url": f"https://api.example.com/v1?api_key={MASK}", "page": 2}


def test_unparseable_url_still_masks_its_query() -> None:
    shown = Redactor().url("http://[::1/x?cursor=abcd1234")
    assert "abcd1234" not in shown


def test_short_values_are_not_registered_but_structure_still_masks_them() -> None:
    redactor = Redactor(["abc"])
    assert redactor.text("abc") == "abc"  # too short to mask in free text without destroying it
    assert redactor.url("https://x.test/?k=abc") == f"https://x.test/?k={MASK}"
    assert redactor.headers({"X-Tenant": "abc"}) == {"X-Tenant": MASK}


@settings(max_examples=500, deadline=None)
@given(secret=secrets, escape=st.sampled_from(ESCAPED_THEN_ENCODED), encoding=st.sampled_from(sorted(BYTE_ENCODINGS)),
       before=st.binary(max_size=20), after=st.binary(max_size=20), around=st.tuples(surroundings, surroundings))
@example(secret="CNRY-hdr/+=1a", escape="raw", encoding="base64", before=b"x", after=b"", around=("", ""))
@example(secret="CNRY-hdr/+=1a", escape="raw", encoding="base64url", before=b"xy", after=b"}", around=("", ""))
@example(secret="cl\u00e9-\U0001f511-secret", escape="raw", encoding="HEX", before=b"\x00", after=b"\xff",
         around=("", ""))
@example(secret="CNRY-mixed-case", escape="raw", encoding="HeX", before=b"", after=b"", around=("", ""))
@example(secret='CNRY+/"\\key', escape="json", encoding="base64", before=b'{"k":"', after=b'"}', around=("", ""))
@example(secret="CNRY+/key=1", escape="quote_plus", encoding="base64url", before=b"key=", after=b"", around=("", ""))
def test_a_secret_echoed_base64_or_hex_encoded_inside_a_longer_text_is_masked(
    secret: str, escape: str, encoding: str, before: bytes, after: bytes, around: tuple[str, str]
) -> None:
    """A vendor echoing ``base64(api_key)`` (or a JWT-like blob holding it, or the base64 of the JSON or
    form body it was sent) in an error body: the secret in none of its forms survives."""
    data = ENCODINGS[escape](secret).encode("utf-8", "surrogatepass")
    text = BYTE_ENCODINGS[encoding](before + data + after).decode()
    middle = stable_middle(BYTE_ENCODINGS[encoding], data, len(before) % 3)
    assert middle in text
    redacted = Redactor([secret]).text(f"{around[0]}{text}{around[1]}")
    if len(middle) >= MIN_ENCODED_LEN:
        assert middle not in redacted.replace(MASK, "\x00"), redacted
    assert_masked(secret, redacted)


@settings(max_examples=300, deadline=None)
@given(secret=secrets, encoding=st.sampled_from(sorted(BYTE_ENCODINGS)), other=st.binary(max_size=60))
def test_an_encoded_text_without_the_secret_is_left_as_it_is(secret: str, encoding: str, other: bytes) -> None:
    text = f"vendor said: {BYTE_ENCODINGS[encoding](other).decode()} (500)"
    assume(not leaks(text, [secret]))
    assert Redactor([secret]).text(text) == text


def test_a_short_secret_is_not_searched_for_by_the_encoding_of_a_part_of_it() -> None:
    """Behind one byte the base64 middle of "test" is ``Rlc3`` (its bits but the first and last four):
    searched for, it would mask the base64 of "the destination". Hence a minimum length for base64 and
    hex forms."""
    text = "payload " + base64.b64encode(b"the destination").decode()
    assert Redactor(["test"]).text(text) == text
    longer = "payload " + base64.b64encode(b"a test-key-1 here").decode()
    assert MASK in Redactor(["test-key-1"]).text(longer)  # ten bytes: long enough at every alignment
