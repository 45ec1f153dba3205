"""Rate limits that a response reports in its body → quota observations: GraphQL APIs count query cost,
not requests, and say where they stand in the response itself.

* Shopify Admin GraphQL: ``extensions.cost.throttleStatus`` {``maximumAvailable``, ``currentlyAvailable``,
  ``restoreRate``} — a leaky bucket of cost points. Policy ``cost``: used = maximum − available, limit =
  maximum, reset = seconds until the bucket is full again (used / restoreRate).
* GitHub GraphQL: ``data.rateLimit`` {``limit``, ``remaining``, ``used``, ``resetAt``} when the query
  asks for it (``rateLimit { limit remaining used resetAt }``). Policy ``graphql`` (GitHub's own name for
  the bucket, as its ``x-ratelimit-resource`` header says).

As with headers, a probe keeps the raw fields (``rate_limit_body_fields``: ``(path, compact JSON)``,
bounded) in its ``CheckResult.rate_limit_body``, and the quota side parses them
(``parse_rate_limit_body``, through ``integration_kit.ratelimit_headers.observed_quota``). Never raises.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from integration_kit.results import QuotaObservation

log = logging.getLogger(__name__)

SHOPIFY_COST = "extensions.cost.throttleStatus"
GITHUB_RATE_LIMIT = "data.rateLimit"
_PATHS = (SHOPIFY_COST, GITHUB_RATE_LIMIT)
MAX_FIELD_CHARS = 512  # a value longer than this is not a rate-limit object


def rate_limit_body_fields(document: Any) -> tuple[tuple[str, str], ...]:
    """The rate-limit objects of a parsed response body, as ``(path, compact JSON)``; ``()`` when none."""
    out = []
    for path in _PATHS:
        node: Any = document
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            text = json.dumps(node, separators=(",", ":"), default=str)
            if len(text) <= MAX_FIELD_CHARS:
                out.append((path, text))
    return tuple(out)


def parse_rate_limit_body(fields: Iterable[tuple[str, str]], *, now: float) -> list[QuotaObservation]:
    """Quota observations of ``rate_limit_body_fields`` output; unknown or malformed fields are skipped."""
    out = []
    for path, text in fields:
        reader = _READERS.get(path)
        if reader is None:
            continue
        try:
            data = json.loads(text)
            found = reader(data, now) if isinstance(data, Mapping) else None
        except (ValueError, TypeError, OverflowError):
            log.debug("rate-limit body field %s not understood", path, exc_info=True)
            continue
        if found is not None:
            out.append(found)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _shopify(data: Mapping[str, Any], now: float) -> QuotaObservation | None:
    maximum, available = _number(data.get("maximumAvailable")), _number(data.get("currentlyAvailable"))
    if maximum is None or available is None or maximum <= 0:
        return None
    used = max(0.0, maximum - available)
    rate = _number(data.get("restoreRate"))
    reset = used / rate if rate and rate > 0 else None
    return QuotaObservation(policy="cost", used=used, limit=maximum, reset_seconds=reset, observed_at=now)


def _github(data: Mapping[str, Any], now: float) -> QuotaObservation | None:
    limit, remaining, used = (_number(data.get(k)) for k in ("limit", "remaining", "used"))
    if limit is None or (used is None and remaining is None):
        return None
    if used is None and remaining is not None:
        used = limit - remaining
    reset = None
    reset_at = data.get("resetAt")
    if isinstance(reset_at, str):
        try:
            when = datetime.fromisoformat(reset_at.replace("Z", "+00:00"))
            reset = max(0.0, (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() - now)
        except ValueError:
            reset = None
    return QuotaObservation(policy="graphql", used=used, limit=limit, reset_seconds=reset, observed_at=now)


_READERS: dict[str, Callable[[Mapping[str, Any], float], QuotaObservation | None]] = {
    SHOPIFY_COST: _shopify,
    GITHUB_RATE_LIMIT: _github,
}

__all__ = ["GITHUB_RATE_LIMIT", "SHOPIFY_COST", "parse_rate_limit_body", "rate_limit_body_fields"]
