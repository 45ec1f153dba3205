"""Rate-limit response headers from each vendor → quota observations; garbage never raises."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict

import integration_kit.ratelimit_headers
from integration_kit.ratelimit_headers import MAX_FIELDS, MAX_VALUE_CHARS, parse_rate_limit_headers, rate_limit_fields

NOW = 1_795_000_000.0  # a fixed "now" in late 2026

# (case, headers as the vendor sends them, expected {policy: (used, limit, reset_seconds, window_seconds)})
CASES = [
    (
        "github",
        {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4987", "x-ratelimit-used": "13",
         "x-ratelimit-reset": str(int(NOW) + 1800), "x-ratelimit-resource": "core"},
        {"core": (13, 5000, 1800, None)},
    ),
    (
        "github search, over the limit",
        {"X-RateLimit-Limit": "30", "X-RateLimit-Remaining": "0", "X-RateLimit-Used": "31",
         "X-RateLimit-Reset": str(int(NOW) + 42), "X-RateLimit-Resource": "search", "Retry-After": "42"},
        {"search": (31, 30, 42, None), "retry-after": (None, None, 42, None)},
    ),
    (
        "x/twitter",
        {"x-rate-limit-limit": "900", "x-rate-limit-remaining": "847", "x-rate-limit-reset": str(int(NOW) + 600)},
        {"default": (53, 900, 600, None)},
    ),
    (
        "discord",
        {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "1", "X-RateLimit-Reset": f"{NOW + 1.25:.3f}",
         "X-RateLimit-Reset-After": "1.25", "X-RateLimit-Bucket": "abcd1234abcd1234"},
        {"default": (4, 5, 1.25, None)},
    ),
    (
        "discord 429 (global)",
        {"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global", "Retry-After": "65"},
        {"retry-after": (None, None, 65, None)},
    ),
    (
        "ietf draft-10, two policies",
        {"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400',
         "RateLimit": '"burst";r=50;t=30, "daily";r=900;t=3600'},
        {"burst": (50, 100, 30, 60), "daily": (100, 1000, 3600, 86400)},
    ),
    (
        "ietf draft-08 tokens, policy without state",
        {"RateLimit-Policy": "default;q=100;w=10, hourly;q=1000;w=3600", "RateLimit": "default;r=40;t=3"},
        {"default": (60, 100, 3, 10), "hourly": (None, 1000, None, 3600)},
    ),
    (
        "ietf draft-07 dictionary",
        {"RateLimit": "limit=10, remaining=1, reset=7", "RateLimit-Policy": "10;w=1, 50;w=60"},
        {"default": (9, 10, 7, 1)},
    ),
    (
        "ietf draft-06 separate fields",
        {"RateLimit-Limit": "100", "RateLimit-Remaining": "25", "RateLimit-Reset": "50",
         "RateLimit-Policy": "100;w=60"},
        {"default": (75, 100, 50, 60)},
    ),
    (
        "shopify rest",
        {"X-Shopify-Shop-Api-Call-Limit": "32/40"},
        {"default": (32, 40, None, None)},
    ),
    (
        "shopify 429",
        {"X-Shopify-Shop-Api-Call-Limit": "40/40", "Retry-After": "2.0"},
        {"default": (40, 40, None, None), "retry-after": (None, None, 2.0, None)},
    ),
    (
        "salesforce",
        {"Sforce-Limit-Info": "api-usage=18/5000"},
        {"api-usage": (18, 5000, None, None)},
    ),
    (
        "salesforce with bursts",
        {"Sforce-Limit-Info": "api-usage=25/15000; api-bursts=1/750"},
        {"api-usage": (25, 15000, None, None), "api-bursts": (1, 750, None, None)},
    ),
    (
        "zendesk",
        {"X-Rate-Limit": "700", "X-Rate-Limit-Remaining": "699"},
        {"default": (1, 700, None, 60)},
    ),
    (
        "zendesk with ratelimit-* (the ietf reading wins)",
        {"X-Rate-Limit": "700", "X-Rate-Limit-Remaining": "699", "ratelimit-limit": "700",
         "ratelimit-remaining": "699", "ratelimit-reset": "41"},
        {"default": (1, 700, 41, None)},
    ),
    (
        "hubspot",
        {"X-HubSpot-RateLimit-Daily": "250000", "X-HubSpot-RateLimit-Daily-Remaining": "249990",
         "X-HubSpot-RateLimit-Secondly": "10", "X-HubSpot-RateLimit-Secondly-Remaining": "9",
         "X-HubSpot-RateLimit-Max": "110", "X-HubSpot-RateLimit-Remaining": "108",
         "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"},
        {"daily": (10, 250000, None, 86400), "secondly": (1, 10, None, 1), "burst": (2, 110, None, 10)},
    ),
    ("stripe 429", {"Stripe-Should-Retry": "true", "Request-Id": "req_123"}, {}),
    ("slack 429", {"Retry-After": "30"}, {"retry-after": (None, None, 30, None)}),
    ("retry-after http-date", {"Retry-After": "Wed, 18 Nov 2026 11:07:00 GMT"},
     {"retry-after": (None, None, 20, None)}),
    ("retry-after epoch seconds", {"Retry-After": str(int(NOW) + 90)}, {"retry-after": (None, None, 90, None)}),
    ("retry-after epoch ms", {"Retry-After": str(int(NOW * 1000) + 1500)}, {"retry-after": (None, None, 1.5, None)}),
    ("reset as epoch ms", {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59",
                           "x-ratelimit-reset": str(int(NOW * 1000) + 5000)}, {"default": (1, 60, 5, None)}),
    ("reset in the past", {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "0",
                           "x-ratelimit-reset": str(int(NOW) - 3)}, {"default": (60, 60, 0, None)}),
    ("garbage", {"x-ratelimit-limit": "lots", "RateLimit": '"burst;r=', "X-Shopify-Shop-Api-Call-Limit": "a/b",
                 "Retry-After": "soon"}, {}),
    ("unrelated", {"Content-Type": "application/json", "ETag": '"abc"'}, {}),
]


def table(observations):
    return {o.policy: (o.used, o.limit, o.reset_seconds, o.window_seconds) for o in observations}


@pytest.mark.parametrize(("headers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_vendor_headers(headers, expected):
    got = table(parse_rate_limit_headers(headers, now=NOW))
    assert got.keys() == expected.keys()
    for policy, values in expected.items():
        for g, e in zip(got[policy], values, strict=True):
            assert g == (None if e is None else pytest.approx(e, abs=0.01)), policy
    assert all(o.observed_at == NOW for o in parse_rate_limit_headers(headers, now=NOW))


def test_http_date_case_is_twenty_seconds_ahead():
    # Guards the table: the HTTP-date above is NOW + 20 s.
    assert format_datetime(datetime.fromtimestamp(NOW + 20, UTC), usegmt=True) == "Wed, 18 Nov 2026 11:07:00 GMT"


def test_repeated_fields_in_a_multidict_are_one_list():
    # aiohttp hands the probe a CIMultiDictProxy; a field may repeat and its values form one list.
    raw = CIMultiDict()
    raw.add("RateLimit-Policy", '"burst";q=100;w=60')
    raw.add("ratelimit-policy", '"daily";q=1000;w=86400')
    raw.add("RateLimit", '"burst";r=99;t=59')
    raw.add("RATELIMIT", '"daily";r=10;t=600')
    parsed = parse_rate_limit_headers(CIMultiDictProxy(raw), now=NOW)
    assert table(parsed) == {"burst": (1, 100, 59, 60), "daily": (990, 1000, 600, 86400)}
    assert len(parsed) == 2


def test_repeated_fields_in_a_case_sensitive_multidict():
    raw = MultiDict([("x-ratelimit-limit", "60"), ("x-ratelimit-remaining", "7"), ("Retry-After", "3")])
    assert table(parse_rate_limit_headers(raw, now=NOW)) == {
        "default": (53, 60, None, None), "retry-after": (None, None, 3, None)
    }


def test_a_proxy_doubling_a_header():
    got = table(parse_rate_limit_headers({"X-RateLimit-Limit": "60, 60", "X-RateLimit-Remaining": "10, 10"}, now=NOW))
    assert got == {"default": (50, 60, None, None)}


def test_usage_over_the_limit_is_reported_as_is():
    [obs] = parse_rate_limit_headers({"X-Shopify-Shop-Api-Call-Limit": "45/40"}, now=NOW)
    assert obs.ratio == pytest.approx(1.125)


def test_policy_names_are_tamed_for_labels():
    [obs] = parse_rate_limit_headers({"RateLimit-Policy": '"per user/ip!";q=5;w=1'}, now=NOW)
    assert obs.policy == "per_user_ip_"


def test_a_policy_the_vendor_names_retry_after_is_not_taken_for_the_retry_after_header():
    # The quota label of a Retry-After is "<name>/retry-after": a vendor's policy of that name, labelled the
    # same, would be overwritten by it (and dropped with it when a response carries no Retry-After).
    parsed = parse_rate_limit_headers(
        {"RateLimit-Policy": '"retry-after";q=10;w=60', "RateLimit": '"retry-after";r=4;t=30', "Retry-After": "5"},
        now=NOW,
    )
    assert table(parsed) == {"retry-after-policy": (6, 10, 30, 60), "retry-after": (None, None, 5, None)}


header_names = st.sampled_from(
    ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset", "x-ratelimit-reset-after",
     "x-ratelimit-resource", "x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset", "ratelimit",
     "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-shopify-shop-api-call-limit",
     "sforce-limit-info", "x-rate-limit", "x-rate-limit-remaining", "x-hubspot-ratelimit-daily",
     "x-hubspot-ratelimit-max", "x-hubspot-ratelimit-interval-milliseconds", "retry-after"]
) | st.text(max_size=20)
header_values = st.text(max_size=80) | st.from_regex(
    r'("?[a-z]{1,6}"?;q=-?\d{1,20};w=\d{0,3}(, )?){1,3}|\d{1,30}(\.\d+)?(/\d{1,5})?|[a-z-]+=\d+/\d+', fullmatch=True
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=8), st.floats(allow_nan=True))
def test_arbitrary_headers_never_raise(pairs, now):
    raw = CIMultiDict(pairs)
    for headers in (CIMultiDictProxy(raw), dict(pairs)):
        for obs in parse_rate_limit_headers(headers, now=now):
            for value in (obs.used, obs.limit, obs.reset_seconds, obs.window_seconds):
                assert value is None or isinstance(value, float)
            if obs.reset_seconds is not None and math.isfinite(now):
                assert obs.reset_seconds >= 0


# ---- what a probe keeps: the fields the parser reads, bounded ------------------------------------------


@pytest.mark.parametrize(("headers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_kept_fields_parse_like_the_whole_response(headers, expected):
    kept = rate_limit_fields({**headers, "Set-Cookie": "session=abc", "Content-Type": "application/json"})
    assert all(name not in ("set-cookie", "content-type") for name, _ in kept)
    assert parse_rate_limit_headers(kept, now=NOW) == parse_rate_limit_headers(headers, now=NOW)


def test_kept_fields_are_bounded():
    raw = CIMultiDict([("Retry-After", str(i)) for i in range(100)])
    raw.add("X-RateLimit-Resource", "x" * (MAX_VALUE_CHARS + 1))  # too long to keep whole: left out
    kept = rate_limit_fields(CIMultiDictProxy(raw))
    assert len(kept) == MAX_FIELDS and kept[0] == ("retry-after", "0")
    assert all(len(value) <= MAX_VALUE_CHARS for _, value in kept)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=8))
def test_kept_fields_of_any_headers_parse_the_same(pairs):
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    assert parse_rate_limit_headers(rate_limit_fields(headers), now=NOW) == parse_rate_limit_headers(headers, now=NOW)


def any_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(header_names.flatmap(any_case), header_values), max_size=8))
def test_aiohttps_headers_keep_the_fields_their_pairs_keep(pairs):
    # A response's headers (aiohttp's CIMultiDictProxy: its names looked up at once, case-insensitively) keep what
    # the same fields given as pairs (read one by one) keep, whatever the spelling.
    kept = rate_limit_fields(CIMultiDictProxy(CIMultiDict(pairs)))
    assert sorted(kept) == sorted(rate_limit_fields(pairs))


def test_without_http_sfv_the_structured_fields_are_skipped(monkeypatch):
    # Integration services may not have http-sfv: the other forms are still read.
    monkeypatch.setattr(integration_kit.ratelimit_headers, "_sfv", lambda: None)
    headers = {"RateLimit-Policy": '"burst";q=100;w=60', "RateLimit": '"burst";r=50;t=30',
               "X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "7", "Retry-After": "3"}
    assert table(parse_rate_limit_headers(headers, now=NOW)) == {
        "default": (53, 60, None, None), "retry-after": (None, None, 3, None)
    }
