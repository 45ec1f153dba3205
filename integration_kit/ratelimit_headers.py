"""Rate-limit response headers → quota observations (GitHub, IETF drafts, Shopify, Salesforce, …).

One observation per policy the response announces. Policy names are stable per API so they can be
metric labels: ``default`` for a vendor's single limit, otherwise the name the vendor gives it
(IETF policy names, GitHub's ``x-ratelimit-resource``, Salesforce's ``api-usage``…) or a fixed name
(HubSpot ``daily`` / ``secondly`` / ``burst``, ``retry-after``). When two header families describe the
same policy name, the first reader below wins (the current IETF draft before older forms before vendor
headers).

Numbers are parsed as floats everywhere. A reset value above 1e12 is an epoch in milliseconds, above
1e9 an epoch in seconds, otherwise a delay in seconds (``integration_kit.header_values``);
``Retry-After`` is read by ``integration_kit.retry.parse_retry_after``. Unknown or malformed headers
are ignored (debug log); the parser never raises: it runs on every probe response.

A probe keeps only the fields this parser reads (``rate_limit_fields``, bounded) in its result, and
the monitor's quota side parses them (``observed_quota``): what a probe saw, parsed where quotas live.

The structured fields of the IETF drafts are parsed with http-sfv, imported only when such a field is
read: this module imports without it (integration services have only aiohttp and redis). Without
http-sfv those fields (``RateLimit``, ``RateLimit-Policy``) are skipped and every other form is read.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, CIMultiDictProxy

from integration_kit.header_values import first_number, seconds_until
from integration_kit.ratelimit_body import parse_rate_limit_body
from integration_kit.redact import label_value
from integration_kit.results import CheckResult, QuotaObservation
from integration_kit.retry import parse_retry_after

if TYPE_CHECKING:
    import http_sfv

log = logging.getLogger(__name__)

DEFAULT = "default"
RETRY_AFTER = "retry-after"  # the policy of a Retry-After (a delay, no used or limit)

# Every field a reader below reads, lower-cased: what a probe keeps of a response (``rate_limit_fields``).
FIELD_NAMES = frozenset(
    {
        "ratelimit", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
        *(p + s for p in ("x-ratelimit-", "x-rate-limit-")
          for s in ("limit", "remaining", "used", "reset", "reset-after", "resource")),
        "x-rate-limit",
        "x-shopify-shop-api-call-limit",
        "sforce-limit-info",
        *(f"x-hubspot-ratelimit-{s}" for s in ("daily", "daily-remaining", "secondly", "secondly-remaining", "max",
                                               "remaining", "interval-milliseconds")),
        "retry-after",
    }
)
# A result keeps at most this many field lines, and no value longer than this (a value cut short would be
# misread, so a longer one is left out; real rate-limit values are a few dozen characters).
MAX_FIELDS = 40
MAX_VALUE_CHARS = 1024

RawHeaders = Mapping[str, str] | Iterable[tuple[str, str]]
Headers = dict[str, list[str]]  # lower-cased name → every value, in order


def parse_rate_limit_headers(headers: RawHeaders, *, now: float) -> list[QuotaObservation]:
    """Every rate-limit policy announced by ``headers``; ``[]`` when none. Never raises.

    ``headers`` may be a plain mapping, a multidict with repeated fields (aiohttp's
    ``CIMultiDictProxy``: every value of a repeated field is read through ``getall``) or
    ``(name, value)`` pairs (a ``CheckResult``'s ``rate_limit_headers``).
    """
    try:
        fields = _collect(headers)
        if not fields:  # most responses carry no rate-limit field at all
            return []
        seen: dict[str, QuotaObservation] = {}
        for reader in _READERS:
            try:
                found = reader(fields, now)
            except Exception:  # a malformed header must not hide the others
                log.debug("rate-limit header reader %s failed", reader.__name__, exc_info=True)
                continue
            for obs in found:
                seen.setdefault(obs.policy, obs)
        return list(seen.values())
    except Exception:
        log.debug("rate-limit headers not understood", exc_info=True)
        return []


def rate_limit_fields(headers: RawHeaders) -> tuple[tuple[str, str], ...]:
    """The fields of ``headers`` this parser reads, as ``(lower-cased name, value)`` pairs in order,
    bounded (``MAX_FIELDS``, ``MAX_VALUE_CHARS``). Parsing them gives what parsing ``headers`` gives.
    Never raises."""
    try:
        fields = _collect(headers)
        if not fields:  # the usual answer: none of them
            return ()
        kept = [(name, value) for name, values in fields.items() for value in values]
    except Exception:
        log.debug("rate-limit headers not understood", exc_info=True)
        return ()
    return tuple((name, value) for name, value in kept if len(value) <= MAX_VALUE_CHARS)[:MAX_FIELDS]


def observed_quota(result: CheckResult) -> list[QuotaObservation]:
    """The quota policies a probe result's rate-limit headers and body fields (``integration_kit.
    ratelimit_body``: a GraphQL API's cost or rateLimit object) announce, as of the end of its run; a
    policy the headers already announced is not read again from the body."""
    now = result.started_at + result.total_duration
    found = parse_rate_limit_headers(result.rate_limit_headers, now=now)
    if result.rate_limit_body:
        named = {o.policy for o in found}
        found += [o for o in parse_rate_limit_body(result.rate_limit_body, now=now) if o.policy not in named]
    return found


def _collect(headers: RawHeaders) -> Headers:
    """The fields the readers read, by lower-cased name."""
    out: Headers = {}
    # The usual answer, at a first look: aiohttp's response headers, none of them a field. The multidict's own
    # case-insensitive look-up of the names (7 k instructions for a response's 8 headers, where lower-casing
    # each header name and testing the set took 12 k with the tests below).
    if type(headers) is CIMultiDictProxy and headers.keys().isdisjoint(FIELD_NAMES):
        return out
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(headers, Mapping):
        getall: Callable[[str], Any] | None = getattr(headers, "getall", None)
        if callable(getall):
            # The usual answer, at a first look; in C (a multidict's names are str): 9 k instructions for
            # a response's 8 headers where a generator of str(name).lower() took 15 k.
            if FIELD_NAMES.isdisjoint(map(str.lower, headers)):
                return out
            # A multidict: getall gives every value of a repeated field. A case-insensitive one (aiohttp's
            # CIMultiDictProxy) answers all spellings at once, so ask once per lower-cased name.
            fold = isinstance(headers, CIMultiDict | CIMultiDictProxy)
            for name in dict.fromkeys(str(k).lower() if fold else str(k) for k in headers):
                if (low := name.lower()) in FIELD_NAMES:
                    out.setdefault(low, []).extend(str(v) for v in getall(name))
            return out
        pairs = headers.items()
    else:
        pairs = headers
    for name, value in pairs:
        if (low := str(name).lower()) in FIELD_NAMES:
            out.setdefault(low, []).append(str(value))
    return out


# ---- number helpers -----------------------------------------------------------------------------


def _first(fields: Headers, name: str) -> float | None:
    values = fields.get(name)
    return first_number(values[0]) if values else None


def _reset_delay(value: float | None, now: float) -> float | None:
    """Seconds until a reset given as an epoch (s or ms) or already as a delay."""
    return None if value is None or value < 0 else seconds_until(value, now=now)


def _obs(
    policy: str,
    *,
    now: float,
    limit: float | None,
    remaining: float | None = None,
    used: float | None = None,
    reset: float | None = None,
    window: float | None = None,
) -> QuotaObservation:
    if used is None and limit is not None and remaining is not None:
        used = limit - remaining
    return QuotaObservation(
        policy=policy, used=used, limit=limit, reset_seconds=reset, window_seconds=window, observed_at=now
    )


def _policy_name(raw: str) -> str:
    """Policy names become label values: keep them short and tame. A vendor's policy named like the
    Retry-After observation is renamed, so that its label never meets a Retry-After's."""
    name = label_value(raw) or DEFAULT
    return f"{name}-policy" if name == RETRY_AFTER else name


# ---- readers, in priority order -------------------------------------------------------------------


@functools.cache
def _sfv() -> ModuleType | None:
    """http-sfv, or None where it is not installed (see the module docstring)."""
    try:
        import http_sfv
    except ImportError:
        log.debug("http-sfv is not installed: structured rate-limit fields are not read")
        return None
    return http_sfv


def _sf_list(fields: Headers, name: str) -> list[http_sfv.Item] | None:
    """A structured-field list; a repeated field is one list (RFC 9110 §5.3 combination)."""
    values = fields.get(name)
    sfv = _sfv()
    if not values or sfv is None:
        return None
    parsed = sfv.List()
    parsed.parse(", ".join(values).encode("latin-1", errors="replace"))
    return [item for item in parsed if isinstance(item, sfv.Item)]


def _ietf_current(fields: Headers, now: float) -> list[QuotaObservation]:
    """Draft-08…10: ``RateLimit-Policy: "burst";q=100;w=60`` and ``RateLimit: "burst";r=50;t=30``."""
    policies: dict[str, tuple[float | None, float | None]] = {}
    for item in _sf_list(fields, "ratelimit-policy") or []:
        if isinstance(item.value, str):  # a named policy (String or Token), not draft-06's bare integer
            policies[_policy_name(item.value)] = (_param(item, "q"), _param(item, "w"))
    out = []
    state = fields.get("ratelimit")
    if state and not _is_draft07_dictionary(state):
        for item in _sf_list(fields, "ratelimit") or []:
            if not isinstance(item.value, str):
                continue
            name = _policy_name(item.value)
            quota, window = policies.pop(name, (None, None))
            reset = _reset_delay(_param(item, "t"), now)
            out.append(_obs(name, now=now, limit=quota, remaining=_param(item, "r"), reset=reset, window=window))
    for name, (quota, window) in policies.items():  # announced without current state: limit only
        out.append(_obs(name, now=now, limit=quota, window=window))
    return out


def _param(item: http_sfv.Item, key: str) -> float | None:
    value = item.params.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _draft07_dictionary(values: list[str]) -> dict[str, float] | None:
    sfv = _sfv()
    if sfv is None:
        return None
    parsed = sfv.Dictionary()
    try:
        parsed.parse(", ".join(values).encode("latin-1", errors="replace"))
    except ValueError:
        return None
    out = {}
    for key in ("limit", "remaining", "reset"):
        member = parsed.get(key)
        if isinstance(member, sfv.Item) and isinstance(member.value, int | float) and not isinstance(
            member.value, bool
        ):
            out[key] = float(member.value)
    return out if "limit" in out or "remaining" in out else None


def _is_draft07_dictionary(values: list[str]) -> bool:
    return _draft07_dictionary(values) is not None


def _ietf_older(fields: Headers, now: float) -> list[QuotaObservation]:
    """Draft-07 ``RateLimit: limit=10, remaining=1, reset=7`` and draft-06 ``RateLimit-Limit/-Remaining/-Reset``."""
    state = fields.get("ratelimit")
    if state:
        d = _draft07_dictionary(state)
        if d is not None:
            return [
                _obs(DEFAULT, now=now, limit=d.get("limit"), remaining=d.get("remaining"),
                     reset=_reset_delay(d.get("reset"), now), window=_draft06_window(fields, d.get("limit")))
            ]
    limit, remaining = _first(fields, "ratelimit-limit"), _first(fields, "ratelimit-remaining")
    if limit is None and remaining is None:
        return []
    return [
        _obs(DEFAULT, now=now, limit=limit, remaining=remaining,
             reset=_reset_delay(_first(fields, "ratelimit-reset"), now), window=_draft06_window(fields, limit))
    ]


def _draft06_window(fields: Headers, limit: float | None) -> float | None:
    """``RateLimit-Policy: 10;w=1, 50;w=60``: the window of the item whose quota is the limit."""
    try:
        items = _sf_list(fields, "ratelimit-policy") or []
    except ValueError:
        return None
    windows = [(item.value, _param(item, "w")) for item in items if isinstance(item.value, int | float)]
    for quota, window in windows:
        if limit is not None and float(quota) == limit:
            return window
    return windows[0][1] if windows else None


def _x_ratelimit(fields: Headers, now: float) -> list[QuotaObservation]:
    """GitHub and Discord (``x-ratelimit-*``), X/Twitter (``x-rate-limit-*``)."""
    out = []
    for prefix in ("x-ratelimit-", "x-rate-limit-"):
        limit, remaining = _first(fields, prefix + "limit"), _first(fields, prefix + "remaining")
        used = _first(fields, prefix + "used")
        if limit is None and used is None:  # a lone x-rate-limit-remaining is Zendesk's, read below
            continue
        reset = _reset_delay(_first(fields, prefix + "reset-after"), now)  # Discord: a delay, more precise
        if reset is None:
            reset = _reset_delay(_first(fields, prefix + "reset"), now)
        resource = fields.get(prefix + "resource")  # GitHub names its buckets: core, search, graphql…
        policy = _policy_name(resource[0]) if resource else DEFAULT
        out.append(_obs(policy, now=now, limit=limit, remaining=remaining, used=used, reset=reset))
    return out


def _zendesk(fields: Headers, now: float) -> list[QuotaObservation]:
    """Zendesk ``X-Rate-Limit`` / ``X-Rate-Limit-Remaining``: requests per minute."""
    limit, remaining = _first(fields, "x-rate-limit"), _first(fields, "x-rate-limit-remaining")
    if limit is None:
        return []
    return [_obs(DEFAULT, now=now, limit=limit, remaining=remaining, window=60.0)]


_SHOPIFY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


def _shopify(fields: Headers, now: float) -> list[QuotaObservation]:
    """``X-Shopify-Shop-Api-Call-Limit: 32/40`` (used/bucket size of a leaky bucket; no reset given)."""
    values = fields.get("x-shopify-shop-api-call-limit")
    match = _SHOPIFY.match(values[0]) if values else None
    if not match:
        return []
    return [_obs(DEFAULT, now=now, used=float(match.group(1)), limit=float(match.group(2)))]


_SFORCE = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")


def _salesforce(fields: Headers, now: float) -> list[QuotaObservation]:
    """``Sforce-Limit-Info: api-usage=18/5000; api-bursts=1/750`` (no reset given)."""
    out = []
    for value in fields.get("sforce-limit-info", []):
        for name, used, limit in _SFORCE.findall(value):
            out.append(_obs(_policy_name(name.lower()), now=now, used=float(used), limit=float(limit)))
    return out


_HUBSPOT = (  # (limit header suffix, policy, window seconds or None = from -interval-milliseconds)
    ("daily", "daily", 86400.0),
    ("secondly", "secondly", 1.0),
    ("max", "burst", None),
)


def _hubspot(fields: Headers, now: float) -> list[QuotaObservation]:
    """``X-HubSpot-RateLimit-Daily[-Remaining]``, ``-Secondly[-Remaining]``, ``-Max``/``-Remaining``."""
    out = []
    for suffix, policy, window in _HUBSPOT:
        limit = _first(fields, f"x-hubspot-ratelimit-{suffix}")
        if limit is None:
            continue
        remaining_name = f"x-hubspot-ratelimit-{'' if suffix == 'max' else suffix + '-'}remaining"
        if window is None:
            interval_ms = _first(fields, "x-hubspot-ratelimit-interval-milliseconds")
            window = interval_ms / 1000.0 if interval_ms is not None else None
        out.append(_obs(policy, now=now, limit=limit, remaining=_first(fields, remaining_name), window=window))
    return out


def _retry_after(fields: Headers, now: float) -> list[QuotaObservation]:
    """``Retry-After``, read by the kit's one reader of it (``integration_kit.retry.parse_retry_after``)."""
    values = fields.get("retry-after")
    delay = parse_retry_after(values[0], now=now) if values else None
    return [] if delay is None else [_obs(RETRY_AFTER, now=now, limit=None, reset=delay)]


_READERS: tuple[Callable[[Headers, float], list[QuotaObservation]], ...] = (
    _ietf_current,
    _ietf_older,
    _x_ratelimit,
    _zendesk,
    _shopify,
    _salesforce,
    _hubspot,
    _retry_after,
)
